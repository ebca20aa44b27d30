"""ClawCage under Pulumi's mocks, on the real stacks: every property of the README's isolation contract
that the program emits, checked on the resources registered for every claw of prod and local."""

from __future__ import annotations

import pytest
from pulumi.runtime import rpc

from components import cagehost, seccomp
from components.config import load_stack_file, parse_stack_config
from components.hostconfig import cgroup_driver
from components.conventions import CAGE_KEY_MOUNT, LABEL_CLAW, LABEL_ORG, LABEL_ROLE, SEALED_ENV, host_key_dir
from components.sealing import derive_cage_key, open_credentials
from tests.conftest import ROOT, evaluate_stack, fixture_images_record
from tools import mockrun

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
COMMANDS = ("command:local:Command", "command:remote:Command")


def _config(stack):
    # The module-scoped fixture runs before the autouse images-record fixture: use the fixed record here too.
    with fixture_images_record():
        raw, secret_keys = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
        return parse_stack_config(raw, stack=stack, secret_keys=secret_keys)


@pytest.fixture(scope="module", params=["prod", "local"])
def stack(request):
    return request.param, evaluate_stack(request.param), _config(request.param)


def _cage(evaluation, claw):
    (component,) = [r for r in evaluation.by_type("clawstaff:fleet:ClawCage") if r.name == claw]
    return {r.name.removeprefix(f"{claw}-"): r for r in evaluation.resources if r.parent == component.urn}


def _labels(resource):
    return {item["label"]: item["value"] for item in resource.inputs.get("labels", [])}


def _env(container):
    return dict(e.split("=", 1) for e in container.inputs["envs"])


def test_every_claw_has_exactly_its_cage(stack):
    _, evaluation, config = stack
    for claw in config.claws:
        children = _cage(evaluation, claw.name)
        expected = (
            {"network", "proxy", "claw", "limits", "key", "proxy-config", "audit"}
            | ({"volume"} if claw.volume else set())
            | ({"broker", "broker-state"} if claw.broker else set())  # brokered secrets: tests/unit/test_broker.py
        )
        assert set(children) == expected, claw.name


def test_cage_network_is_internal_with_only_claw_and_proxy(stack):
    _, evaluation, config = stack
    containers = evaluation.by_type(CONTAINER)
    for claw in config.claws:
        cage = _cage(evaluation, claw.name)
        network = cage["network"].inputs
        assert network["internal"] is True and network["ipv6"] is False
        members = [c for c in containers if any(n["name"] == network["name"] for n in c.inputs["networksAdvanced"])]
        own = [f"{claw.name}-claw", f"{claw.name}-proxy"] + ([f"{claw.name}-broker"] if claw.broker else [])
        assert sorted(c.name for c in members) == sorted(own)
        assert [n["name"] for n in cage["claw"].inputs["networksAdvanced"]] == [network["name"]]


@pytest.mark.parametrize("role", ["claw", "proxy"])
def test_containers_are_hardened(stack, role):
    _, evaluation, config = stack
    (driver,) = {cgroup_driver(h.kind) for h in config.hosts}  # local: cgroupfs; cloud and dedicated: systemd
    uids = set()
    for claw in config.claws:
        c = _cage(evaluation, claw.name)[role].inputs
        assert c["readOnly"] is True
        assert c["capabilities"] == {"drops": ["ALL"], "adds": []}
        assert c["securityOpts"] == ["no-new-privileges:true", seccomp.security_opt()]
        assert c["privileged"] is False
        assert c["init"] is (role == "proxy")  # the claw's pid 1 is the image's cage-init
        assert c["restart"] == "on-failure" and 0 < c["maxRetryCount"] <= 5
        assert c["memory"] == c["memorySwap"] > 0
        assert float(c["cpus"]) > 0
        assert c["cgroupParent"] == cagehost.cgroup_parent(claw.name, driver)
        assert all(k not in c for k in ("networkMode", "pidMode", "usernsMode", "ports", "devices", "publishAllPorts"))
        assert c["ipcMode"] == "private"
        for options in c["tmpfs"].values():
            assert {"noexec", "nosuid", "nodev"} <= set(options.split(",")) and "size=" in options
        user, group = c["user"].split(":")
        assert user == group and int(user) >= 10000
        uids.add(int(user))
        assert c["logDriver"] == "json-file" and {"max-size", "max-file"} <= set(c["logOpts"])
        labels = _labels(_cage(evaluation, claw.name)[role])
        assert labels[LABEL_CLAW] == claw.name and labels[LABEL_ORG] == claw.org and labels[LABEL_ROLE] == role
    assert len(uids) == len(config.claws) or len({h for h in config.hosts}) > 1  # distinct per host


def test_claw_memory_and_cpus_are_the_configured_limits(stack):
    _, evaluation, config = stack
    for claw in config.claws:
        c = _cage(evaluation, claw.name)["claw"].inputs
        assert c["memory"] * 1024**2 >= claw.memory and float(c["cpus"]) == float(claw.cpus)
        assert f"size={claw.tmpfs}" in c["tmpfs"]["/tmp"]


