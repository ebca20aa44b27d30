"""Shared fixtures: the project's stacks evaluated under Pulumi's mocks (docs/architecture.md: the program under tools.mockrun)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from components.config import load_stack_file, parse_stack_config
from tools import mockrun

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str) -> str:
    """The path of a real tool a test needs: in CI a missing tool fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed: CI must install it (.ci/run)")
    pytest.skip(f"{name} is not installed here (apt-get install it, or run `bash .ci/run`)")


def evaluate_stack(stack: str) -> mockrun.Evaluation:
    raw, secret_keys = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    return mockrun.evaluate(stack, raw, secret_keys)


@pytest.fixture(scope="session")
def prod_eval() -> mockrun.Evaluation:
    return evaluate_stack("prod")


@pytest.fixture(scope="session")
def local_eval() -> mockrun.Evaluation:
    return evaluate_stack("local")


@pytest.fixture(scope="session")
def prod_config():
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    return parse_stack_config(raw, stack="prod", secret_keys=secret_keys)
