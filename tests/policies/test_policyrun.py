"""End to end: the pack started through its real entry point, spoken to over the analyzer gRPC protocol."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.policies import fixtures as fx
from tools.policyrun import (
    UNKNOWN,
    PolicyConfigError,
    PolicyPackError,
    PolicyResource,
    Secret,
    Violation,
    run_policy_pack,
    to_wire,
)

PACK = Path(__file__).resolve().parents[2] / "policies"
SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
HCLOUD_PROVIDER = f"urn:pulumi:{fx.STACK}::{fx.PROJECT}::pulumi:providers:hcloud::default"


def resources(entries: list[fx.StackEntry] | None = None, secret_stdin: bool = True) -> list[PolicyResource]:
    """The compliant fleet: a Hetzner host with firewall, its Docker provider, egress network and two cages."""
    entries = (
        entries
        if entries is not None
        else (fx.cage("acme-support", "acme") + fx.cage("globex-ops", "globex", volume=False) + fx.host_resources())
    )
    built = [
        PolicyResource(
            fx.urn(SERVER, fx.HOST, "clawstaff:fleet:ClawHost"),
            SERVER,
            fx.HOST,
            fx.hcloud_server(),
            provider_urn=HCLOUD_PROVIDER,
        ),
        PolicyResource(
            fx.urn(FIREWALL, f"{fx.HOST}-firewall", "clawstaff:fleet:ClawHost"),
            FIREWALL,
            f"{fx.HOST}-firewall",
            fx.hcloud_firewall(),
            provider_urn=HCLOUD_PROVIDER,
        ),
    ]
    for type_, name, props, provider in entries:
        props = dict(props)
        for key in ("stdin", "connection"):
            if secret_stdin and key in props:
                props[key] = Secret(props[key])  # the per-cage key and the SSH connection are Pulumi secrets
        built.append(
            PolicyResource(
                fx.urn(type_, name),
                type_,
                name,
                props,
                provider_urn=provider,
                parent=f"urn:pulumi:{fx.STACK}::{fx.PROJECT}::clawstaff:fleet:ClawCage::x",
            )
        )
    return built


def replace(items: list[PolicyResource], name: str, **props: object) -> list[PolicyResource]:
    return [
        PolicyResource(r.urn, r.type, r.name, {**r.properties, **props}, r.parent, r.provider_urn)
        if r.name == name
        else r
        for r in items
    ]


def test_the_compliant_fleet_passes_through_the_real_entry_point() -> None:
    assert run_policy_pack(resources(), pack_dir=PACK) == []


def test_violations_carry_policy_level_urn_and_message() -> None:
    items = replace(resources(), "acme-support-claw", privileged=True)
    items = [r for r in items if r.name != "globex-ops-limits"]
    violations = run_policy_pack(items, pack_dir=PACK)
    assert [(v.policy, v.level, v.urn) for v in violations] == [
        ("container-not-privileged", "mandatory", fx.urn(fx.CONTAINER, "acme-support-claw")),
        ("cage-limits-enforced", "mandatory", fx.urn(fx.CONTAINER, "globex-ops-claw")),
    ]
    assert violations[0].message.startswith("Containers are never privileged")
    assert "`privileged` is true" in violations[0].message
    assert "no command creates cage globex-ops's parent cgroup with its limits" in violations[1].message


def test_an_unsafe_cage_is_refused_on_every_count() -> None:
    items = replace(
        resources(),
        "acme-support-claw",
        privileged=True,
        readOnly=False,
        user="root",
        capabilities={"drops": []},
        ports=[{"internal": 22, "external": 2222}],
        networkMode="host",
        mounts=[{"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}],
    )
    policies = {v.policy for v in run_policy_pack(items, pack_dir=PACK)}
    assert {
        "container-not-privileged",
        "container-read-only-rootfs",
        "container-non-root-user",
        "container-drops-all-capabilities",
        "container-no-published-ports",
        "container-no-host-namespaces",
        "container-no-docker-socket",
        "container-mounts-confined",
    } <= policies


def test_secrets_arrive_as_secrets_and_are_still_compared() -> None:
    items = resources()
    key = next(r for r in items if r.name == "globex-ops-key").properties["stdin"]
    assert isinstance(key, Secret) and to_wire(key)["value"] == key.value
    claw = next(r for r in items if r.name == "globex-ops-claw")
    items = replace(items, "globex-ops-claw", envs=[*claw.properties["envs"], f"CLAWCAGE_DEBUG={key.value}"])
    violations = run_policy_pack(items, pack_dir=PACK)
    assert [(v.policy, v.urn) for v in violations] == [
        ("secrets-reach-containers-sealed", fx.urn(fx.CONTAINER, "globex-ops-claw"))
    ]
    assert key.value not in violations[0].message


def test_an_input_unknown_during_preview_is_a_mandatory_violation() -> None:
    items = replace(resources(), "acme-support-claw", readOnly=UNKNOWN)
    assert run_policy_pack(items, pack_dir=PACK) == [
        Violation(
            policy="container-read-only-rootfs",
            level="mandatory",
            urn=fx.urn(fx.CONTAINER, "acme-support-claw"),
            message=(
                "Set `readOnly: true`; give writable scratch space as a noexec, sized `tmpfs`.\n"
                "cannot verify `readOnly`: its value is unknown during preview (computed from another resource's "
                "output), so this rule fails closed. Make the input a value known at preview time (a literal or "
                "stack config), not the output of another resource."
            ),
        )
    ]


def test_config_sets_limits_and_levels_as_pulumi_policy_config_does() -> None:
    violations = run_policy_pack(
        resources(),
        pack_dir=PACK,
        config={
            "container-memory-limited": {"maxMemoryMb": 512},
            "cage-limits-enforced": {"enforcementLevel": "advisory", "maxPids": 100},
        },
    )
    assert {(v.policy, v.level, v.urn) for v in violations} == {
        ("container-memory-limited", "mandatory", fx.urn(fx.CONTAINER, "acme-support-claw")),
        ("container-memory-limited", "mandatory", fx.urn(fx.CONTAINER, "globex-ops-claw")),
        ("cage-limits-enforced", "advisory", fx.urn(fx.REMOTE_COMMAND, "acme-support-limits")),
        ("cage-limits-enforced", "advisory", fx.urn(fx.REMOTE_COMMAND, "globex-ops-limits")),
    }


def test_a_disabled_policy_is_not_run() -> None:
    items = replace(resources(), "acme-support-claw", privileged=True)
    assert run_policy_pack(items, pack_dir=PACK, config={"container-not-privileged": "disabled"}) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"no-such-policy": "advisory"}, "names 'no-such-policy', which is not a policy of clawcage-isolation"),
        ({"container-memory-limited": {"maxMemory": 1}}, "container-memory-limited has no such setting"),
        ({"container-memory-limited": {"maxMemoryMb": "lots"}}, "'lots' is not of type integer"),
        ({"container-not-privileged": "sometimes"}, "'sometimes' is not an enforcement level"),
    ],
)
def test_bad_config_is_refused(config: dict[str, object], expected: str) -> None:
    with pytest.raises(PolicyConfigError, match=expected):
        run_policy_pack(resources(), pack_dir=PACK, config=config)


def _pack(tmp_path: Path, main: str) -> Path:
    (tmp_path / "PulumiPolicy.yaml").write_text("name: broken\nruntime: python\nversion: 0.0.1\n")
    (tmp_path / "__main__.py").write_text(textwrap.dedent(main))
    return tmp_path


def _our_pack_processes() -> list[int]:
    """Pack processes this test process started and left behind (children running pulumi.policy)."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"pulumi.policy" in cmdline:
            left.append(int(entry.name))
    return left


