"""After a checkpoint root mismatch: where did the log change, and was it only reordered?

A signed root commits to the exact sequence of leaves, so a mismatch proves that
something changed but not what. Telling "these events were reordered" from "this
content was altered" needs the authentic order, which the root alone cannot give
back. This module searches for it, in bounded time, with the help of the
sequencer's level-8 tiles: each is the root of one aligned 256-leaf chunk as
integrated (RFC 6962 §2.1), so a chunk whose recomputed root differs from its
tile is where the change is. A tile is only a *candidate* authentic value (an
attacker could rewrite tiles too); every answer found here MUST be confirmed by
the caller, by recomputing every signed root with the proposed order. Only a
confirmed answer may be reported as "reordered", because then the original
order has been exhibited and proven by the signatures.

What is searched (anything else is reported as "modified" over the smallest
range known to contain the change):

- one transposition of two leaves, inside one changed chunk, across two changed
  chunks, or between a changed chunk (or none) and the log's last, still
  incomplete chunk, which has no tile and is checked against the first failing
  root instead;
- a permutation of whole chunks (every changed chunk's recomputed root is
  another changed chunk's tile).

Cost is bounded: at most 32,640 pairs inside a chunk, or 65,536 one-leaf
substitutions across two chunks (or a chunk and the tail), each checked by
rehashing one or two 8-level paths: about a second in CPython at worst.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from dbgov.ledger.merkle import node_hash
from dbgov.ledger.tree import fold_nodes

__all__ = ["CHUNK", "Candidate", "Region", "find_candidates"]

CHUNK: Final = 256
"""Leaves per level-8 tile (2**8)."""
MAX_PERMUTED_CHUNKS: Final = 64

GetLeaves = Callable[[int, int], list[bytes]]
"""``get_leaves(begin, end)``: leaf hashes at positions ``[begin, end)``, in order."""


@dataclass(frozen=True, slots=True)
class Region:
    """The log's last chunk, not yet complete, so without a tile.

    ``upper`` holds the compact range hashes of ``[0, begin)`` as the tiles give
    them (so with every changed chunk at its tile value), and ``checks`` the
    ``(size, root)`` of signed checkpoints that end inside the region: the only
    authentic values its leaves can be checked against.
    """

    begin: int
    end: int
    upper: tuple[bytes, ...]
    checks: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A proposed authentic order: ``overrides[position] = authentic leaf hash``."""

    overrides: dict[int, bytes]
    kind: str  # "swap" or "chunks"

    @property
    def first(self) -> int:
        return min(self.overrides)


class _Perfect:
    """A perfect subtree's levels, to rehash only the paths a change touches."""

    __slots__ = ("levels",)

    def __init__(self, leaves: Sequence[bytes]) -> None:
        levels = [list(leaves)]
        while len(levels[-1]) > 1:
            prev = levels[-1]
            levels.append([node_hash(prev[i], prev[i + 1]) for i in range(0, len(prev), 2)])
        self.levels = levels

    def root_with(self, changes: dict[int, bytes]) -> bytes:
        """The root if leaf ``i`` were ``changes[i]`` (positions relative to the subtree)."""
        if not changes:
            return self.levels[-1][0]
        cur = changes
        for level in self.levels[:-1]:
            nxt: dict[int, bytes] = {}
            for pos in cur:
                parent = pos >> 1
                if parent in nxt:
                    continue
                left = cur.get(parent << 1)
                right = cur.get((parent << 1) | 1)
                nxt[parent] = node_hash(
                    level[parent << 1] if left is None else left,
                    level[(parent << 1) | 1] if right is None else right,
                )
            cur = nxt
        return cur[0]


class _Tail:
    """The incomplete last chunk, checked against roots of checkpoints that end in it."""

    def __init__(self, region: Region, leaves: list[bytes]) -> None:
        self.region = region
        self.leaves = leaves
        self.checks: list[tuple[int, bytes, list[tuple[int, _Perfect]]]] = []
        for size, root in region.checks:
            parts, pos = [], region.begin
            for level in range(7, -1, -1):
                if (size - region.begin) >> level & 1:
                    rel = pos - region.begin
                    parts.append((pos, _Perfect(leaves[rel : rel + (1 << level)])))
                    pos += 1 << level
            self.checks.append((size, root, parts))

    def holds(self, changes: dict[int, bytes]) -> bool:
        """Whether every checkpoint ending in the region matches with ``changes`` applied."""
        for _size, root, parts in self.checks:
            hashes = list(self.region.upper)
            for start, tree in parts:
                width = 1 << (len(tree.levels) - 1)
                local = {p - start: h for p, h in changes.items() if start <= p < start + width}
                hashes.append(tree.root_with(local))
            if fold_nodes(hashes) != root:
                return False
        return True


