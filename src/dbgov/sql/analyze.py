"""Parse a query string and describe each statement for policy: `analyze()`.

Per-call cost on the development machine (2 vCPU, Python 3.11, pglast 8.8) for
`SELECT abalance FROM pgbench_accounts WHERE aid = 12345;` (idle / busy machine):
    analyze_cached, level-1 hit (same text):        ~0.15 / ~0.3 us
    analyze_cached, level-2 hit (literals differ):  ~13 / ~22 us (pglast's scan() dominates)
    miss (analyze(): parse + facts + fingerprint):  ~120 / ~210 us (parse_sql() is most)

`analyze_cached()` has two levels: the exact text, then `cache.literal_key()` (the
text up to literal values, an LRU). The second level only ever holds analyses whose
`literal_insensitive` is True, i.e. whose facts were computed without reading a
literal value, so any text with the same key has the same facts. A text whose key
is the fast one (`cache.fast_literal_key`) and that the second level answers is not
kept in the first: generated SQL with inline values (pgbench -S) sends a new text
each time, and keeping each one cost an insertion and an eviction per statement
(a quarter of the analysis path's time in a proxy worker); the fast key is ~1 us.
The first level keeps texts seen for the first time, texts without literals, and
texts that need the scanner (~13 us) for their key. A text that
differs from a cached one only in a literal the *server* rejects (`float(54)`,
a bad bit string) may reuse its analysis; the server then refuses it, which is
harmless. Texts longer than `MAX_CACHED_TEXT` are analyzed every time. Shared
analyses share `Statement.node`: its literal values and source positions are
those of the first text seen, so use the tree for structure only.

What the caller MUST resolve itself, because it depends on session state:
- EXECUTE (`execute_name`, also under EXPLAIN and CREATE TABLE AS): the statement is
  marked fully analyzed, but its facts are those of the PREPARE the session
  remembers (`prepare_name`); decide on that one too.
- FETCH/MOVE (`cursor_name`): the rows come from the session's DECLARE.
- `set_param` of search_path (and RESET ALL / DISCARD ALL / the
  "set_config_search_path" flag) changes how later unqualified names resolve.
Rules, triggers and function bodies run unseen: their *creation* is visible (kinds,
"dynamic_sql"), their later effects are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pglast import parser
from pglast.parser import ParseError

from dbgov.sql.cache import LRU, fast_literal_key, scanned_literal_key
from dbgov.sql.facts import statement_facts
from dbgov.sql.model import Analysis, Statement

CACHE_SIZE = 10_000
MAX_CACHED_TEXT = 16 * 1024  # bounds level-1 memory: 10,000 x 16 KiB at worst
# Longer texts are not analyzed (config max_statement_chars; set_max_analyzed). Parsing
# runs on the proxy's event loop and its cost grows with the parse tree: a 1.5 MB
# chain of 100,000 ANDs took ~10 s, freezing every session of the worker, and past
# worker_stall_s got the worker killed. Bulk data belongs in COPY, whose rows are
# not SQL text.
MAX_ANALYZED_CHARS = 1024 * 1024


def analyze(text: str) -> Analysis:
    """One `Statement` per statement of `text`; a parse error gives `error` and none.

    The analysis MUST describe exactly what the server will run, so text the server
    would read differently (a NUL byte ends a C string there) is an error.
    """
    if "\x00" in text:
        return Analysis((), "", False, error="query text contains a NUL byte")
    try:
        raws = parser.parse_sql(text)
        fingerprint = parser.fingerprint(text) if raws else ""
    except ParseError as exc:
        return Analysis((), "", False, error=str(exc))
    statements: list[Statement] = []
    sensitive = False
    for raw in raws:
        if raw.stmt is None:
            continue
        try:
            stmt, reads_literals = statement_facts(raw.stmt)
        except RecursionError:
            return Analysis((), fingerprint, False, error="statement nests too deeply to analyze")
        except Exception as exc:  # Malformed, or a bug: refuse rather than guess
            reason = f"cannot analyze statement: {type(exc).__name__}: {exc}"
            return Analysis((), fingerprint, False, error=reason)
        statements.append(stmt)
        sensitive = sensitive or reads_literals
    return Analysis(tuple(statements), fingerprint, literal_insensitive=not sensitive)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    level1_hits: int
    level2_hits: int
    misses: int
    level1_size: int
    level2_size: int


class _Cache:
    """Both levels and their counters, in one compiled object (module globals are
    dictionary entries even when compiled)."""

    def __init__(self) -> None:
        self.exact: dict[str, Analysis] = {}  # level 1; emptied when full
        self.by_key: LRU[str, Analysis] = LRU(CACHE_SIZE)  # level 2
        self.exact_hits = 0
        self.misses = 0
        self.max_analyzed = MAX_ANALYZED_CHARS

    def remember(self, text: str, analysis: Analysis) -> None:
        exact = self.exact
        if len(exact) >= CACHE_SIZE:
            exact.clear()  # cheaper than keeping an order; a lost entry costs one key or analysis
        exact[text] = analysis


_cache: Final = _Cache()


def analyze_cached(text: str) -> Analysis:
    """`analyze()` through the two cache levels; same result, much cheaper on repeats."""
    c = _cache
    hit = c.exact.get(text)
    if hit is not None:
        c.exact_hits += 1
        return hit
    if len(text) > MAX_CACHED_TEXT:
        if len(text) > c.max_analyzed:
            return Analysis((), "", False, error=too_long(len(text), c.max_analyzed))
        return analyze(text)
    key = fast_literal_key(text)
    if key is not None:
        shared = c.by_key.get(key)
        if shared is not None:
            if len(key) == len(text) + 1 and key.endswith(text):
                c.remember(text, shared)  # no literal in it: likely sent again as is
            return shared
    else:
        key = scanned_literal_key(text)
        if key is not None:
            shared = c.by_key.get(key)
            if shared is not None:
                c.remember(text, shared)
                return shared
    c.misses += 1
    analysis = analyze(text)
    if key is not None and analysis.literal_insensitive and analysis.error is None:
        c.by_key.put(key, analysis)
    c.remember(text, analysis)
    return analysis


TOO_LONG = "the statement is longer than dbgov analyzes"


def too_long(chars: int, limit: int) -> str:
    return f"{TOO_LONG} ({chars:,} characters; max_statement_chars is {limit:,})"


def set_max_analyzed(chars: int) -> None:
    """The longest statement text analyze_cached() analyzes; longer ones get an
    Analysis with an error, which policy refuses."""
    _cache.max_analyzed = chars


def cache_info() -> CacheInfo:
    c = _cache
    return CacheInfo(c.exact_hits, c.by_key.hits, c.misses, len(c.exact), len(c.by_key))


def clear_cache() -> None:
    c = _cache
    c.exact.clear()
    c.by_key.clear()
    c.exact_hits = c.misses = 0


def split_statements(text: str) -> list[str]:
    """The statements of `text` as written, for error messages that name one.

    Uses the parser when the text parses. Otherwise it cuts at semicolons outside
    parentheses, as the scanner sees them (so not inside strings or comments); a
    text that does not even scan is one statement. Only for messages: a
    `BEGIN ATOMIC` body with a syntax error may be cut inside.
    """
    try:
        return list(parser.split(text))
    except ParseError:
        pass
    try:
        tokens = parser.scan(text)
    except ParseError:
        return [text.strip()]
    parts: list[str] = []
    start = depth = 0
    for token in tokens:
        if token.name == "ASCII_40":  # (
            depth += 1
        elif token.name == "ASCII_41":  # )
            depth -= 1
        elif token.name == "ASCII_59" and depth <= 0:  # ;
            parts.append(text[start : token.start])
            start = token.end + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if _has_tokens(p)]


def _has_tokens(text: str) -> bool:
    try:
        return any(t.name not in ("SQL_COMMENT", "C_COMMENT") for t in parser.scan(text))
    except ParseError:
        return bool(text.strip())