def test_a_pack_that_crashes_is_a_clear_error(tmp_path: Path) -> None:
    pack = _pack(tmp_path, "raise RuntimeError('rule module failed to import')\n")
    with pytest.raises(PolicyPackError, match=r"exited with status 1 before printing its port(.|\n)*module failed"):
        run_policy_pack(resources(), pack_dir=pack, timeout=30)


def test_a_pack_that_prints_no_port_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    pack = _pack(tmp_path, "import time\ntime.sleep(600)\n")
    started = time.monotonic()
    with pytest.raises(PolicyPackError, match="printed no port within the timeout"):
        run_policy_pack(resources(), pack_dir=pack, timeout=3)
    assert time.monotonic() - started < 15
    assert _our_pack_processes() == []


def test_the_pack_process_is_stopped_after_a_run() -> None:
    run_policy_pack(resources(), pack_dir=PACK)
    assert _our_pack_processes() == []


def test_a_directory_without_a_pack_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyPackError, match="has no PulumiPolicy.yaml"):
        run_policy_pack([], pack_dir=tmp_path)


def test_values_that_cannot_be_sent_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot send a object"):
        to_wire({"x": object()})


def test_an_empty_stack_has_nothing_to_refuse() -> None:
    assert run_policy_pack([], pack_dir=PACK, python=sys.executable) == []
