"""Fixtures for policy tests: the demo policy, and engines built from YAML text."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from dbgov.demo.world import demo_policy_path
from dbgov.policy import PolicyEngine, load_policy_file, load_policy_text
from policy.helpers import ENVS


@pytest.fixture(scope="session")
def demo() -> PolicyEngine:
    return load_policy_file(demo_policy_path(), targets=ENVS)


Make = Callable[..., PolicyEngine]


@pytest.fixture
def make() -> Make:
    """Build an engine from YAML text (targets prod/staging known)."""

    def build(text: str, clock: Callable[[], datetime] | None = None) -> PolicyEngine:
        engine = load_policy_text(text, "test.yaml", targets=ENVS)
        if clock is not None:
            engine = PolicyEngine(engine.policy, engine.source, clock=clock)
        return engine

    return build
