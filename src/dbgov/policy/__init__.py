"""Policy: who may do what, where. Grants, ordered rules with CEL conditions,
built-in guardrails, and `explain`; decides on `sql/` facts and nothing else.

    engine = load_policy_file(Path("policy.yaml"), config)
    decision = engine.decide(analyze_cached(sql), session_context)
"""

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