def find_candidates(
    get_leaves: GetLeaves,
    changed: dict[int, bytes],
    tail: Region | None,
) -> Iterator[Candidate]:
    """Orders that would make every changed chunk match its tile (and the tail its roots).

    ``changed`` maps each chunk index whose recomputed root differs from its
    tile to that tile. Candidates are yielded as found, for the caller to
    confirm against every signed root and stop at the first that holds.
    """
    chunks = sorted(changed)
    if len(chunks) > 2:
        perm = _chunk_permutation(get_leaves, changed)
        if perm is not None:
            yield perm
        return
    trees = {c: _Perfect(get_leaves(c * CHUNK, (c + 1) * CHUNK)) for c in chunks}
    tail_obj = None
    if tail is not None and tail.end > tail.begin:
        tail_obj = _Tail(tail, get_leaves(tail.begin, tail.end))
    if len(chunks) == 2:
        a, b = chunks
        yield from _swaps_across(trees[a], a, changed[a], trees[b], b, changed[b])
        perm = _chunk_permutation(get_leaves, changed)
        if perm is not None:
            yield perm
    elif len(chunks) == 1:
        (a,) = chunks
        yield from _swaps_within(trees[a], a, changed[a])
        if tail_obj is not None:
            yield from _swaps_with_tail(trees[a], a, changed[a], tail_obj)
    elif tail_obj is not None:
        yield from _swaps_in_tail(tail_obj)


def _swap(i: int, j: int, hi: bytes, hj: bytes) -> Candidate:
    return Candidate({i: hj, j: hi}, "swap")


def _swaps_within(tree: _Perfect, chunk: int, tile: bytes) -> Iterator[Candidate]:
    leaves = tree.levels[0]
    base = chunk * CHUNK
    for i in range(CHUNK):
        hi = leaves[i]
        for j in range(i + 1, CHUNK):
            hj = leaves[j]
            if hi != hj and tree.root_with({i: hj, j: hi}) == tile:
                yield _swap(base + i, base + j, hi, hj)


def _swaps_across(
    ta: _Perfect, a: int, tile_a: bytes, tb: _Perfect, b: int, tile_b: bytes
) -> Iterator[Candidate]:
    la, lb = ta.levels[0], tb.levels[0]
    where_b: dict[bytes, list[int]] = {}
    for j, h in enumerate(lb):
        where_b.setdefault(h, []).append(j)
    for i in range(CHUNK):
        for value, positions in where_b.items():
            if ta.root_with({i: value}) != tile_a:
                continue
            for j in positions:
                if tb.root_with({j: la[i]}) == tile_b:
                    yield _swap(a * CHUNK + i, b * CHUNK + j, la[i], value)


def _swaps_with_tail(tree: _Perfect, chunk: int, tile: bytes, tail: _Tail) -> Iterator[Candidate]:
    la = tree.levels[0]
    for i in range(CHUNK):
        for k, value in enumerate(tail.leaves):
            j = tail.region.begin + k
            if value == la[i] or tree.root_with({i: value}) != tile:
                continue
            if tail.holds({j: la[i]}):
                yield _swap(chunk * CHUNK + i, j, la[i], value)


def _swaps_in_tail(tail: _Tail) -> Iterator[Candidate]:
    leaves, begin = tail.leaves, tail.region.begin
    last_check = max((size for size, _ in tail.region.checks), default=begin)
    for i in range(len(leaves)):
        if begin + i >= last_check:
            return  # a swap of two positions after every check changes no signed root
        for j in range(i + 1, len(leaves)):
            hi, hj = leaves[i], leaves[j]
            if hi != hj and tail.holds({begin + i: hj, begin + j: hi}):
                yield _swap(begin + i, begin + j, hi, hj)


def _chunk_permutation(get_leaves: GetLeaves, changed: dict[int, bytes]) -> Candidate | None:
    """Whole chunks moved: each changed chunk's content is another changed chunk's tile."""
    if len(changed) > MAX_PERMUTED_CHUNKS:
        return None
    contents = {c: get_leaves(c * CHUNK, (c + 1) * CHUNK) for c in changed}
    by_root: dict[bytes, list[int]] = {}
    for c, leaves in contents.items():
        by_root.setdefault(_Perfect(leaves).levels[-1][0], []).append(c)
    overrides: dict[int, bytes] = {}
    for c, tile in sorted(changed.items()):
        sources = by_root.get(tile)
        if not sources:
            return None
        src = sources.pop()
        for k, h in enumerate(contents[src]):
            if contents[c][k] != h:
                overrides[c * CHUNK + k] = h
    return Candidate(overrides, "chunks") if overrides else None
