"""The formatter over the whole repository, as configured in pyproject.toml ([tool.ruff.format])."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


# Added before the tree is formatted: run `ruff format .` once over the merged tree (it touches files
# other branches change too), commit that, then delete this mark.
@pytest.mark.skip(reason="apply after merge: run `ruff format .` on the merged tree, then remove this mark")
def test_ruff_format_check_passes():
    result = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "--no-cache", str(ROOT)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
