"""The compiled hot path (dbgov.native): a build older than its source never runs, and
DBGOV_PURE_PYTHON=1 runs the sources on purpose.

Each case imports a copy of the package in a fresh interpreter, with a file that
is not an extension module at all standing in for a compiled module: importing it
would fail, so a clean import proves the guard routed around it.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dbgov
from dbgov import native

SRC = Path(dbgov.__file__).resolve().parent
PROBE = "import dbgov.proxy.session as s; print(s.__file__)"


def _package_with_fake_build(tmp_path: Path, age: float) -> Path:
    """A copy of the package whose session module has a bogus compiled form, `age`
    seconds older (negative: newer) than its source."""
    shutil.copytree(SRC, tmp_path / "dbgov", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    source = tmp_path / "dbgov" / "proxy" / "session.py"
    fake = source.with_name("session" + importlib.machinery.EXTENSION_SUFFIXES[0])
    fake.write_bytes(b"not an extension module")
    when = source.stat().st_mtime - age
    os.utime(fake, (when, when))
    return tmp_path


def _import(root: Path, probe: str = PROBE, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", probe],
        env={**clean, "PYTHONPATH": str(root), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_build_older_than_its_source_is_set_aside(tmp_path: Path) -> None:
    root = _package_with_fake_build(tmp_path, age=60)
    out = _import(root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(root / "dbgov" / "proxy" / "session.py")
    assert "older than their source (dbgov.proxy.session)" in out.stderr
    assert "make native" in out.stderr


def test_a_current_build_is_preferred_unless_pure_python_is_asked(tmp_path: Path) -> None:
    root = _package_with_fake_build(tmp_path, age=-60)
    # Current, so Python takes it: the bogus file fails to load, which shows it was chosen.
    out = _import(root)
    assert out.returncode != 0 and "ImportError" in out.stderr
    out = _import(root, **{native.PURE_ENV: "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(root / "dbgov" / "proxy" / "session.py")


def test_this_run_uses_the_build_exactly_when_it_is_current() -> None:
    built = all(native.compiled_path(m) is not None for m in native.MODULES)
    current = built and not native.stale() and not native.strays()
    expected = current and not os.environ.get(native.PURE_ENV)
    assert native.loaded() is expected


def test_a_compiled_module_no_longer_listed_is_set_aside(tmp_path: Path) -> None:
    """A build left behind by a module dropped from MODULES, however new, never runs:
    Python would import it before its source, and the shared library no longer matches."""
    root = _package_with_fake_build(tmp_path, age=-60)
    source = root / "dbgov" / "wire" / "postgres" / "connection.py"
    assert "dbgov.wire.postgres.connection" not in native.MODULES
    stray = source.with_name("connection" + importlib.machinery.EXTENSION_SUFFIXES[0])
    stray.write_bytes(b"not an extension module")
    out = _import(root, "import dbgov.wire.postgres.connection as c; print(c.__file__)\n" + PROBE)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(source), str(root / "dbgov" / "proxy" / "session.py")]
    assert "no longer listed in dbgov.native (dbgov.wire.postgres.connection)" in out.stderr
