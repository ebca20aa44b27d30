"""tools.engine.apply_sysctls: this machine gets the hosts' ptrace_scope where its kernel has Yama, and
says so where it has not (attack-findings issue, finding 10)."""

from __future__ import annotations

from pathlib import Path

from tools.engine import ENGINE_SYSCTLS, apply_sysctls


def test_a_present_key_is_set_to_the_hosts_value(tmp_path: Path) -> None:
    key = tmp_path / "kernel" / "yama" / "ptrace_scope"
    key.parent.mkdir(parents=True)
    key.write_text("0\n")
    assert apply_sysctls(tmp_path) == ["kernel.yama.ptrace_scope=2"]
    assert key.read_text() == "2\n"


def test_a_missing_key_is_reported_not_faked(tmp_path: Path) -> None:
    assert ENGINE_SYSCTLS == ("kernel.yama.ptrace_scope",)
    assert apply_sysctls(tmp_path) == ["kernel.yama.ptrace_scope=unavailable"]
    assert not (tmp_path / "kernel").exists()
