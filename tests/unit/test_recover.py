"""tools/recover.py without a host: which cages a host has, what the host's report says, and the plan."""

from __future__ import annotations

import json
import subprocess

import pytest

from components import hostscripts
from tools import recover


def claws_on(evaluation, host: str) -> list[str]:
    return [c for c, info in evaluation.outputs["claws"].items() if info["host"] == host]


def state(claw: str, **changes) -> recover.CageState:
    fields = dict(
        claw=claw, boot_id="b" * 32, key=True, volume_mounted=True, audited=True, claw_running=True, proxy_running=True
    )
    return recover.CageState(**{**fields, **changes})


def test_the_claws_of_a_host_are_those_the_program_places_there(prod_eval) -> None:
    host = prod_eval.outputs["claws"]["acme-support"]["host"]
    assert recover.host_claws(prod_eval, host) == sorted(claws_on(prod_eval, host))
    with pytest.raises(recover.RecoverError, match="the program places no cage on host 'nowhere'"):
        recover.host_claws(prod_eval, "nowhere")


def test_a_rebooted_cage_gets_its_key_volume_audit_rules_and_containers_back_in_that_order(prod_eval) -> None:
    with_volume = next(c for c, info in prod_eval.outputs["claws"].items() if info["volume"])
    after_reboot = state(
        with_volume, key=False, volume_mounted=False, audited=False, claw_running=False, proxy_running=False
    )
    steps = recover.plan(prod_eval, [after_reboot])
    assert [s.command.name if s.command else s.container for s in steps] == [
        f"{with_volume}-key",
        f"{with_volume}-volume",
        f"{with_volume}-audit",
        f"proxy-{with_volume}",
        f"claw-{with_volume}",
    ]
    # What the operator sees before anything runs.
    text = recover.describe("h", [after_reboot], steps)
    assert f"{with_volume}: no key, volume not mounted, unaudited, proxy stopped, claw stopped" in text
    assert "1. put cage" in text and f"5. start claw-{with_volume}" in text


def test_a_running_cage_needs_nothing_and_a_cage_without_a_volume_gets_none(prod_eval) -> None:
    without = next(c for c, info in prod_eval.outputs["claws"].items() if not info["volume"])
    assert recover.plan(prod_eval, [state(without, volume_mounted=False)]) == []
    assert "nothing to do" in recover.describe("h", [state(without)], [])
    steps = recover.plan(prod_eval, [state(without, key=False, volume_mounted=False, claw_running=False)])
    assert [s.command.name if s.command else s.container for s in steps] == [f"{without}-key", f"claw-{without}"]


def test_the_hosts_report_must_name_exactly_the_cages_asked_for() -> None:
    line = json.dumps(state("a").__dict__)
    assert recover.parse_states(line + "\n", ["a"]) == [state("a")]
    with pytest.raises(recover.RecoverError, match=r"reported cages \['a'\], not \['a', 'b'\]"):
        recover.parse_states(line, ["a", "b"])


def test_the_state_script_reads_a_host_without_cages_and_reports_every_cage_missing(tmp_path) -> None:
    # Run for real with bash: on this machine no cage of these names exists, so everything is false.
    script = recover.state_script(["t-none-1", "t-none-2"])
    assert hostscripts.script_facts(script) == {"script": "cage-state"}
    done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    states = recover.parse_states(done.stdout, ["t-none-1", "t-none-2"])
    assert all(not (s.key or s.volume_mounted or s.audited or s.claw_running or s.proxy_running) for s in states)
    assert len({s.boot_id for s in states}) == 1 and len(states[0].boot_id) == 36
