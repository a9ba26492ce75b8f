"""The hot path compiled to C with mypyc, and the guard that keeps it honest.

The modules in `MODULES` carry every statement and result row; compiled with
mypyc (`make native`, run by `make up`, `make test` and `make bench`) they run
about twice as fast. Their source stays the only source: the compiled form is a
build product next to each `.py` (`*.so`, never committed), and the pure-Python
module is the fallback wherever no compiler was available.

A compiled module older than its source would silently run old code after an
edit. `guard()`, run when the `dbgov` package is imported, stops that: if any
source is newer than its compiled form, every compiled module is set aside for
this process and the sources are imported instead, with a warning. Setting
`DBGOV_PURE_PYTHON=1` does the same on purpose (tracebacks with line numbers,
debugging, comparing the two).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# Dotted names. Each must be mypy --strict clean, and a class defined in one cannot
# be subclassed outside them (mypyc makes such classes final).
MODULES = (
    "dbgov.wire.postgres.messages",
    "dbgov.wire.postgres.framing",
    "dbgov.wire.postgres.states",
    "dbgov.proxy.session",
    "dbgov.proxy.catalogs",
    "dbgov.proxy.audit",
    "dbgov.proxy.masking_io",
    "dbgov.proxy.redact",
    "dbgov.gate",
    "dbgov.sql.cache",
    "dbgov.sql.analyze",
    "dbgov.ledger.events",
    "dbgov.ledger.journal",
    "dbgov.ledger.sequencer",
    "dbgov.ledger.merkle",
    "dbgov.models.registry",
    "dbgov.policy.engine",
    "dbgov.masking.engine",
    "dbgov.masking.memo",
)
SRC = Path(__file__).resolve().parent.parent
PURE_ENV = "DBGOV_PURE_PYTHON"


def source_path(module: str) -> Path:
    return SRC.joinpath(*module.split(".")).with_suffix(".py")


def compiled_path(module: str) -> Path | None:
    """The module's compiled form next to its source, if there is one."""
    base = source_path(module).with_suffix("")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = base.with_name(base.name + suffix)
        if candidate.exists():
            return candidate
    return None


def stale() -> list[str]:
    """Compiled modules whose source changed after they were built."""
    out = []
    for module in MODULES:
        so = compiled_path(module)
        if so is not None and source_path(module).stat().st_mtime > so.stat().st_mtime:
            out.append(module)
    return out


def strays() -> list[str]:
    """Compiled modules that `MODULES` no longer lists, left by an older build. Python
    would import one before its source, however stale, and the shared library built
    with it no longer matches the others."""
    names = set()
    for path in SRC.joinpath("dbgov").rglob("*"):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if path.name.endswith(suffix):
                relative = path.relative_to(SRC)
                names.add(".".join((*relative.parts[:-1], path.name[: -len(suffix)])))
                break
    return sorted(names - set(MODULES))


def loaded() -> bool:
    """True if this process runs the compiled hot path."""
    module = importlib.import_module("dbgov.proxy.session")
    return not str(module.__file__).endswith(".py")


class _PreferSource(importlib.abc.MetaPathFinder):
    """Imports `MODULES` and `also` from their `.py`, whatever lies beside them."""

    def __init__(self, also: Sequence[str] = ()) -> None:
        self.names = frozenset((*MODULES, *also))

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def guard() -> None:
    if not any(compiled_path(m) for m in MODULES):
        return
    extra = strays()
    if os.environ.get(PURE_ENV):
        sys.meta_path.insert(0, _PreferSource(extra))
        return
    outdated = stale()
    if outdated or extra:
        what = [f"older than their source ({', '.join(outdated)})"] if outdated else []
        what += [f"no longer listed in dbgov.native ({', '.join(extra)})"] if extra else []
        warnings.warn(
            f"dbgov: compiled modules {'; '.join(what)}; running the pure-Python sources "
            "instead. Run `make native` to rebuild.",
            RuntimeWarning,
            stacklevel=2,
        )
        sys.meta_path.insert(0, _PreferSource(extra))
