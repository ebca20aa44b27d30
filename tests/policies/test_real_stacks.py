"""The pack against the graphs the program really emits (the stacks evaluated under mocks, tier 2).

Three things are proved here: the prod and local stacks pass every policy through the pack's real entry
point; a breach planted in a real graph is still caught (so passing is not an accident of what the rules
fail to see); and the compliant fixture that the rule tests break one field at a time has exactly the
shape of a real cage.
"""

from __future__ import annotations

from components.conventions import cage_slice

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from components.config import load_stack_file
from tests.conftest import ROOT, fixture_images_record
from tests.policies import fixtures as fx
from tools import mockrun
from tools.mockrun import unwrap_secrets
from tools.preview import check_policies, policy_config_file
from tools.policyrun import Violation

CAGE_TYPE = "clawstaff:fleet:ClawCage"


def pack_config(stack: str) -> dict[str, Any] | None:
    path: Path = policy_config_file(stack, ROOT)
    return json.loads(path.read_text()) if path.is_file() else None


def verdicts(evaluation: mockrun.Evaluation) -> list[tuple[str, str]]:
    return [(v.policy, v.urn.rsplit("::", 1)[-1]) for v in check_policies(evaluation, pack_config(evaluation.stack))]


def changed(evaluation: mockrun.Evaluation, name: str, **inputs: Any) -> mockrun.Evaluation:
    """The evaluation with some inputs of one resource replaced."""
    resources = [
        dataclasses.replace(r, inputs={**r.inputs, **inputs}) if r.name == name else r for r in evaluation.resources
    ]
    assert resources != evaluation.resources, name
    return dataclasses.replace(evaluation, resources=resources)


def inputs_of(evaluation: mockrun.Evaluation, name: str) -> dict[str, Any]:
    return next(dict(r.inputs) for r in evaluation.resources if r.name == name)


# --- the real graphs pass -----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["prod", "local"])
def test_the_real_stack_passes_every_policy(
    stack: str, prod_eval: mockrun.Evaluation, local_eval: mockrun.Evaluation
) -> None:
    evaluation = prod_eval if stack == "prod" else local_eval
    violations: list[Violation] = check_policies(evaluation, pack_config(stack))
    assert violations == [], "\n".join(f"{v.policy} {v.urn}: {v.message}" for v in violations)


def test_the_real_graphs_have_what_the_limits_rule_judges(prod_eval: mockrun.Evaluation) -> None:
    # Passing must not come from an empty graph: every cage has both containers and one limits command.
    claws = set(prod_eval.outputs["claws"])
    containers = prod_eval.by_type("docker:index/container:Container")
    # Hetzner hosts run systemd: each cage is a slice (`-` escaped, so no cage's slice holds another's).
    assert {r.inputs["cgroupParent"] for r in containers} == {cage_slice(c) for c in claws}
    assert {r.name for r in prod_eval.by_type("command:remote:Command")} >= {f"{c}-limits" for c in claws}


# --- a breach planted in a real graph is caught -------------------------------------------------------


def test_a_limits_command_moved_to_another_host_is_caught(prod_eval: mockrun.Evaluation) -> None:
    host_of = {claw: info["host"] for claw, info in prod_eval.outputs["claws"].items()}
    claw, other = next((a, b) for a in sorted(host_of) for b in sorted(host_of) if host_of[a] != host_of[b])
    moved = changed(prod_eval, f"{claw}-limits", connection=inputs_of(prod_eval, f"{other}-limits")["connection"])
    assert set(verdicts(moved)) == {("cage-limits-enforced", f"{claw}-limits")}


def test_a_container_in_another_cages_cgroup_is_caught(prod_eval: mockrun.Evaluation) -> None:
    bad = changed(prod_eval, "acme-support-proxy", cgroupParent="/clawstaff/globex-triage")
    assert sorted(verdicts(bad)) == [("cage-limits-enforced", "acme-support-proxy")]
    worse = changed(prod_eval, "acme-support-proxy", cgroupParent="/system.slice")
    assert sorted(verdicts(worse)) == [
        ("cage-limits-enforced", "acme-support-proxy"),
        ("container-cgroup-parent-confined", "acme-support-proxy"),
    ]


def test_real_limits_above_the_configured_ceiling_are_caught(prod_eval: mockrun.Evaluation) -> None:
    config = {**(pack_config("prod") or {}), "cage-limits-enforced": {"maxPids": 100}}
    found = {(v.policy, v.urn.rsplit("::", 1)[-1]) for v in check_policies(prod_eval, config)}
    assert found == {("cage-limits-enforced", f"{claw}-limits") for claw in prod_eval.outputs["claws"]}


