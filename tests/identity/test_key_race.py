"""Keys created by several workers at once: one wins, every process uses its key.

The workers of a first start each load the issuer and masking keys and create
them if missing. A CI run hit two workers racing on the issuer key; with a
rename, the loser could also have replaced the winner's key while the winner
kept using it (pseudonyms differing per worker). These tests race real
processes on one data dir and check that all of them, and the file, agree.
"""

from __future__ import annotations

import multiprocessing
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from dbgov.durable import write_private
from dbgov.identity.issuer import load_or_create_key as issuer_key
from dbgov.masking.engine import load_or_create_key as masking_key

RACERS = 6


def _issuer(path: str, start: Any) -> bytes:
    start.wait()
    key = issuer_key(Path(path))
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _masking(path: str, start: Any) -> bytes:
    start.wait()
    return masking_key(Path(path))


def _race(fn: Callable[[str, Any], bytes], path: Path) -> list[bytes]:
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(RACERS) as pool:
            pending = [pool.apply_async(fn, (str(path), start)) for _ in range(RACERS)]
            start.set()
            return [p.get(timeout=30) for p in pending]


@pytest.mark.parametrize("round_", range(3))
def test_workers_racing_on_the_issuer_key_agree(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "keys" / "issuer.key"
    keys = _race(_issuer, path)
    assert len(set(keys)) == 1
    on_disk = (
        issuer_key(path)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert keys[0] == on_disk
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["issuer.key"]  # no temp left


@pytest.mark.parametrize("round_", range(3))
def test_workers_racing_on_the_masking_key_agree(tmp_path: Path, round_: int) -> None:
    path = tmp_path / "keys" / "masking.key"
    keys = _race(_masking, path)
    assert len(set(keys)) == 1 and keys[0] == masking_key(path)


def test_write_private_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "k"
    write_private(path, b"first")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_private(path, b"second")
    assert path.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]
