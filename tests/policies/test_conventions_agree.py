"""The pack restates the components' conventions instead of importing them; they must not drift apart."""

from __future__ import annotations

import pytest

import ast
import base64
import shlex
from decimal import Decimal
from pathlib import Path

import cage_conventions
import container_rules
import stack_rules
from components import cagehost, conventions, hostscripts, sealing

PACK = Path(__file__).resolve().parents[2] / "policies"

SHARED = [
    "LABEL_CLAW",
    "LABEL_ORG",
    "LABEL_HOST",
    "LABEL_ROLE",
    "ROLE_CLAW",
    "ROLE_PROXY",
    "ROLE_CAGE_NETWORK",
    "ROLE_EGRESS_NETWORK",
    "HOST_KEY_ROOT",
    "HOST_VOLUME_ROOT",
    "CAGE_KEY_MOUNT",
    "CAGE_VOLUME_MOUNT",
    "SEALED_ENV",
    "HOST_PROXY_CONFIG_ROOT",
    "PROXY_CONFIG_MOUNT",
    "CGROUP_ROOT",
    "LABEL_RUNTIME",
]


def test_the_pack_and_the_components_agree_on_names_labels_and_paths() -> None:
    for name in SHARED:
        assert getattr(cage_conventions, name) == getattr(conventions, name), name
    assert cage_conventions.CGROUP_ROOT == cagehost.CGROUP_ROOT


def test_the_pack_and_the_components_agree_on_the_runtimes() -> None:
    from components import runtimes

    assert cage_conventions.RUNTIME_INPUTS == {r: runtimes.docker_runtime(r) for r in runtimes.RUNTIMES}


def test_the_pack_and_the_components_agree_on_what_a_dns_label_is() -> None:
    samples = ["a", "acme-support", "0", "a" * 63, "a" * 64, "-a", "a-", "A", "a_b", "a.b", "", "x-1-y", "é"]
    for text in samples:
        assert bool(container_rules.CLAW_NAME.match(text)) == conventions.is_dns_label(text), text


def test_the_pack_knows_where_the_components_put_the_cages_host_state() -> None:
    claw = "acme-support"
    assert cage_conventions.CGROUP_DRIVERS == conventions.CGROUP_DRIVERS
    for driver in conventions.CGROUP_DRIVERS:
        assert cage_conventions.cgroup_parent(claw, driver) == cagehost.cgroup_parent(claw, driver)
        assert cage_conventions.cage_cgroup(claw, driver) == conventions.cage_cgroup(claw, driver)
    assert f"{cage_conventions.HOST_PROXY_CONFIG_ROOT}/{claw}" == cagehost.proxy_config_dir(claw)
    assert f"{cage_conventions.HOST_KEY_ROOT}/{claw}" == conventions.host_key_dir(claw)
    # cage.py mounts the key *directory* at the parent of CAGE_KEY_MOUNT.
    assert cage_conventions.CAGE_KEY_DIR_MOUNT == conventions.CAGE_KEY_MOUNT.rsplit("/", 1)[0]
    assert cagehost.volume_mount_path(claw).startswith(conventions.host_volume_dir(claw) + "/")


def test_the_pack_reads_the_sealed_format_the_components_write() -> None:
    assert cage_conventions.SEALED_PREFIX == sealing.FORMAT_PREFIX
    sealed = sealing.seal_credentials(bytes(range(64)), "acme-support", {})  # the smallest blob: "{}" sealed
    assert len(base64.b64decode(sealed.removeprefix(sealing.FORMAT_PREFIX))) >= cage_conventions.SEALED_MIN_BYTES


@pytest.mark.parametrize("driver", conventions.CGROUP_DRIVERS)
def test_the_pack_recognises_the_components_limits_scripts(driver: str) -> None:
    claw = "acme-support"
    create = cagehost.shell_command(
        cagehost.render_limits_create(claw, cpus=Decimal("1.25"), memory=1 << 30, pids=320, driver=driver)
    )
    delete = cagehost.shell_command(cagehost.render_limits_delete(claw, driver=driver))
    assert tuple(shlex.split(create)[:2]) == cage_conventions.LIMITS_SHELL
    assert stack_rules.limits_claws(create) == {claw} and stack_rules.limits_claws(delete) == {claw}
    assert list(stack_rules.limits_create_problems("create", create, claw, max_pids=320)) == []
    assert list(stack_rules.limits_delete_problems(delete, claw)) == []
    script = stack_rules.bash_script(create)
    assert script is not None
    for line in ("PIDS=320", f"MEMORY={1 << 30}", "CPU_QUOTA=125000", "CPU_PERIOD=100000"):
        assert line in script.splitlines()


