"""The cages' own seccomp profile (attack-findings issue, findings 7, 10, 11): what it refuses, and that
it is the same bytes wherever it is rendered."""

from __future__ import annotations

import json

from components import seccomp


def _allowed_unconditionally(profile: dict) -> set[str]:
    return {
        name
        for rule in profile["syscalls"]
        if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
        for name in rule["names"]
    }


def test_everything_not_listed_is_refused_with_eperm() -> None:
    profile = seccomp.profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1


def test_io_uring_ptrace_and_the_32_bit_abis_are_refused() -> None:
    profile = seccomp.profile()
    every = {name for rule in profile["syscalls"] for name in rule["names"]}
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace", "process_vm_readv",
                 "process_vm_writev", "socketcall", "modify_ldt"):  # fmt: skip
        assert name not in every, name
    assert all(arch["subArchitectures"] == [] for arch in profile["archMap"])


def test_socket_is_allowed_only_for_four_families_never_vsock() -> None:
    rules = [r for r in seccomp.profile()["syscalls"] if "socket" in r["names"]]
    families = {r["args"][0]["value"] for r in rules}
    assert all(r["args"][0]["op"] == "SCMP_CMP_EQ" and r["names"] == ["socket"] for r in rules)
    assert families == {seccomp.AF_UNIX, seccomp.AF_INET, seccomp.AF_INET6, seccomp.AF_NETLINK}
    assert seccomp.AF_VSOCK not in families
    assert "socket" not in _allowed_unconditionally(seccomp.profile())


def test_clone_never_makes_a_namespace_and_clone3_falls_back() -> None:
    rules = {r["names"][0]: r for r in seccomp.profile()["syscalls"] if r["names"][0] in ("clone", "clone3")}
    (arg,) = rules["clone"]["args"]
    assert arg == {"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    assert rules["clone3"]["action"] == "SCMP_ACT_ERRNO" and rules["clone3"]["errnoRet"] == 38


def test_memfd_create_stays_allowed_as_decided() -> None:
    assert "memfd_create" in _allowed_unconditionally(seccomp.profile())


def test_the_security_option_is_stable_compact_json() -> None:
    opt = seccomp.security_opt()
    assert opt.startswith("seccomp=") and opt == seccomp.security_opt()
    assert json.loads(opt.removeprefix("seccomp=")) == seccomp.profile()
    assert "\n" not in opt and ": " not in opt
