"""TreeReader: proofs and roots read from a real store equal the reference computed from leaves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dbgov.ledger.merkle import (
    CompactRange,
    consistency_proof,
    consistency_proof_from_leaves,
    inclusion_proof,
    inclusion_proof_from_leaves,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from dbgov.ledger.tree import TreeReader, compact_nodes
from ledger.kit import LedgerKit, synthetic_events

BIG = 70_000  # crosses 256 and 65,536: tiles at levels 8 and 16


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LedgerKit, list[bytes]]]:
    kit = LedgerKit(tmp_path_factory.mktemp("tree"))
    events = list(synthetic_events(BIG))
    for start in range(0, BIG, 20_000):
        kit.append(events[start : start + 20_000])
    yield kit, kit.leaves()
    kit.close()


def _all_nodes(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    nodes: dict[tuple[int, int], bytes] = {}
    CompactRange().extend(leaves, lambda level, i, h: nodes.__setitem__((level, i), h))
    return nodes


def test_small_sizes_match_reference(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path)
    kit.append(synthetic_events(600))
    leaves = kit.leaves()
    reader = TreeReader(kit.seq.store)
    for size in [*range(1, 40), 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 600]:
        assert reader.root(size) == root_from_leaves(leaves[:size])
        for index in sorted({0, 1, size // 2, size - 2, size - 1} - {-1}):
            if 0 <= index < size:
                want = inclusion_proof_from_leaves(index, leaves[:size])
                assert reader.inclusion_proof(index, size) == want, (index, size)
        for old in sorted({0, 1, size // 3, size - 1, size}):
            if 0 <= old <= size:
                assert reader.consistency_proof(old, size) == consistency_proof_from_leaves(
                    old, leaves[:size]
                )
    kit.close()


@pytest.mark.parametrize(
    "size", [256, 257, 511, 4096, 65_535, 65_536, 65_537, 65_536 + 256, 69_999, BIG]
)
def test_big_sizes_match_reference(big: tuple[LedgerKit, list[bytes]], size: int) -> None:
    kit, leaves = big
    reference = _all_nodes(leaves[:size])
    reader = TreeReader(kit.seq.store)
    root = root_from_leaves(leaves[:size])
    assert reader.root(size) == root
    for index in {i for i in (0, 255, 256, size // 2, 65_535 % size, size - 1) if i < size}:
        proof = reader.inclusion_proof(index, size)
        assert proof == inclusion_proof(index, size, lambda lv, i: reference[(lv, i)])
        verify_inclusion(leaves[index], index, size, proof, root)
    for old in {o for o in (1, 256, 300, 65_536 % size or 1, size - 1) if o <= size}:
        proof = reader.consistency_proof(old, size)
        assert proof == consistency_proof(old, size, lambda lv, i: reference[(lv, i)])
        verify_consistency(old, size, root_from_leaves(leaves[:old]), root, proof)


def test_reference_itself_on_a_big_size(big: tuple[LedgerKit, list[bytes]]) -> None:
    kit, leaves = big
    reader = TreeReader(kit.seq.store)
    for index in (3, 66_000):
        assert reader.inclusion_proof(index, BIG) == inclusion_proof_from_leaves(index, leaves)


def test_a_proof_reads_a_few_hundred_hashes(big: tuple[LedgerKit, list[bytes]]) -> None:
    kit, _ = big
    reader = TreeReader(kit.seq.store)
    for index in (0, 12_345, 65_535, 69_998):
        for size in (65_536, BIG):
            reader.hashes_read = 0
            reader.inclusion_proof(index % size, size)
            # at most one path sibling and one ephemeral-cover node per level, each
            # at most 2**7 hashes below its tile level: 2 * 255 per 8 levels
            assert reader.hashes_read <= 2 * 255 * 2 + 4, (index, size, reader.hashes_read)
            print(f"inclusion proof of #{index % size} in {size}: {reader.hashes_read} hashes")


def test_missing_tiles_fall_back_to_leaves(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path)
    kit.append(synthetic_events(3000))
    leaves = kit.leaves()
    kit.seq.store.conn.execute("DELETE FROM tiles WHERE idx % 2 = 0")
    reader = TreeReader(kit.seq.store)
    assert reader.root(3000) == root_from_leaves(leaves)
    assert reader.inclusion_proof(600, 2999) == inclusion_proof_from_leaves(600, leaves[:2999])
    kit.close()


def test_nodes_beyond_the_store_are_refused(tmp_path: Path) -> None:
    kit = LedgerKit(tmp_path)
    kit.append(synthetic_events(10))
    reader = TreeReader(kit.seq.store)
    with pytest.raises(LookupError):
        reader.get_node(4, 0)
    with pytest.raises(LookupError):
        reader.inclusion_proof(3, 11)
    kit.close()


def test_compact_nodes() -> None:
    assert compact_nodes(0) == []
    assert compact_nodes(13) == [(3, 0), (2, 2), (0, 12)]
    assert compact_nodes(256) == [(8, 0)]