@pytest.mark.parametrize("driver", conventions.CGROUP_DRIVERS)
def test_the_pack_reads_the_facts_line_the_renderer_writes(driver: str) -> None:
    claw = "acme-support"
    create = cagehost.render_limits_create(claw, cpus=Decimal("1.25"), memory=1 << 30, pids=320, driver=driver)
    delete = cagehost.render_limits_delete(claw, driver=driver)
    assert cage_conventions.FACTS_PREFIX == hostscripts.FACTS_PREFIX
    for script, name in (
        (create, cage_conventions.LIMITS_CREATE_SCRIPT),
        (delete, cage_conventions.LIMITS_DELETE_SCRIPT),
    ):
        facts, problem = stack_rules.script_facts(script)
        assert problem is None and facts == hostscripts.script_facts(script)
        assert facts["script"] == name and facts["claw"] == claw
        assert facts[cage_conventions.LIMITS_CGROUP_FACT] == conventions.cage_cgroup(claw, driver)
        assert facts[cage_conventions.LIMITS_DRIVER_FACT] == driver
    header = hostscripts.header_variables(create)
    facts = hostscripts.script_facts(create)
    assert set(cage_conventions.LIMITS_FACTS) == set(cage_conventions.LIMITS_VARS)
    for var, key in cage_conventions.LIMITS_FACTS.items():
        assert header[var] == str(facts[key]), var
    assert header[cage_conventions.LIMITS_CGROUP_VAR] == facts[cage_conventions.LIMITS_CGROUP_FACT]
    assert header[cage_conventions.LIMITS_DRIVER_VAR] == driver


def test_the_pack_imports_nothing_from_the_program() -> None:
    for module in PACK.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] in ("components", "tools", "tests") for n in names), (module, names)


def test_the_pack_and_the_components_agree_on_what_the_allowlist_names() -> None:
    from components import cage, egress

    for name in ("CAGE_BRIDGE_PREFIX", "EGRESS_BRIDGE_PREFIX", "EGRESS_SUBNET", "EGRESS_GATEWAY", "PROXY_ALIAS"):
        assert getattr(cage_conventions, name) == getattr(conventions, name), name
    assert cage_conventions.RESERVED_ENV_PREFIX == conventions.RESERVED_ENV_PREFIX
    assert cage_conventions.PROXY_PORT == egress.PROXY_PORT
    assert cage_conventions.CLAW_ENV == sealing.CLAW_ENV
    assert list(cage_conventions.CAGE_DNS) == cage.CAGE_DNS
    assert (cage_conventions.CLAW_HOME, cage_conventions.CLAW_WORKDIR) == (cage.CLAW_HOME, cage.CLAW_WORKDIR)
    pieces = {p.name.removesuffix("-create.sh") for p in Path(hostscripts.__file__).parent.glob("*-create.sh")}
    deletes = {p.name.removesuffix("-delete.sh") for p in Path(hostscripts.__file__).parent.glob("*-delete.sh")}
    assert set(cage_conventions.CAGE_SCRIPT_PIECES) == pieces == deletes


def test_the_projects_seccomp_profile_refuses_what_the_pack_requires_refused() -> None:
    import json

    from components import seccomp

    profile = json.loads(seccomp.security_opt().split("=", 1)[1])
    allowed = {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
    assert not allowed & set(cage_conventions.SECCOMP_REFUSED)


def test_the_pack_names_the_resources_as_the_real_program_does(prod_eval) -> None:
    claws = prod_eval.outputs["claws"]
    names = {(r.type, r.inputs.get("name")) for r in prod_eval.resources if "name" in r.inputs}
    for claw, info in claws.items():
        for type_, template in (
            (cage_conventions.CONTAINER, cage_conventions.CLAW_CONTAINER_NAME),
            (cage_conventions.CONTAINER, cage_conventions.PROXY_CONTAINER_NAME),
            (cage_conventions.NETWORK, cage_conventions.CAGE_NETWORK_NAME),
            (cage_conventions.NETWORK, cage_conventions.EGRESS_NETWORK_NAME),
        ):
            assert (type_, template.format(claw=claw, host=info["host"])) in names, template
    proxies = [r for r in prod_eval.by_type(cage_conventions.CONTAINER) if r.name.endswith("-proxy")]
    assert proxies and all(
        cage_conventions.LABEL_CONFIG_SHA256 in {lb["label"] for lb in r.inputs["labels"]} for r in proxies
    )
    networks = prod_eval.by_type(cage_conventions.NETWORK)
    assert networks and all(cage_conventions.BRIDGE_NAME_OPTION in r.inputs["options"] for r in networks)
    claw_envs = [r.inputs["envs"] for r in prod_eval.by_type(cage_conventions.CONTAINER) if r.name.endswith("-claw")]
    for envs in claw_envs:
        assert {e.split("=", 1)[0] for e in envs} >= set(cage_conventions.PROXY_ENV_NAMES)