def test_a_tampered_seal_and_a_proxy_mounting_the_key_are_caught(local_eval: mockrun.Evaluation) -> None:
    envs = inputs_of(local_eval, "acme-support-claw")["envs"]
    sealed = next(e for e in envs if e.startswith("CLAWCAGE_SEALED="))
    bad = changed(
        local_eval,
        "acme-support-claw",
        envs=[e.replace("clawcage-v1:", "clawcage-v0:") if e == sealed else e for e in envs],
    )
    mounts = inputs_of(local_eval, "acme-support-proxy")["mounts"]
    bad = changed(
        bad,
        "acme-support-proxy",
        mounts=mounts
        + [
            {"type": "bind", "source": "/run/clawstaff/cages/acme-support", "target": "/run/clawcage", "readOnly": True}
        ],
    )
    assert sorted(verdicts(bad)) == [
        ("container-env-no-plaintext-credentials", "acme-support-claw"),
        ("container-mounts-confined", "acme-support-proxy"),
    ]


# --- the fixture is a real cage -----------------------------------------------------------------------

# Inputs that depend on the claw's configuration or on secrets, not on the cage's shape.
VARIES = {
    "user",
    "image",
    "memory",
    "memorySwap",
    "cpus",
    "tmpfs./tmp",
    "stdin",
    "connection.host",
    "connection.hostKey",
}
SCRIPTS = {"create", "delete"}
CLAW_PROGRAM = "command"  # the claw's own program (config), absent when the image's CMD runs


