"""The offline preview end to end: the real program, the real policy pack over gRPC, the plan and the
exit codes of tools/preview.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

UNSAFE = ROOT / "tests" / "fixtures" / "unsafe_program.py"


def run_preview(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tools.preview", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("stack", ["prod", "local"])
def test_project_stacks_preview_clean_with_the_plan_of_design_section_5(stack, tmp_path):
    plan_file = tmp_path / "plan.json"
    result = run_preview("--stack", stack, "--json", str(plan_file))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    plan = json.loads(plan_file.read_text())
    assert set(plan) == {"stack", "resources", "placement", "violations", "summary"}
    assert plan["stack"] == stack and plan["violations"] == []
    for resource in plan["resources"]:
        assert {"urn", "type", "name", "parent", "inputs"} <= set(resource)
    assert plan["summary"]["resources"] == len(plan["resources"])
    assert "policy: clean" in result.stdout
    # Secret values never leave the preview: the placeholders it runs with are masked everywhere.
    assert "[secret:" not in plan_file.read_text() and "[secret:" not in result.stdout
    assert '"[secret]"' in plan_file.read_text()


def test_two_runs_write_byte_identical_plans(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert run_preview("--stack", "prod", "--json", str(first)).returncode == 0
    assert run_preview("--stack", "prod", "--json", str(second)).returncode == 0
    assert first.read_bytes() == second.read_bytes()


def test_unsafe_program_is_refused_and_every_unsafe_thing_is_named(tmp_path):
    plan_file = tmp_path / "unsafe.json"
    result = run_preview("--stack", "prod", "--program", str(UNSAFE), "--json", str(plan_file))
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "REFUSED" in result.stdout
    found = {(v["policy"], v["urn"].rsplit("::", 1)[-1]) for v in json.loads(plan_file.read_text())["violations"]}
    expected = {
        ("container-not-privileged", "privileged"),
        ("container-mounts-confined", "hostmount"),
        ("container-env-no-plaintext-credentials", "plaintext"),
        ("shared-network-icc-off", "shared"),
        ("hcloud-firewall-no-open-ingress", "open"),
    }
    assert expected <= found, expected - found
    # A container on a network shared with other cages' containers.
    assert ("cage-network-shared-only-with-own-proxy", "privileged") in found


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda text: text.replace("memory: 256MiB", "memory: 256 MiBs", 1), "clawstaff:claws[0].memory"),
        (lambda text: text.replace("cpus: 0.25", "cpus: -1", 1), "clawstaff:claws[0].cpus"),
        (
            lambda text: text.replace(
                "egress: [api.anthropic.com:443, slack.com:443]",
                "egress: [https://api.anthropic.com, slack.com:443]",
                1,
            ),
            "clawstaff:claws[0].egress[0]",
        ),
        (lambda text: text.replace("config:\n", "config:\n  clawstaff:colour: blue\n", 1), "clawstaff:colour"),
    ],
)
def test_bad_config_exits_2_with_one_paragraph_and_no_traceback(tmp_path, edit, key):
    bad = tmp_path / "Pulumi.local.yaml"
    bad.write_text(edit((ROOT / "Pulumi.local.yaml").read_text()))
    result = run_preview("--stack", "local", "--stack-file", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "Pulumi.local.yaml" in result.stderr and key in result.stderr and "allowed" in result.stderr
    assert result.stderr.strip().count("\n") == 0, "one paragraph"


def test_missing_stack_file_exits_2():
    result = run_preview("--stack", "nosuchstack")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Pulumi.nosuchstack.yaml" in result.stderr
