"""The pack restates the components' conventions instead of importing them; they must not drift apart."""

from __future__ import annotations

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
]


def test_the_pack_and_the_components_agree_on_names_labels_and_paths() -> None:
    for name in SHARED:
        assert getattr(cage_conventions, name) == getattr(conventions, name), name
    assert cage_conventions.CGROUP_ROOT == cagehost.CGROUP_ROOT


def test_the_pack_and_the_components_agree_on_what_a_dns_label_is() -> None:
    samples = ["a", "acme-support", "0", "a" * 63, "a" * 64, "-a", "a-", "A", "a_b", "a.b", "", "x-1-y", "é"]
    for text in samples:
        assert bool(container_rules.CLAW_NAME.match(text)) == conventions.is_dns_label(text), text


def test_the_pack_knows_where_the_components_put_the_cages_host_state() -> None:
    claw = "acme-support"
    assert cage_conventions.cgroup_parent(claw) == cagehost.cgroup_parent(claw)
    assert f"{cage_conventions.HOST_PROXY_CONFIG_ROOT}/{claw}" == cagehost.proxy_config_dir(claw)
    assert f"{cage_conventions.HOST_KEY_ROOT}/{claw}" == conventions.host_key_dir(claw)
    # cage.py mounts the key *directory* at the parent of CAGE_KEY_MOUNT.
    assert cage_conventions.CAGE_KEY_DIR_MOUNT == conventions.CAGE_KEY_MOUNT.rsplit("/", 1)[0]
    assert cagehost.volume_mount_path(claw).startswith(conventions.host_volume_dir(claw) + "/")


def test_the_pack_reads_the_sealed_format_the_components_write() -> None:
    assert cage_conventions.SEALED_PREFIX == sealing.FORMAT_PREFIX
    sealed = sealing.seal_credentials(bytes(range(64)), "acme-support", {})  # the smallest blob: "{}" sealed
    assert len(base64.b64decode(sealed.removeprefix(sealing.FORMAT_PREFIX))) >= cage_conventions.SEALED_MIN_BYTES


def test_the_pack_recognises_the_components_limits_scripts() -> None:
    claw = "acme-support"
    create = cagehost.shell_command(cagehost.render_limits_create(claw, cpus=Decimal("1.25"), memory=1 << 30, pids=320))
    delete = cagehost.shell_command(cagehost.render_limits_delete(claw))
    assert tuple(shlex.split(create)[:2]) == cage_conventions.LIMITS_SHELL
    assert stack_rules.limits_claws(create) == {claw} and stack_rules.limits_claws(delete) == {claw}
    assert list(stack_rules.limits_create_problems("create", create, claw, max_pids=320)) == []
    assert list(stack_rules.limits_delete_problems(delete, claw)) == []
    script = stack_rules.bash_script(create)
    assert script is not None
    for line in ("PIDS=320", f"MEMORY={1 << 30}", "CPU_QUOTA=125000", "CPU_PERIOD=100000"):
        assert line in script.splitlines()


def test_the_pack_reads_the_facts_line_the_renderer_writes() -> None:
    claw = "acme-support"
    create = cagehost.render_limits_create(claw, cpus=Decimal("1.25"), memory=1 << 30, pids=320)
    delete = cagehost.render_limits_delete(claw)
    assert cage_conventions.FACTS_PREFIX == hostscripts.FACTS_PREFIX
    for script, name in (
        (create, cage_conventions.LIMITS_CREATE_SCRIPT),
        (delete, cage_conventions.LIMITS_DELETE_SCRIPT),
    ):
        facts, problem = stack_rules.script_facts(script)
        assert problem is None and facts == hostscripts.script_facts(script)
        assert facts["script"] == name and facts["claw"] == claw
        assert facts[cage_conventions.LIMITS_CGROUP_FACT] == cagehost.cgroup_parent(claw).lstrip("/")
    header = hostscripts.header_variables(create)
    facts = hostscripts.script_facts(create)
    assert set(cage_conventions.LIMITS_FACTS) == set(cage_conventions.LIMITS_VARS)
    for var, key in cage_conventions.LIMITS_FACTS.items():
        assert header[var] == str(facts[key]), var
    assert header[cage_conventions.LIMITS_CGROUP_VAR] == facts[cage_conventions.LIMITS_CGROUP_FACT]


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
