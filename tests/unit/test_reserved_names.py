"""Reserved environment names: one rule (components.conventions), refused by the config check.

A claw secret named PYTHONPATH once passed the config check and then died in sealing with a traceback
and exit 1. Every name the sealing (and cage-init) refuses is in the config's list, and each name of
that list is refused as every other mistake is: one paragraph, exit 2 from the preview.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from components import conventions, sealing
from components.config import ConfigError, load_stack_file, parse_stack_config
from tests.conftest import ROOT

NAMES = sorted(conventions.RESERVED_ENV_NAMES) + [conventions.RESERVED_ENV_PREFIX + "ANYTHING"]


def with_secret(name: str) -> str:
    """Pulumi.local.yaml with one more secret for acme-support (claws[0]), its value set as a secret."""
    text = (ROOT / "Pulumi.local.yaml").read_text()
    listed = "secrets: [ANTHROPIC_API_KEY, SLACK_BOT_TOKEN]"
    assert listed in text and "    acme-support:\n" in text
    text = text.replace(listed, f"secrets: [ANTHROPIC_API_KEY, SLACK_BOT_TOKEN, {name}]", 1)
    return text.replace("    acme-support:\n", f"    acme-support:\n      {name}:\n        secure: v1:AAAA:AAAA\n", 1)


def test_the_config_refuses_every_name_the_sealing_refuses():
    assert sealing.RESERVED_NAMES <= conventions.RESERVED_ENV_NAMES
    assert {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"} <= conventions.RESERVED_ENV_NAMES
    assert all(conventions.is_reserved_env_name(n) for n in NAMES)
    assert not conventions.is_reserved_env_name("ANTHROPIC_API_KEY")


@pytest.mark.parametrize("name", NAMES)
def test_the_config_check_refuses_each_reserved_name(tmp_path, name):
    stack_file = tmp_path / "Pulumi.local.yaml"
    stack_file.write_text(with_secret(name))
    raw, secret_keys = load_stack_file(stack_file)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="local", secret_keys=secret_keys)
    assert caught.value.key == "clawstaff:claws[0].secrets[2]" and caught.value.value == f'"{name}"'
    assert caught.value.reason == "reserved by the cage runtime"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", NAMES)
def test_the_preview_exits_2_with_one_paragraph_for_each_reserved_name(tmp_path, name):
    stack_file = tmp_path / "Pulumi.local.yaml"
    stack_file.write_text(with_secret(name))
    result = subprocess.run(
        [sys.executable, "-m", "tools.preview", "--stack", "local", "--stack-file", str(stack_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "clawstaff:claws[0].secrets[2]" in result.stderr and "reserved by the cage runtime" in result.stderr
    assert result.stderr.strip().count("\n") == 0, "one paragraph"
