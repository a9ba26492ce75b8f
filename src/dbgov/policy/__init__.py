"""Policy: who may do what, where. Grants, ordered rules with CEL conditions,
built-in guardrails, and `explain`; decides on `sql/` facts and nothing else.

    engine = load_policy_file(Path("policy.yaml"), config)
    decision = engine.decide(analyze_cached(sql), session_context)

The names below load on first use: the engine pulls in pydantic, CEL and pglast
(~0.4 s), which `dbgov policy --help` and the rest of the CLI should not pay for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbgov.policy.engine import MaskingConfig, PolicyEngine
    from dbgov.policy.load import load_policy_file, load_policy_text, parse_policy
    from dbgov.policy.model import PolicyError, PolicyFile

__all__ = [
    "MaskingConfig",
    "PolicyEngine",
    "PolicyError",
    "PolicyFile",
    "load_policy_file",
    "load_policy_text",
    "parse_policy",
]

_HOME = {
    "MaskingConfig": "engine",
    "PolicyEngine": "engine",
    "PolicyError": "model",
    "PolicyFile": "model",
    "load_policy_file": "load",
    "load_policy_text": "load",
    "parse_policy": "load",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'dbgov.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dbgov.policy.{module}"), name)
