"""Parse a query string and describe each statement for policy: `analyze()`.

Per-call cost on the development machine (2 vCPU, Python 3.11, pglast 8.8) for
`SELECT abalance FROM pgbench_accounts WHERE aid = 12345;` (idle / busy machine):
    analyze_cached, level-1 hit (same text):        ~0.15 / ~0.3 us
    analyze_cached, level-2 hit (literals differ):  ~13 / ~22 us (pglast's scan() dominates)
    miss (analyze(): parse + facts + fingerprint):  ~120 / ~210 us (parse_sql() is most)

`analyze_cached()` has two LRU levels: the exact text, then `cache.literal_key()`
(the text up to literal values). The second level only ever holds analyses whose
`literal_insensitive` is True, i.e. whose facts were computed without reading a
literal value, so any text with the same key has the same facts. A text that
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
from functools import lru_cache

from pglast import parser
from pglast.parser import ParseError

from dbgov.sql.cache import LRU, literal_key
from dbgov.sql.facts import statement_facts
from dbgov.sql.model import Analysis, Statement

CACHE_SIZE = 10_000
MAX_CACHED_TEXT = 16 * 1024  # bounds level-1 memory: 10,000 x 16 KiB at worst


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


_by_key: LRU[str, Analysis] = LRU(CACHE_SIZE)
_misses = 0


@lru_cache(maxsize=CACHE_SIZE)
def _by_text(text: str) -> Analysis:
    """Level 1 (functools.lru_cache, keyed by the exact text); level 2 inside."""
    global _misses
    key = literal_key(text)
    if key is not None:
        shared = _by_key.get(key)
        if shared is not None:
            return shared
    _misses += 1
    analysis = analyze(text)
    if key is not None and analysis.literal_insensitive and analysis.error is None:
        _by_key.put(key, analysis)
    return analysis


def analyze_cached(text: str) -> Analysis:
    """`analyze()` through the two cache levels; same result, much cheaper on repeats."""
    if len(text) > MAX_CACHED_TEXT:
        return analyze(text)
    return _by_text(text)


def cache_info() -> CacheInfo:
    level1 = _by_text.cache_info()
    return CacheInfo(level1.hits, _by_key.hits, _misses, level1.currsize, len(_by_key))


def clear_cache() -> None:
    global _misses
    _by_text.cache_clear()
    _by_key.clear()
    _misses = 0


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
