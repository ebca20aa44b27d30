"""The pack as the Pulumi CLI and Pulumi Cloud take it: project file and version, its own pinned
requirements, the JSON schema of its config (and the stacks' configs valid against it), a self-contained
copy for `pulumi policy publish`, and the README's publishing steps."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import yaml

import config_schema
from tests.conftest import ROOT
from tests.policies.conftest import PACK_DIR
from tests.policies.test_policyrun import resources
from tools.policy_bundle import bundle
from tools.policyrun import run_policy_pack

PROJECT = yaml.safe_load((PACK_DIR / "PulumiPolicy.yaml").read_text())


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not pinned with =="
            found[name.lower()] = version
    return found


def test_the_project_file_names_the_pack_its_version_and_runtime() -> None:
    main = (PACK_DIR / "__main__.py").read_text()
    assert PROJECT["name"] == "clawcage-isolation" and f'name="{PROJECT["name"]}"' in main
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", str(PROJECT["version"]))
    assert PROJECT["runtime"]["name"] == "python"


def test_the_packs_requirements_are_pinned_like_the_programs() -> None:
    pack, program = pins(PACK_DIR / "requirements.txt"), pins(ROOT / "requirements.txt")
    assert {"pulumi", "pulumi-policy"} <= set(pack)
    for name, version in pack.items():
        assert program.get(name) == version, name


def test_the_pack_imports_only_the_standard_library_itself_and_what_it_requires() -> None:
    own = {p.stem for p in PACK_DIR.glob("*.py")}
    required = {name.replace("-", "_") for name in pins(PACK_DIR / "requirements.txt")}
    for module in PACK_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in own or top in required, (module.name, name)


def test_the_config_schema_is_current() -> None:
    committed = json.loads((PACK_DIR / "config.schema.json").read_text())
    assert committed == config_schema.schema(), "policies/config.schema.json is stale: run `make policy-schema`"


def test_every_stack_config_is_valid_against_the_schema() -> None:
    schema = json.loads((PACK_DIR / "config.schema.json").read_text())
    files = sorted((PACK_DIR / "config").glob("*.json"))
    assert {f.stem for f in files} >= {"prod", "local"}
    for path in files:
        assert config_schema.validate(json.loads(path.read_text()), schema) == [], path.name


def test_the_schema_refuses_what_the_cli_refuses() -> None:
    schema = config_schema.schema()
    for bad, expected in [
        ({"no-such-policy": "advisory"}, "'no-such-policy' is not allowed"),
        ({"container-memory-limited": {"maxMemory": 1}}, "'maxMemory' is not allowed"),
        ({"container-memory-limited": {"maxMemoryMb": "lots"}}, '"lots" is not of type integer'),
        ({"container-not-privileged": "sometimes"}, "is not one of"),
        ({"container-image-pinned": {"allowedRegistries": [1]}}, "is not of type string"),
    ]:
        problems = config_schema.validate(bad, schema)
        assert any(expected in p for p in problems), (bad, problems)
    assert config_schema.validate({"all": "advisory", "cage-limits-enforced": {"maxPids": 100}}, schema) == []


def test_every_policys_defaults_are_valid_config() -> None:
    schema = config_schema.schema()
    for name, spec in schema["properties"].items():
        settings = spec["oneOf"][1]["properties"] if "oneOf" in spec else {}
        defaults = {k: v["default"] for k, v in settings.items() if "default" in v}
        assert config_schema.validate({name: defaults}, schema) == [], name


def test_the_bundle_for_publishing_is_self_contained_and_passes_the_compliant_fleet(tmp_path: Path) -> None:
    out = bundle(tmp_path / "policy-pack")
    project = yaml.safe_load((out / "PulumiPolicy.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"virtualenv": "venv"}}
    assert project["version"] == PROJECT["version"] and project["name"] == PROJECT["name"]
    assert (out / "requirements.txt").read_text() == (PACK_DIR / "requirements.txt").read_text()
    assert run_policy_pack(resources(), pack_dir=out) == []


def test_the_readme_says_how_to_publish_and_enable_this_version() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "pulumi policy publish" in readme
    assert f"pulumi policy enable <org>/clawcage-isolation {PROJECT['version']}" in readme


def test_every_file_of_the_pack_stays_readable() -> None:
    for module in PACK_DIR.glob("*.py"):
        assert len(module.read_text().splitlines()) <= 500, f"{module.name}: split it by rule area"