def normalized(props: dict[str, Any]) -> Any:
    def walk(value: Any, path: str) -> Any:
        if path in VARIES:
            return "<varies>"
        if isinstance(value, dict):
            if value.get("label") == "clawstaff.config-sha256":
                return {**value, "value": "<sha256 of the proxy config>"}
            return {
                k: walk(v, f"{path}.{k}" if path else k)
                for k, v in value.items()
                if not (path == "" and k == CLAW_PROGRAM)
            }
        if isinstance(value, list):
            return [walk(v, path) for v in value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if path == "envs" and isinstance(value, str) and value.startswith("CLAWCAGE_SEALED=clawcage-v1:"):
                return "CLAWCAGE_SEALED=clawcage-v1:<sealed>"
            if path in SCRIPTS and isinstance(value, str):
                return re.sub(r"[0-9]+", "<n>", value)  # sizes, uids, limits
            return value
        return float(value)

    return walk(props, "")


def real_cage(evaluation: mockrun.Evaluation, claw: str) -> dict[str, tuple[str, Any]]:
    return {
        r.name: (r.type, normalized(unwrap_secrets(dict(r.inputs))))
        for r in evaluation.resources
        if r.custom and r.parent.endswith(f"{CAGE_TYPE}::{claw}")
    }


@pytest.mark.parametrize(
    ("stack", "claw"),
    [
        ("prod", "acme-support"),
        ("prod", "acme-finance-reports"),
        ("prod", "umbrella-research"),
        ("local", "acme-reports"),
        ("local", "globex-triage"),
    ],
)
def test_the_fixture_cage_is_shaped_like_a_real_one(
    stack: str, claw: str, prod_eval: mockrun.Evaluation, local_eval: mockrun.Evaluation
) -> None:
    evaluation = prod_eval if stack == "prod" else local_eval
    info = evaluation.outputs["claws"][claw]
    remote = evaluation.outputs["hosts"][info["host"]]["kind"] != "local"
    fixture = {
        name: (type_, normalized(props))
        for type_, name, props, _ in fx.cage(
            claw, info["org"], info["host"], volume=bool(info["volume"]), remote=remote
        )
    }
    real = real_cage(evaluation, claw)
    assert sorted((n, t) for n, (t, _) in fixture.items()) == sorted((n, t) for n, (t, _) in real.items())
    for name, (_, props) in real.items():
        assert fixture[name][1] == props, name


def test_the_fixture_host_is_shaped_like_a_real_one(
    prod_eval: mockrun.Evaluation, local_eval: mockrun.Evaluation
) -> None:
    for evaluation, host, local in ((prod_eval, "fsn1-cage-01", False), (local_eval, "laptop", True)):
        real = {
            r.name: (r.type, unwrap_secrets(dict(r.inputs)))
            for r in evaluation.resources
            if r.name in (f"{host}-docker", f"{host}-egress")
        }
        for type_, name, props, _ in fx.host_resources(host, local):
            real_type, real_props = real[name]
            assert type_ == real_type
            if "sshOpts" in real_props:  # a JSON list in the engine's provider inputs; address and key vary
                real_props = {**real_props, "sshOpts": json.loads(real_props["sshOpts"])}
                real_props["sshOpts"][5] = props["sshOpts"][5] = "KnownHostsCommand=/bin/echo <address> <key>"
                real_props["host"] = props["host"] = "ssh://root@<address>:22"
            assert props == real_props, name


# --- what a denylist misses, planted in the real graph, is refused by the allowlist ---------------------

# One variant per real cage resource (the kind a reviewer tries first); each must be refused, by the
# allowlist rule of that resource's table, through the pack's real entry point.
VARIANTS: list[tuple[str, str, Any]] = [
    ("claw", "envs", lambda v: [*v, "NO_PROXY=*"]),
    ("claw", "pidMode", lambda v: "container:proxy-acme-support"),
    ("claw", "securityOpts", lambda v: [*v, "label=disable"]),
    ("claw", "dnsSearches", lambda v: ["corp.example"]),
    ("claw", "groupAdds", lambda v: ["0"]),
    ("claw", "logOpts", lambda v: {**v, "mode": "non-blocking"}),
    ("proxy", "runtime", lambda v: "runsc"),
    ("proxy", "hosts", lambda v: [{"host": "api.anthropic.com", "ip": "203.0.113.9"}]),
    ("proxy", "mounts", lambda v: [{**v[0], "bindOptions": {"propagation": "rshared"}}]),
    ("proxy", "sysctls", lambda v: {**v, "net.ipv4.ping_group_range": "0 2147483647"}),
    ("network", "options", lambda v: {**v, "com.docker.network.bridge.name": "br-cage"}),
    ("network", "attachable", lambda v: True),
]
POLICY_OF_PART = {"claw": "claw-container-allowlist", "proxy": "proxy-container-allowlist"}


def test_variants_a_denylist_misses_are_refused_in_the_real_graph(prod_eval: mockrun.Evaluation) -> None:
    claws = sorted(prod_eval.outputs["claws"])
    planted, expected = prod_eval, set()
    for index, (part, key, change) in enumerate(VARIANTS):
        name = f"{claws[index % len(claws)]}-{part}"
        planted = changed(planted, name, **{key: change(inputs_of(prod_eval, name).get(key))})
        expected.add((POLICY_OF_PART.get(part, "cage-network-allowlist"), name))
    found = set(verdicts(planted))
    assert expected <= found, expected - found


# --- a stack with an audit sink ---------------------------------------------------------------------------

# The sink is hosts[] entries of tests/unit/test_audit_sink.py: a cloud one and a dedicated one.
CLOUD_SINK = {"name": "fsn1-trail", "kind": "cloud", "serverType": "cx22", "location": "fsn1", "role": "audit-sink"}
METAL_SINK = {"name": "hel1-trail", "kind": "dedicated", "address": "198.51.100.9", "cpus": 4, "memory": "16GiB",
              "disk": "2TB", "role": "audit-sink",
              "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJvwWEP6UecWtArTPY7gDywFZrAVocMQihvrvvYgNeDk"}  # fmt: skip


def with_sink(sink: dict[str, Any]) -> mockrun.Evaluation:
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    raw = {**raw, "clawstaff:hosts": [*raw["clawstaff:hosts"], sink]}
    with fixture_images_record():
        return mockrun.evaluate("prod", raw, secret_keys)


@pytest.fixture(scope="module")
def sink_evals() -> dict[str, mockrun.Evaluation]:
    return {"cloud": with_sink(CLOUD_SINK), "dedicated": with_sink(METAL_SINK)}


@pytest.mark.parametrize("kind", ["cloud", "dedicated"])
def test_a_stack_with_an_audit_sink_passes_every_policy(kind: str, sink_evals) -> None:
    evaluation = sink_evals[kind]
    name = CLOUD_SINK["name"] if kind == "cloud" else METAL_SINK["name"]
    # Passing must not come from a graph without the sink: its commands (and a cloud sink's server) are judged.
    judged = {r.name for r in evaluation.resources if r.custom and r.name.startswith(name)}
    assert {f"{name}-host-key", f"{name}-bootstrap", f"{name}-trail-certificates"} <= judged
    assert (f"{name}-server" in judged) == (kind == "cloud")
    violations = check_policies(evaluation, pack_config("prod"))
    assert violations == [], "\n".join(f"{v.policy} {v.urn}: {v.message}" for v in violations)


def test_a_breach_planted_on_the_sink_is_caught(sink_evals) -> None:
    evaluation = sink_evals["cloud"]
    rules = inputs_of(evaluation, "fsn1-trail-firewall")["rules"]
    opened = [*rules, {"direction": "in", "protocol": "tcp", "port": "19532", "sourceIps": ["0.0.0.0/0"]}]
    bad = changed(evaluation, "fsn1-trail-firewall", rules=opened)
    bad = changed(bad, "fsn1-trail-server", firewallIds=[])
    certificates = unwrap_secrets(inputs_of(evaluation, "fsn1-trail-trail-certificates"))
    # The sink's key pasted into the script instead of travelling on stdin.
    inlined = certificates["create"].replace(
        "umask 077\n", f"umask 077\ncat >/tmp/key <<'X'\n{certificates['stdin']}X\n"
    )
    bad = changed(bad, "fsn1-trail-trail-certificates", create=inlined)
    assert set(verdicts(bad)) == {
        ("hcloud-firewall-no-open-ingress", "fsn1-trail-firewall"),
        ("hcloud-server-firewall-attached", "fsn1-trail-server"),
        ("command-key-material-via-secrets", "fsn1-trail-trail-certificates"),
    }
