"""`make native`: compile dbgov's hot-path modules with mypyc, in place.

Builds the modules listed in `dbgov.native.MODULES` into extension modules next
to their sources (src/dbgov/**/*.so, plus one shared `dbgov_native` library in
src/), where the editable install imports them first. Nothing happens when every
compiled module is newer than its source, so `make up` and `make test` can call
this each time.

Without a working C compiler the build fails with a warning and dbgov runs its
pure-Python sources, which behave the same and are about half as fast.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
BUILD = ROOT / "build" / "native"
GROUP = "dbgov_native"


def _remove_builds(modules: tuple[str, ...]) -> None:
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    for module in modules:
        base = SRC.joinpath(*module.split("."))
        for suffix in suffixes:
            with contextlib.suppress(FileNotFoundError):
                base.with_name(base.name + suffix).unlink()
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            (SRC / f"{GROUP}__mypyc{suffix}").unlink()


def build(modules: tuple[str, ...]) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in modules]
    os.chdir(SRC)  # mypyc names modules by path; setuptools must not read pyproject.toml
    extensions = mypycify(
        ["--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(BUILD / "mypy"), *paths],
        opt_level="3",
        debug_level="0",
        group_name=GROUP,
        target_dir=str(BUILD),
    )
    setup(
        name="dbgov-native",
        ext_modules=extensions,
        script_args=[
            "-q",
            "build_ext",
            "--inplace",
            "--build-temp",
            str(BUILD / "temp"),
            "--build-lib",
            str(BUILD / "lib"),
        ],
    )


def main() -> int:
    sys.path.insert(0, str(SRC))
    os.environ["DBGOV_PURE_PYTHON"] = "1"  # importing dbgov must not load an old build
    from dbgov import native

    modules = native.MODULES
    missing = [m for m in modules if native.compiled_path(m) is None]
    strays = tuple(native.strays())  # dropped from MODULES since the last build
    if not missing and not native.stale() and not strays and "--force" not in sys.argv:
        return 0
    print(f"native: compiling {len(modules)} hot-path modules with mypyc ...", flush=True)
    started = time.monotonic()
    begun = time.time()
    _remove_builds((*modules, *strays))
    try:
        build(modules)
        # Dated when the build read its sources: a source edited while it compiled is
        # then newer than its compiled form, and the guard sets the build aside.
        for module in modules:
            compiled = native.compiled_path(module)
            if compiled is not None:
                os.utime(compiled, (begun, begun))
    except (Exception, SystemExit) as exc:  # setuptools reports compiler failures as SystemExit
        _remove_builds(modules)
        print(
            f"native: build failed ({exc}); dbgov runs as pure Python (about half as fast)",
            file=sys.stderr,
        )
        return 0
    finally:
        for scratch in ("temp", "lib"):
            shutil.rmtree(BUILD / scratch, ignore_errors=True)
    print(f"native: done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
