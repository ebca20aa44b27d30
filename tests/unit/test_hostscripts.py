"""The host-side scripts as files: the renderer's contract, and the linters over the files and over every
script the two stacks render (shellcheck for bash, ruff for the Python helper).

shellcheck and ruff are real tools: outside CI a missing one skips its test, in CI (CI=true) it fails.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shlex
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from components import cagehost, hostscripts
from tests.conftest import IN_CI, ROOT, require_tool
from tools import mockrun

FOLDER = ROOT / "components" / "hostscripts"
# In a rendered script the header holds quoted data (a unit file, an apt config with `${distro_codename}`):
# SC2016 ("expressions don't expand in single quotes") is what the header wants. The files themselves are
# linted with every check.
RENDERED_EXCLUDES = "SC2016"


def shellcheck(paths: list[Path], *excludes: str) -> None:
    argv = [require_tool("shellcheck"), "--shell=bash", "--severity=style", "--format=gcc"]
    if excludes:
        argv.append("--exclude=" + ",".join(excludes))
    result = subprocess.run([*argv, *map(str, paths)], capture_output=True, text=True)
    assert result.returncode == 0, f"shellcheck finds problems:\n{result.stdout}{result.stderr}"


def require_ruff() -> list[str]:
    """`python -m ruff` (requirements-dev.txt pins it): in CI a missing ruff fails, elsewhere it skips."""
    if importlib.util.find_spec("ruff") is None:
        if IN_CI:
            pytest.fail("ruff is not installed: CI installs requirements-dev.txt (make venv)")
        pytest.skip("ruff is not installed here (pip install -r requirements-dev.txt)")
    return [sys.executable, "-m", "ruff"]


# --- the files ------------------------------------------------------------------------------------------


def test_every_script_and_library_is_a_file_of_the_folder() -> None:
    files = set(hostscripts.scripts())
    used = set(hostscripts.LIBRARIES) | {lib for libs in hostscripts.LIBRARIES.values() for lib in libs}
    assert used == files, f"unused files {sorted(files - used)}, missing files {sorted(used - files)}"
    for name in files:
        text = (FOLDER / name).read_text()
        assert text.startswith("# shellcheck shell=bash\n"), name  # no shebang: the renderer writes it
        assert "set -x" not in text, name  # tracing would print secrets


def test_shellcheck_passes_on_every_file() -> None:
    shellcheck([FOLDER / name for name in hostscripts.scripts()])


def test_ruff_passes_on_the_python_helper() -> None:
    ruff = require_ruff()
    helper = FOLDER / hostscripts.FSCRYPT_HELPER
    result = subprocess.run([*ruff, "check", "--no-cache", str(helper)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"ruff finds problems:\n{result.stdout}{result.stderr}"


def test_the_helper_is_stdlib_only_python() -> None:
    tree = ast.parse(hostscripts.fscrypt_helper())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported and imported <= set(sys.stdlib_module_names), imported


def test_no_shell_or_python_program_is_left_in_a_python_string() -> None:
    """The scripts live in files: no string constant in components/ looks like one."""
    for module in (ROOT / "components").rglob("*.py"):
        if module.parent == FOLDER and module.name == hostscripts.FSCRYPT_HELPER:
            continue
        tree = ast.parse(module.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "\n" in node.value
                and id(node) not in docstrings
            ):
                text = node.value
                assert not any(
                    marker in text for marker in ("#!/bin/bash", "set -euo pipefail", "\nimport ", "fcntl.ioctl")
                ), (module, text[:80])


# --- the renderer's contract ------------------------------------------------------------------------------


def test_a_rendered_script_is_the_header_then_the_files_verbatim() -> None:
    text = hostscripts.render_script(
        "key-delete.sh",
        title="key of cage a1",
        facts={"claw": "a1"},
        CLAW="a1",
        PIECE="key",
        DIR="/run/clawstaff/cages/a1 b",
    )
    lines = text.splitlines()
    assert lines[:4] == [
        "#!/bin/bash",
        ("# clawstaff key of cage a1: rendered from components/hostscripts/key-delete.sh; safe to run again."),
        "set -euo pipefail",
        '# clawcage-facts: {"claw": "a1", "script": "key-delete"}',
    ]
    assert lines[4:7] == ["CLAW=a1", "PIECE=key", "DIR='/run/clawstaff/cages/a1 b'"]
    body = "".join((FOLDER / name).read_text() for name in (*hostscripts.LIBRARIES["key-delete.sh"], "key-delete.sh"))
    assert text == "\n".join(lines[:7]) + "\n" + body
    assert hostscripts.header_variables(text) == {"CLAW": "a1", "PIECE": "key", "DIR": "/run/clawstaff/cages/a1 b"}
    assert hostscripts.script_facts(text) == {"claw": "a1", "script": "key-delete"}


def test_readonly_headers_and_values_that_need_quoting_round_trip() -> None:
    value = 'it\'s $HOME `id` \\ "x"\nsecond line\n'
    text = hostscripts.render_script(
        "bootstrap.sh", title="t", readonly=True, HOST_NAME="h", AUTHORIZED_KEYS=value, DOCKER_VERSION=7
    )
    assert "\nreadonly HOST_NAME=h\n" in text and "\nreadonly DOCKER_VERSION=7\n" in text
    assert hostscripts.header_variables(text) == {"HOST_NAME": "h", "AUTHORIZED_KEYS": value, "DOCKER_VERSION": "7"}
    header = text.split("# shellcheck shell=bash")[0]
    out = subprocess.run(
        ["bash", "-c", header + 'printf %s "$AUTHORIZED_KEYS"'], capture_output=True, text=True, check=True
    )
    assert out.stdout == value  # bash reads back exactly the value: nothing in it expanded


@pytest.mark.parametrize("name", ["lower", "PATH", "IFS", "BASH_ENV", "UID", "LD_PRELOAD", "1X", "A-B", "A B", ""])
def test_header_variable_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match="not a header variable name"):
        hostscripts.render_script("key-delete.sh", title="t", **{name: "x"})


@pytest.mark.parametrize("value", [True, None, 1.5, b"x", ["x"], "a\x00b"])
def test_header_values_are_strings_or_integers(value: object) -> None:
    with pytest.raises(ValueError, match="header variable DIR"):
        hostscripts.render_script("key-delete.sh", title="t", DIR=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope.sh", "title": "t"}, "not a host script"),
        ({"name": "../hostconfig.py", "title": "t"}, "not a host script"),
        ({"name": "key-delete.sh", "title": "two\nlines"}, "one printable line"),
        ({"name": "key-delete.sh", "title": ""}, "one printable line"),
        ({"name": "key-delete.sh", "title": "t", "facts": {"script": "other"}}, "may not set `script`"),
    ],
)
def test_the_renderer_refuses_what_it_cannot_write_safely(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hostscripts.render_script(**kwargs)


def test_a_script_without_one_facts_line_has_no_facts() -> None:
    text = cagehost.render_key_delete("acme-support")
    facts_line = next(line for line in text.splitlines() if line.startswith(hostscripts.FACTS_PREFIX))
    with pytest.raises(ValueError, match="0 facts lines"):
        hostscripts.script_facts(text.replace(facts_line + "\n", ""))
    with pytest.raises(ValueError, match="2 facts lines"):
        hostscripts.script_facts(text + facts_line + "\n")
    assert json.loads(facts_line.removeprefix(hostscripts.FACTS_PREFIX)) == {
        "claw": "acme-support",
        "script": "key-delete",
    }


def test_the_cage_scripts_carry_their_facts() -> None:
    create = cagehost.render_limits_create(
        "acme-support", cpus=Decimal("1.25"), memory=1 << 30, pids=320, driver="systemd"
    )
    assert hostscripts.script_facts(create) == {
        "script": "limits-create",
        "claw": "acme-support",
        "driver": "systemd",
        "cgroup": "clawstaff.slice/clawstaff-acme\\x2dsupport.slice",
        "pids": 320,
        "memory": 1 << 30,
        "cpu_quota": 125_000,
        "cpu_period": 100_000,
    }
    volume = cagehost.render_volume_create("acme-support", size=64 << 20, uid=65532)
    assert hostscripts.script_facts(volume) == {
        "script": "volume-create", "claw": "acme-support", "size": 64 << 20, "sandbox_walk": False
    }  # fmt: skip
    assert hostscripts.header_variables(volume)["FSCRYPT_PY"] == hostscripts.fscrypt_helper()


# --- every script of both stacks, as rendered ---------------------------------------------------------------


def stack_scripts(evaluation: mockrun.Evaluation) -> dict[str, str]:
    """Every bash script the stack's commands run: `/bin/bash -c '<script>'` creates and deletes, scripts
    given as they are (`#!/bin/bash`), and a script that arrives on stdin (the bootstrap)."""
    found: dict[str, str] = {}
    for resource in evaluation.resources:
        if not resource.type.startswith("command:"):
            continue
        inputs = mockrun.unwrap_secrets(dict(resource.inputs))
        for field in ("create", "update", "delete", "stdin"):
            value = inputs.get(field)
            if not isinstance(value, str):
                continue
            if value.startswith("/bin/bash -c "):
                argv = shlex.split(value)
                assert len(argv) == 3, (resource.name, field)
                found[f"{resource.name}.{field}"] = argv[2]
            elif value.startswith("#!/bin/bash\n"):
                found[f"{resource.name}.{field}"] = value
    return found


@pytest.mark.parametrize("stack", ["prod", "local"])
def test_shellcheck_passes_on_every_script_the_stack_renders(stack: str, prod_eval, local_eval, tmp_path: Path) -> None:
    scripts = stack_scripts(prod_eval if stack == "prod" else local_eval)
    kinds = {name.rsplit("-", 1)[-1] for name in scripts}
    assert {
        "limits.create",
        "limits.delete",
        "key.create",
        "key.delete",
        "config.create",
        "config.delete",
        "volume.create",
        "volume.delete",
    } <= kinds, kinds
    if stack == "prod":
        assert {"bootstrap.stdin", "key.create"} <= kinds and any(n.endswith("-host-key.create") for n in scripts)
    paths = []
    for name, text in sorted(scripts.items()):
        assert hostscripts.script_facts(text)["script"], name  # every one carries its facts line
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        paths.append(path)
    shellcheck(paths, RENDERED_EXCLUDES)
