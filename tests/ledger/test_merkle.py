"""RFC 6962 Merkle tree: published vectors, an independent reference, and tampering.

Vectors are copied from github.com/transparency-dev/merkle: ``testonly/constants.go``
(leaf inputs, node and root hashes of the 8-leaf RFC 6962 test tree, compact
trees), ``proof/verify_test.go`` (inclusion and consistency proofs, corruption
probes), ``proof/proof_test.go`` (which nodes a proof is built from) and
``rfc6962/rfc6962_test.go`` (hasher answers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbgov.ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    consistency_proof_from_leaves,
    inclusion_proof,
    inclusion_proof_from_leaves,
    leaf_hash,
    node_hash,
    root_from_leaves,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)


def h(hex_digest: str) -> bytes:
    raw = bytes.fromhex(hex_digest)
    assert len(raw) == 32
    return raw


# --- transparency-dev/merkle testonly/constants.go ----------------------------

LEAF_INPUTS = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
LEAF_HASHES = [leaf_hash(d) for d in LEAF_INPUTS]

NODE_HASHES = [  # [level][index]
    [
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        h("0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"),
        h("07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7"),
        h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        h("4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"),
        h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        h("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ],
    [
        h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ],
    [
        h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    [
        h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
    ],
]

ROOTS = [  # indexed by tree size
    h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]

N = NODE_HASHES
COMPACT_TREES = [  # CompactTrees(): the compact range hashes for each size
    [],
    [N[0][0]],
    [N[1][0]],
    [N[1][0], N[0][2]],
    [N[2][0]],
    [N[2][0], N[0][4]],
    [N[2][0], N[1][2]],
    [N[2][0], N[1][2], N[0][6]],
    [N[3][0]],
]

# --- transparency-dev/merkle proof/verify_test.go -----------------------------
# The Go vectors number leaves from 1; here they are converted to 0-based indexes.

INCLUSION_VECTORS = [  # (index, size, proof)
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

CONSISTENCY_VECTORS = [  # (size1, size2, proof)
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def vector_get_node(level: int, index: int) -> bytes:
    """get_node over the 8-leaf test tree, from the published node hashes only."""
    return NODE_HASHES[level][index]


# --- hashing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("got", "want"),
    [  # rfc6962/rfc6962_test.go
        (EMPTY_ROOT, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (leaf_hash(b""), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        (leaf_hash(b"L123456"), "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"),
        (
            node_hash(b"N123", b"N456"),
            "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb",
        ),
    ],
)
def test_hasher_known_answers(got: bytes, want: str) -> None:
    assert got.hex() == want


def test_domain_separation() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert a != b
    assert node_hash(a, b) != leaf_hash(a + b)  # second preimage resistance
    assert node_hash(a, b) != node_hash(b, a)


@pytest.mark.parametrize("size", range(9))
def test_roots_of_the_reference_tree(size: int) -> None:
    assert root_from_leaves(LEAF_HASHES[:size]) == ROOTS[size]


@pytest.mark.parametrize("level", range(4))
def test_subtree_hashes_of_the_reference_tree(level: int) -> None:
    for index, want in enumerate(NODE_HASHES[level]):
        assert subtree_hash(level, index, LEAF_HASHES) == want


def test_subtree_hash_needs_all_its_leaves() -> None:
    with pytest.raises(ValueError, match=r"covers leaves \[4, 8\)"):
        subtree_hash(2, 1, LEAF_HASHES[:7])


def test_root_from_leaves_rejects_wrong_hash_sizes() -> None:
    with pytest.raises(ValueError, match=r"leaf hash \[1\] has 31 bytes"):
        root_from_leaves([LEAF_HASHES[0], LEAF_HASHES[1][:31]])


# --- compact range ------------------------------------------------------------


@pytest.mark.parametrize("size", range(9))
def test_compact_range_matches_published_compact_trees(size: int) -> None:
    cr = CompactRange()
    cr.extend(LEAF_HASHES[:size])
    assert cr.size == size
    assert list(cr.hashes) == COMPACT_TREES[size]
    assert cr.root() == ROOTS[size]


def test_compact_range_visitor_reports_every_perfect_node() -> None:
    seen: dict[tuple[int, int], bytes] = {}

    def visit(level: int, index: int, digest: bytes) -> None:
        assert (level, index) not in seen
        seen[(level, index)] = digest

    CompactRange().extend(LEAF_HASHES, visit)
    assert seen == {
        (level, index): digest
        for level, row in enumerate(NODE_HASHES)
        for index, digest in enumerate(row)
    }


def test_compact_range_serialization_round_trip() -> None:
    for size in range(9):
        cr = CompactRange()
        cr.extend(LEAF_HASHES[:size])
        data = cr.to_bytes()
        assert len(data) == 8 + 32 * size.bit_count()
        again = CompactRange.from_bytes(data)
        assert again == cr
        assert again.root() == ROOTS[size]
        # Resuming from storage continues the same tree.
        again.extend(LEAF_HASHES[size:])
        assert again.root() == ROOTS[8]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 7, "at least 8"),
        ((3).to_bytes(8, "big") + b"\x00" * 32, "needs 64 hash bytes, got 32"),
        ((0).to_bytes(8, "big") + b"\x00", "needs 0 hash bytes, got 1"),
    ],
)
def test_compact_range_from_bytes_rejects_bad_lengths(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompactRange.from_bytes(data)


def test_compact_range_validates_construction() -> None:
    with pytest.raises(ValueError, match="needs 2 hashes, got 1"):
        CompactRange(3, [LEAF_HASHES[0]])
    with pytest.raises(ValueError, match="has 3 bytes"):
        CompactRange(1, [b"abc"])
    with pytest.raises(ValueError, match="leaf hash has 5 bytes"):
        CompactRange().append(b"short")


# --- which perfect nodes a proof reads (proof/proof_test.go) -------------------


def recording_get_node() -> tuple[list[tuple[int, int]], Callable[[int, int], bytes]]:
    calls: list[tuple[int, int]] = []

    def get_node(level: int, index: int) -> bytes:
        calls.append((level, index))
        return hashlib.sha256(f"{level}/{index}".encode()).digest()

    return calls, get_node


@pytest.mark.parametrize(
    ("size", "index", "want"),
    [
        (1, 0, []),
        (2, 0, [(0, 1)]),
        (2, 1, [(0, 0)]),
        (3, 1, [(0, 0), (0, 2)]),
        (7, 0, [(0, 1), (1, 1), (0, 6), (1, 2)]),
        (7, 1, [(0, 0), (1, 1), (0, 6), (1, 2)]),
        (7, 2, [(0, 3), (1, 0), (0, 6), (1, 2)]),
        (7, 3, [(0, 2), (1, 0), (0, 6), (1, 2)]),
        (7, 4, [(0, 5), (0, 6), (2, 0)]),
        (7, 5, [(0, 4), (0, 6), (2, 0)]),
        (7, 6, [(1, 2), (2, 0)]),
        (4, 2, [(0, 3), (1, 0)]),
        (5, 3, [(0, 2), (1, 0), (0, 4)]),
        (6, 3, [(0, 2), (1, 0), (1, 2)]),
        (6, 4, [(0, 5), (2, 0)]),
        (15, 10, [(0, 11), (1, 4), (0, 14), (1, 6), (3, 0)]),
        (31, 24, [(0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)]),
        (95, 81, [(0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
    ],
)
def test_inclusion_reads_only_perfect_nodes(
    size: int, index: int, want: list[tuple[int, int]]
) -> None:
    calls, get_node = recording_get_node()
    inclusion_proof(index, size, get_node)
    assert calls == want


@pytest.mark.parametrize(
    ("size1", "size2", "want"),
    [
        (1, 2, [(0, 1)]),
        (1, 4, [(0, 1), (1, 1)]),
        (1, 6, [(0, 1), (1, 1), (1, 2)]),
        (2, 3, [(0, 2)]),
        (2, 8, [(1, 1), (2, 1)]),
        (3, 7, [(0, 2), (0, 3), (1, 0), (0, 6), (1, 2)]),
        (4, 7, [(0, 6), (1, 2)]),
        (5, 7, [(0, 4), (0, 5), (0, 6), (2, 0)]),
        (6, 7, [(1, 2), (0, 6), (2, 0)]),
        (7, 8, [(0, 6), (0, 7), (1, 2), (2, 0)]),
        (1, 1, []),
        (5, 5, []),
        (8, 8, []),
        (2, 4, [(1, 1)]),
        (3, 5, [(0, 2), (0, 3), (1, 0), (0, 4)]),
        (3, 6, [(0, 2), (0, 3), (1, 0), (1, 2)]),
        (4, 6, [(1, 2)]),
        (1, 7, [(0, 1), (1, 1), (0, 6), (1, 2)]),
        (10, 15, [(1, 4), (1, 5), (0, 14), (1, 6), (3, 0)]),
        (24, 31, [(3, 2), (0, 30), (1, 14), (2, 6), (4, 0)]),
        (81, 95, [(0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0)]),
    ],
)
def test_consistency_reads_only_perfect_nodes(
    size1: int, size2: int, want: list[tuple[int, int]]
) -> None:
    calls, get_node = recording_get_node()
    consistency_proof(size1, size2, get_node)
    assert calls == want


def test_ephemeral_node_is_rehashed_from_its_cover() -> None:
    # Size 7, leaf 0: b h [l = hash(i, j)] -- l is not perfect, so it is built from j and i.
    proof = inclusion_proof(0, 7, lambda lvl, idx: subtree_hash(lvl, idx, LEAF_HASHES[:7]))
    assert proof == [N[0][1], N[1][1], node_hash(N[1][2], N[0][6])]


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (3, 0), (8, 7), (-1, 3)])
def test_inclusion_proof_rejects_out_of_range(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        inclusion_proof(index, size, vector_get_node)


@pytest.mark.parametrize(("size1", "size2"), [(5, 0), (9, 8), (-1, 2)])
def test_consistency_proof_rejects_shrinking(size1: int, size2: int) -> None:
    with pytest.raises(ValueError, match="cannot prove consistency"):
        consistency_proof(size1, size2, vector_get_node)


def test_consistency_from_empty_tree_is_empty() -> None:
    assert consistency_proof(0, 8, vector_get_node) == []
    verify_consistency(0, 8, EMPTY_ROOT, ROOTS[8], [])


def test_proof_builders_check_get_node_answers() -> None:
    with pytest.raises(ValueError, match=r"get_node\(0, 1\) returned 3 bytes"):
        inclusion_proof(0, 2, lambda level, index: b"abc")


# --- published proofs ---------------------------------------------------------


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_vectors_are_generated(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof_from_leaves(index, LEAF_HASHES[:size]) == proof
    if size == 8:  # the published node hashes are those of the 8-leaf tree
        assert inclusion_proof(index, size, vector_get_node) == proof


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors_are_generated(size1: int, size2: int, proof: list[bytes]) -> None:
    assert consistency_proof_from_leaves(size1, LEAF_HASHES[:size2]) == proof
    if size2 == 8:
        assert consistency_proof(size1, size2, vector_get_node) == proof


def corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """verify_test.go corruptInclusionProof: (desc, index, size, proof, root, leaf)."""
    probes = [
        ("index - 1", index - 1, size, proof, root, leaf),
        ("index + 1", index + 1, size, proof, root, leaf),
        ("index ^ 2", index ^ 2, size, proof, root, leaf),
        ("size * 2", index, size * 2, proof, root, leaf),
        ("size // 2", index, size // 2, proof, root, leaf),
        ("wrong leaf", index, size, proof, root, b"WrongLeaf"),
        ("empty root", index, size, proof, EMPTY_ROOT, leaf),
        ("random root", index, size, proof, SOME_HASH, leaf),
        ("trailing garbage", index, size, [*proof, b""], root, leaf),
        ("trailing root", index, size, [*proof, root], root, leaf),
        ("preceding garbage", index, size, [b"", *proof], root, leaf),
        ("preceding root", index, size, [root, *proof], root, leaf),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit 3", index, size, wrong, root, leaf))
    if proof:
        probes.append(("removed component", index, size, proof[:-1], root, leaf))
    if len(proof) > 1:
        probes.append(
            ("inserted component", index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf)
        )
    return probes


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_VECTORS)
def test_inclusion_vectors_verify_and_corruptions_fail(
    index: int, size: int, proof: list[bytes]
) -> None:
    leaf, root = LEAF_HASHES[index], ROOTS[size]
    verify_inclusion(leaf, index, size, proof, root)
    for desc, i, s, p, r, lf in corrupt_inclusion(index, size, proof, root, leaf):
        with pytest.raises(ProofError):
            verify_inclusion(lf, i, s, p, r)
            pytest.fail(f"accepted corrupted proof: {desc}")


def corrupt_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """verify_test.go corruptConsistencyProof: (desc, size1, size2, root1, root2, proof)."""
    probes = [
        ("size1 - 1", size1 - 1, size2, root1, root2, proof),
        ("size1 + 1", size1 + 1, size2, root1, root2, proof),
        ("size1 ^ 2", size1 ^ 2, size2, root1, root2, proof),
        ("size2 * 2", size1, size2 * 2, root1, root2, proof),
        ("size2 // 2", size1, size2 // 2, root1, root2, proof),
        ("wrong root1", size1, size2, b"WrongRoot", root2, proof),
        ("wrong root2", size1, size2, root1, b"WrongRoot", proof),
        ("swapped roots", size1, size2, root2, root1, proof),
        ("empty proof", size1, size2, root1, root2, []),
        ("trailing garbage", size1, size2, root1, root2, [*proof, b""]),
        ("trailing root1", size1, size2, root1, root2, [*proof, root1]),
        ("trailing root2", size1, size2, root1, root2, [*proof, root2]),
        ("preceding garbage", size1, size2, root1, root2, [b"", *proof]),
        ("preceding root1", size1, size2, root1, root2, [root1, *proof]),
        ("preceding root2", size1, size2, root1, root2, [root2, *proof]),
        ("preceding proof[0]", size1, size2, root1, root2, [proof[0], *proof]),
        ("truncated proof", size1, size2, root1, root2, proof[:-1]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit 4", size1, size2, root1, root2, wrong))
    return probes


@pytest.mark.parametrize(("size1", "size2", "proof"), CONSISTENCY_VECTORS)
def test_consistency_vectors_verify_and_corruptions_fail(
    size1: int, size2: int, proof: list[bytes]
) -> None:
    root1, root2 = ROOTS[size1], ROOTS[size2]
    verify_consistency(size1, size2, root1, root2, proof)
    if not proof:
        return
    for desc, s1, s2, r1, r2, p in corrupt_consistency(size1, size2, root1, root2, proof):
        with pytest.raises(ProofError):
            verify_consistency(s1, s2, r1, r2, p)
            pytest.fail(f"accepted corrupted proof: {desc}")


DONT_CARE_1 = hashlib.sha256(b"don't care 1").digest()
DONT_CARE_2 = hashlib.sha256(b"don't care 2").digest()


@pytest.mark.parametrize(
    ("size1", "size2", "root1", "root2", "proof", "ok"),
    [  # verify_test.go TestVerifyConsistency
        (0, 0, DONT_CARE_1, DONT_CARE_2, [], False),
        (1, 1, DONT_CARE_1, DONT_CARE_2, [], False),
        (0, 0, DONT_CARE_1, DONT_CARE_1, [], True),
        # Go accepts any root1 here; dbgov insists on the empty tree's root.
        (0, 1, DONT_CARE_1, DONT_CARE_2, [], False),
        (0, 1, EMPTY_ROOT, DONT_CARE_2, [], True),
        (1, 1, DONT_CARE_2, DONT_CARE_2, [], True),
        (1, 0, DONT_CARE_1, DONT_CARE_2, [], False),  # time travel to the past
        (2, 1, DONT_CARE_1, DONT_CARE_2, [], False),
        (1, 2, DONT_CARE_1, DONT_CARE_2, [], False),  # empty proof
        (0, 0, EMPTY_ROOT, DONT_CARE_2, [], False),  # roots don't match
        (1, 1, EMPTY_ROOT, DONT_CARE_2, [], False),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),  # roots match, proof not empty
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], False),
    ],
)
def test_verify_consistency_edge_cases(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes], ok: bool
) -> None:
    if ok:
        verify_consistency(size1, size2, root1, root2, proof)
    else:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, root1, root2, proof)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_verify_inclusion_rejects_bad_roots_and_leaves(index: int, size: int) -> None:
    # verify_test.go TestVerifyInclusion probes with an empty proof.
    for leaf, root in [(SOME_HASH, b""), (b"", EMPTY_ROOT), (SOME_HASH, EMPTY_ROOT)]:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, [], root)


def test_verify_inclusion_single_entry() -> None:
    digest = leaf_hash(b"data")
    verify_inclusion(digest, 0, 1, [], digest)  # root and leaf of a 1-entry tree are equal
    for leaf, root in [(digest, b""), (b"", digest), (b"", b"")]:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, 0, 1, [], root)


def test_proof_errors_say_what_is_wrong() -> None:
    index, size, proof = INCLUSION_VECTORS[2]
    with pytest.raises(ProofError, match="has 2 hashes, want 3"):
        verify_inclusion(LEAF_HASHES[index], index, size, proof[:2], ROOTS[size])
    with pytest.raises(ProofError, match=f"leads to root .* not the expected {SOME_HASH.hex()}"):
        verify_inclusion(LEAF_HASHES[index], index, size, proof, SOME_HASH)
    with pytest.raises(ProofError, match=r"proof \[1\] has 0 bytes"):
        verify_inclusion(LEAF_HASHES[index], index, size, [proof[0], b"", proof[2]], ROOTS[size])
    with pytest.raises(ProofError, match="for old size 6, not the expected"):
        verify_consistency(6, 8, ROOTS[5], ROOTS[8], CONSISTENCY_VECTORS[2][2])
    with pytest.raises(ProofError, match="for new size 8, not the expected"):
        verify_consistency(6, 8, ROOTS[6], ROOTS[7], CONSISTENCY_VECTORS[2][2])


# --- against an independent reference, for random trees -------------------------


def reference_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, recursively, exactly as written in the RFC."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def reference_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_mth(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_mth(leaves[:k])]


def reference_subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 6962 §2.1.2 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [reference_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*reference_subproof(m, leaves[:k], b), reference_mth(leaves[k:])]
    return [*reference_subproof(m - k, leaves[k:], False), reference_mth(leaves[:k])]


def make_leaves(n: int, salt: int) -> list[bytes]:
    return [leaf_hash(f"{salt}:{i}".encode()) for i in range(n)]


def test_every_proof_of_every_small_tree_matches_the_rfc() -> None:
    leaves = make_leaves(48, 0)
    nodes: dict[tuple[int, int], bytes] = {}
    CompactRange().extend(
        leaves, lambda level, index, digest: nodes.__setitem__((level, index), digest)
    )

    def get_node(level: int, index: int) -> bytes:
        return nodes[(level, index)]

    roots = [reference_mth(leaves[:n]) for n in range(len(leaves) + 1)]
    for n in range(1, len(leaves) + 1):
        for i in range(n):
            proof = inclusion_proof(i, n, get_node)
            assert proof == reference_path(i, leaves[:n]), (i, n)
            verify_inclusion(leaves[i], i, n, proof, roots[n])
        for m in range(n + 1):
            proof = consistency_proof(m, n, get_node)
            assert proof == (reference_subproof(m, leaves[:n], True) if 0 < m < n else []), (m, n)
            verify_consistency(m, n, roots[m], roots[n], proof)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), salt=st.integers(0, 2**32))
def test_roots_match_the_rfc_definition(n: int, salt: int) -> None:
    leaves = make_leaves(n, salt)
    want = reference_mth(leaves)
    assert root_from_leaves(leaves) == want
    cr = CompactRange()
    for i, leaf in enumerate(leaves):
        cr.append(leaf)
        if i % 37 == 0:
            assert cr.root() == reference_mth(leaves[: i + 1])
    assert cr.root() == want


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 300), salt=st.integers(0, 2**32))
def test_inclusion_proofs_match_the_rfc_and_detect_tampering(
    data: st.DataObject, n: int, salt: int
) -> None:
    leaves = make_leaves(n, salt)
    root = reference_mth(leaves)
    index = data.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof_from_leaves(index, leaves)
    assert proof == reference_path(index, leaves)
    verify_inclusion(leaves[index], index, n, proof, root)

    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        bit = data.draw(st.integers(0, 255), label="bit")
        byte, mask = bit // 8, 1 << (bit % 8)
        tampered = list(proof)
        tampered[i] = proof[i][:byte] + bytes([proof[i][byte] ^ mask]) + proof[i][byte + 1 :]
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, n, tampered, root)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index) if n > 1 else st.none())
    if other is not None:
        with pytest.raises(ProofError):
            verify_inclusion(leaves[other], other, n, proof, root)


@settings(max_examples=80, deadline=None)
@given(data=st.data(), n=st.integers(1, 300), salt=st.integers(0, 2**32))
def test_consistency_proofs_match_the_rfc_and_detect_tampering(
    data: st.DataObject, n: int, salt: int
) -> None:
    leaves = make_leaves(n, salt)
    m = data.draw(st.integers(1, n), label="old size")
    old_root, new_root = reference_mth(leaves[:m]), reference_mth(leaves)
    proof = consistency_proof_from_leaves(m, leaves)
    assert proof == (reference_subproof(m, leaves, True) if m < n else [])

    # The same proof from perfect nodes only, as a store would serve them.
    cr = CompactRange()
    nodes: dict[tuple[int, int], bytes] = {}
    cr.extend(leaves, lambda level, index, digest: nodes.__setitem__((level, index), digest))
    assert consistency_proof(m, n, lambda level, index: nodes[(level, index)]) == proof
    verify_consistency(m, n, old_root, new_root, proof)

    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        tampered = list(proof)
        tampered[i] = bytes([proof[i][0] ^ 1]) + proof[i][1:]
        with pytest.raises(ProofError):
            verify_consistency(m, n, old_root, new_root, tampered)
        forked = reference_mth([*leaves[: m - 1], leaf_hash(b"rewritten"), *leaves[m:]])
        with pytest.raises(ProofError):
            verify_consistency(m, n, old_root, forked, proof)
