"""Cache keys and a bounded LRU for analyses.

`literal_key()` is the second-level key: the query's tokens from PostgreSQL's own
scanner, with literal constants replaced by a placeholder naming their token class
and comments and whitespace dropped. Identifiers, keywords, operators and
parameters keep their exact text, so `SELECT x.a FROM (SELECT email AS a, id AS b
...) x` and the same query with the aliases swapped get different keys. (pglast's
fingerprint gives those two the same value, which is why it is never a cache key.)
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from pglast import parser

# Token classes of literal constants (pglast.parser.scan names).
_LITERALS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})

K = TypeVar("K")
V = TypeVar("V")


# The fast key handles the common shape of machine-generated SQL without the
# scanner (~1 us instead of ~13 us). It applies only when the text has none of the
# constructs where a quote or digit might not be a literal: dollar quotes and
# parameters ($), backslashes, quoted identifiers ("), comments, and prefixed
# strings (E'', B'', X'', N'', U&''). Then every '...' is a standard string (the
# proxy refuses standard_conforming_strings=off) and every run of ASCII digits not
# glued to an identifier character starts a numeric literal, so two texts with the
# same fast key differ only in literal values. Identifier characters are
# PostgreSQL's: ASCII letters, digits, _ and $, and every non-ASCII character (its
# scanner takes any byte >= 0x80 as a letter), so "SELECT ٣" and "SELECT €1" keep
# their names: for Python's \d and \w those would be a number and a literal.
_FAST_REFUSE = ("$", "\\", '"', "&", "\x00", "--", "/*")
_FAST_STRING = re.compile(r"'(?:[^']|'')*'")
_FAST_NUMBER = re.compile(r"(?<![0-9A-Za-z_\x80-\U0010FFFF])[0-9]+")


def fast_literal_key(text: str) -> str | None:
    """The literal-normalized key without the scanner, or None when not applicable."""
    for marker in _FAST_REFUSE:
        if marker in text:
            return None
    if "'" in text:
        for m in _FAST_STRING.finditer(text):
            before = text[m.start() - 1] if m.start() else " "
            if before.isalnum() or before == "_":
                return None  # E'..', B'..', X'..', N'..': not a plain string
        text = _FAST_STRING.sub("'?'", text)
        if "'" in text.replace("'?'", ""):
            return None  # an unterminated string: let the scanner (and parser) decide
    if text.isascii():
        return "\x02" + _zero_numbers(text)
    return "\x02" + _FAST_NUMBER.sub("0", text)


def _zero_numbers(text: str) -> str:
    """`_FAST_NUMBER.sub("0", text)` for ASCII text, as a loop over its bytes (compiled,
    it costs a third of the regular expression)."""
    data = text.encode()
    n = len(data)
    parts: list[str] = []
    last = 0
    i = 0
    glued = False  # the previous byte continues an identifier or a number
    while i < n:
        c = data[i]
        if 48 <= c <= 57:  # 0-9
            if not glued:
                j = i + 1
                while j < n and 48 <= data[j] <= 57:
                    j += 1
                parts.append(text[last:i])
                parts.append("0")
                last = i = j
                continue
        elif not (c == 95 or 65 <= c <= 90 or 97 <= c <= 122):  # _ A-Z a-z
            glued = False
            i += 1
            continue
        glued = True
        i += 1
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


def literal_key(text: str) -> str | None:
    """Tokens with literals replaced; None when the text does not scan (or has NUL)."""
    fast = fast_literal_key(text)
    if fast is not None:
        return fast
    return scanned_literal_key(text)


def scanned_literal_key(text: str) -> str | None:
    """`literal_key()` from PostgreSQL's scanner, for texts the fast key refuses."""
    if "\x00" in text:
        return None
    try:
        tokens = parser.scan(text)
    except parser.ParseError:
        return None
    # NUL cannot occur in the text, so it separates tokens unambiguously, and
    # "\x01" starts no token, so a placeholder never equals real token text.
    parts: list[str] = []
    previous = ""
    for t in tokens:
        if t.name in _COMMENTS:
            continue
        # The string after UESCAPE decides what U&"..." identifiers spell: it is
        # part of a name, not a value (U&"!0063ust" UESCAPE '!' is "cust").
        if t.name in _LITERALS and previous != "UESCAPE":
            parts.append("\x01" + t.name)
        else:
            parts.append(text[t.start : t.end + 1])
        previous = t.name
    return "\x00".join(parts)


class LRU(Generic[K, V]):
    """A small thread-safe LRU map with hit/miss counters."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)