def test_claw_cannot_resolve_outside_names_and_goes_through_its_proxy(stack):
    _, evaluation, config = stack
    for claw in config.claws:
        c = _cage(evaluation, claw.name)["claw"].inputs
        assert c["dns"] == ["127.0.0.1"]
        via = "egress-broker" if claw.broker else "egress-proxy"  # the broker's way out is the same proxy
        assert _env(_cage(evaluation, claw.name)["claw"])["HTTPS_PROXY"] == f"http://{via}:3128"
        proxy_networks = _cage(evaluation, claw.name)["proxy"].inputs["networksAdvanced"]
        assert proxy_networks[0]["aliases"] == ["egress-proxy"]


def test_only_ciphertext_reaches_the_container_and_it_opens_with_the_cage_key_only(stack):
    _, evaluation, config = stack
    for claw in config.claws:
        env = _env(_cage(evaluation, claw.name)["claw"])
        secrets = config.claw_secrets.get(claw.name, {})
        for value in secrets.values():
            assert all(value not in e for e in env.values())
        opened = open_credentials(derive_cage_key(config.sealing_key, claw.name), claw.name, env[SEALED_ENV])
        brokered = {b.name for b in claw.broker}  # sealed for the claw as placeholders (tests/unit/test_broker.py)
        assert {k: v for k, v in opened.items() if k not in brokered} == {
            k: v for k, v in secrets.items() if k not in brokered
        }
        assert all(opened[n] != secrets[n] for n in brokered)
        other = next((c for c in config.claws if c.name != claw.name), None)
        if other:
            with pytest.raises(Exception):  # noqa: B017 (any failure to open will do)
                open_credentials(derive_cage_key(config.sealing_key, other.name), claw.name, env[SEALED_ENV])


def test_key_reaches_the_host_only_as_secret_stdin_and_the_claw_alone_mounts_it(stack):
    _, evaluation, config = stack
    for claw in config.claws:
        cage = _cage(evaluation, claw.name)
        key = cage["key"].inputs
        assert rpc.is_rpc_secret(key["stdin"])
        key_text = rpc.unwrap_rpc_secret(key["stdin"]).strip()
        assert key_text not in key["create"] and key_text not in key["delete"]
        mounts = cage["claw"].inputs["mounts"]
        assert {
            "type": "bind",
            "source": host_key_dir(claw.name),
            "target": CAGE_KEY_MOUNT.rsplit("/", 1)[0],
            "readOnly": True,
        } in mounts
        assert all(m["source"] != host_key_dir(claw.name) for m in cage["proxy"].inputs["mounts"])
        if claw.volume:
            assert rpc.is_rpc_secret(cage["volume"].inputs["stdin"])
            assert {
                "type": "bind",
                "source": cagehost.volume_mount_path(claw.name),
                "target": "/data",
                "readOnly": False,
            } in mounts


def test_every_host_command_has_an_idempotent_delete_and_runs_before_the_containers(stack):
    _, evaluation, config = stack
    for claw in config.claws:
        cage = _cage(evaluation, claw.name)
        for name, resource in cage.items():
            if resource.type in COMMANDS:
                assert resource.inputs["delete"].startswith("/bin/bash -c "), name
                assert resource.urn in cage["claw"].dependencies or name in ("proxy-config", "broker-state")
        assert cage["limits"].urn in cage["proxy"].dependencies
        assert cage["proxy-config"].urn in cage["proxy"].dependencies
        # The audit rules watch the volume's reads: loaded once it is mounted, before the claw starts.
        if claw.volume:
            assert cage["volume"].urn in cage["audit"].dependencies
        if claw.broker:
            assert cage["broker-state"].urn in cage["broker"].dependencies
            assert cage["broker"].urn in cage["claw"].dependencies


def test_no_plaintext_secret_anywhere_in_the_plan(stack, tmp_path):
    """The preview's JSON carries neither the sealing key nor any claw secret, at any depth."""
    from tools.preview import build_plan
    import json

    name, evaluation, config = stack
    text = json.dumps(build_plan(evaluation, []))
    assert config.sealing_key not in text
    for values in config.claw_secrets.values():
        for value in values.values():
            assert value not in text


def test_unchanged_config_gives_identical_resources():
    """AES-SIV sealing is deterministic: two evaluations register byte-identical inputs (no diff)."""
    first, second = evaluate_stack("local"), evaluate_stack("local")

    def inputs(evaluation):
        return {r.urn: mockrun.mask_secrets(r.inputs) for r in evaluation.resources}

    assert inputs(first) == inputs(second)
    assert len(inputs(first)) == len(first.resources)


def test_the_claw_trusts_no_writable_home_or_working_directory(stack):
    # attack-findings issue, finding 6: Python runs code from HOME's user site and, for `-c`, from
    # the working directory; neither may be the claw's writable /tmp, and the health check is isolated.
    _, evaluation, config = stack
    for claw in config.claws:
        c = _cage(evaluation, claw.name)["claw"].inputs
        assert "HOME=/nonexistent" in c["envs"] and c["workingDir"] == "/"
        assert c["healthcheck"]["tests"][:3] == ["CMD", "/usr/bin/python3", "-I"]
