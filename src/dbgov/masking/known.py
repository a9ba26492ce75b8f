"""Values of masked columns, found again inside free text.

No regex finds a person's name, but the database knows every customer's: a
`pii_text` mask with `known: [public.customers.full_name]` loads that column's
distinct values (proxy/catalogs.py, with the catalog snapshot) and replaces each
occurrence in a prompt or a model's answer, whatever its case, by the column's
label (`[FULL_NAME]`) or its pseudonym. The matching is Aho-Corasick
(pyahocorasick): one pass over the text for all values at once, in C.

What counts as an occurrence: the value's characters, case-insensitively, with no
letter or digit glued to either end ("Ann Lee" is found in "Ann Lee's ticket", not
in "Ann Leeds"). Values shorter than `MIN_CHARS` are not searched: a two-letter
name would mask every word it spells.

Known false negatives: a value written with other spacing or punctuation than the
column holds ("Garcia, Maria", a line break between the words), a part of it alone
(a first name), a misspelling, and values written after the last load: the
snapshot reloads after a write through dbgov to a source table, and every
`REFRESH_S` seconds otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import ahocorasick

MIN_CHARS = 4
REFRESH_S = 60.0  # snapshot age after which a target's known values are reloaded
# Distinct values per column; more fails closed (texts redacted whole). A matcher
# costs about 0.7 KiB per value (66 MiB for 100,000 names, per worker) and is built
# on the worker's loop when values change: about 8 us per value.
MAX_VALUES = 250_000


def fold(text: str) -> str:
    """Lower case, one character for one: offsets in the folded text are offsets in
    `text` ("İ".lower() is two characters; such a character is kept as it is)."""
    folded = text.lower()
    if len(folded) == len(text):
        return folded
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


def label_of(column: str) -> str:
    """The replacement tag of values from `schema.table.column`: its column name."""
    return column.rsplit(".", 1)[-1].upper()


class KnownValues:
    """Finds the values of some columns inside texts, each with its column's label."""

    __slots__ = ("_automaton", "size")

    def __init__(self, sources: Mapping[str, Iterable[str]]) -> None:
        """`sources` maps a label to the values it replaces."""
        automaton = ahocorasick.Automaton()
        size = 0
        for label, values in sources.items():
            for value in values:
                key = fold(value.strip())
                if len(key) >= MIN_CHARS and automaton.add_word(key, (len(key), label, value)):
                    size += 1
        if size:
            automaton.make_automaton()
        self._automaton = automaton
        self.size = size

    def find(self, text: str) -> list[tuple[int, int, str, str]]:
        """(start, end, label, value as stored) of every occurrence, overlaps included."""
        if not self.size:
            return []
        out = []
        n = len(text)
        for last, (length, label, value) in self._automaton.iter(fold(text)):
            start, end = last + 1 - length, last + 1
            if (start > 0 and text[start - 1].isalnum()) or (end < n and text[end].isalnum()):
                continue
            out.append((start, end, label, value))
        return out
