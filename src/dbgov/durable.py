"""Durability tricks, kept in one file (Tessera `storage/posix/file_ops.go` habit).

Every file dbgov must not lose or half-write (state.json, checkpoints) goes
through `write_atomic`: write a temp file in the same directory, fsync it, rename
over the target, fsync the directory. Readers see the old or the new file, never
a torn one. Keys go through `write_private`, which links instead of renaming, so
that a key, once there, is never replaced.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Secrets: readable by the owner only, and never overwritten.

    The file is written aside and linked into place: link(2) fails if the name
    exists, so of two processes creating the same key at once (the workers of a
    first start) exactly one wins, and the other gets FileExistsError and must read
    the winner's key. A rename would let the second silently replace the first's
    key while the first goes on using it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; refusing to overwrite a key") from None
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
