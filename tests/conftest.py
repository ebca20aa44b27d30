"""Shared fixtures: the project's stacks evaluated under Pulumi's mocks (docs/architecture.md: the program under tools.mockrun)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from components import local_images
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


# The pure, mock and policy tiers read the local stack's `built:` images from a fixed record with
# made-up IDs, so that they do not depend on what this machine built; the real-engine tiers
# (integration, host) read the record the last `make images` wrote.
FIXTURE_IMAGES_RECORD = ROOT / "tests" / "fixtures" / "images.json"
REAL_ENGINE_TIERS = (ROOT / "tests" / "integration", ROOT / "tests" / "host")


@contextlib.contextmanager
def fixture_images_record():
    saved = os.environ.get(local_images.RECORD_ENV)
    os.environ[local_images.RECORD_ENV] = str(FIXTURE_IMAGES_RECORD)
    try:
        yield FIXTURE_IMAGES_RECORD
    finally:
        if saved is None:
            del os.environ[local_images.RECORD_ENV]
        else:
            os.environ[local_images.RECORD_ENV] = saved


@pytest.fixture(autouse=True)
def _images_record_for_tier(request):
    if any(Path(str(request.node.path)).is_relative_to(tier) for tier in REAL_ENGINE_TIERS):
        yield None
        return
    with fixture_images_record() as path:
        yield path


def evaluate_stack(stack: str) -> mockrun.Evaluation:
    with fixture_images_record():
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
