"""The runtime rule (policies/runtime_rules.py) on the fixture claw and on the real prod graph, whose
initech-patient-intake claw runs under gVisor: clean as the program makes it, and each way of moving a
claw off the runtime its config gave it refused, by name."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

import runtime_rules
from components.conventions import LABEL_RUNTIME
from tests.policies import fixtures as fx
from tests.policies.harness import policy_named, validate_resource
from tests.policies.test_real_stacks import changed, inputs_of, verdicts

RULE = "container-runtime-as-marked"


def check(props: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    return validate_resource(policy_named(runtime_rules.POLICIES, RULE), fx.CONTAINER, props, config)


def marked(runtime: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    props = props if props is not None else fx.claw_container()
    props["labels"] = [l for l in props["labels"] if l["label"] != LABEL_RUNTIME] + [
        {"label": LABEL_RUNTIME, "value": runtime}
    ]
    return props


def test_a_runc_claw_names_no_runtime_and_a_gvisor_claw_names_runsc() -> None:
    assert check(fx.claw_container()) == []
    assert check(marked("gvisor") | {"runtime": "runsc"}) == []
    unmarked = fx.claw_container()
    unmarked["labels"] = [l for l in unmarked["labels"] if l["label"] != LABEL_RUNTIME]
    assert check(unmarked) == []  # a claw without the label is a runc claw
    assert check(fx.claw_container() | {"runtime": "runc"}) == []  # naming the default is the default


@pytest.mark.parametrize(
    ("props", "says"),
    [
        (marked("gvisor"), "marked clawstaff.runtime=gvisor but its `runtime` is unset (runc)"),
        (marked("gvisor") | {"runtime": "runc"}, "marked clawstaff.runtime=gvisor but its `runtime` is unset (runc)"),
        (fx.claw_container() | {"runtime": "runsc"}, "marked clawstaff.runtime=runc but its `runtime` is 'runsc'"),
        (marked("gvisor") | {"runtime": "kata-qemu"}, "`runtime` is 'kata-qemu', not a runtime the hosts register"),
        (marked("firecracker"), "label clawstaff.runtime is 'firecracker', not one of ['runc', 'gvisor']"),
        (fx.proxy_container() | {"runtime": "runsc"}, "`runtime` is 'runsc' on a 'proxy' container"),
    ],
    ids=["gvisor-unset", "gvisor-runc", "runc-runsc", "unregistered", "unknown-mark", "proxy-runsc"],
)
def test_a_claw_off_its_marked_runtime_is_refused(props: dict[str, Any], says: str) -> None:
    messages = check(props)
    assert len(messages) == 1 and says in messages[0], messages


def test_the_registered_runtimes_are_the_packs_config() -> None:
    assert check(marked("gvisor") | {"runtime": "runsc"}, {"registeredRuntimes": []}) != []


def test_an_unknown_runtime_during_preview_fails_closed() -> None:
    messages = check(marked("gvisor") | {"runtime": UNKNOWN_STRING_VALUE})
    assert len(messages) == 1 and "cannot verify `runtime`" in messages[0]


GVISOR_CLAW = "initech-patient-intake"  # Pulumi.prod.yaml's gVisor claw


def test_the_prod_stack_runs_one_claw_under_gvisor_and_is_clean(prod_eval) -> None:
    assert inputs_of(prod_eval, f"{GVISOR_CLAW}-claw")["runtime"] == "runsc"
    assert "runtime" not in inputs_of(prod_eval, "initech-oncall-claw")
    assert "runtime" not in inputs_of(prod_eval, f"{GVISOR_CLAW}-proxy")  # the proxy stays on runc
    assert [v for v in verdicts(prod_eval) if v[0] == RULE] == []


@pytest.mark.parametrize("runtime", [None, "runc"])
def test_the_real_gvisor_claw_moved_to_runc_is_refused(prod_eval, runtime) -> None:
    evaluation = changed(prod_eval, f"{GVISOR_CLAW}-claw", runtime=runtime)
    assert (RULE, f"{GVISOR_CLAW}-claw") in verdicts(evaluation)


def test_a_real_proxy_that_names_a_runtime_is_refused(prod_eval) -> None:
    found = verdicts(changed(prod_eval, f"{GVISOR_CLAW}-proxy", runtime="runsc"))
    assert (RULE, f"{GVISOR_CLAW}-proxy") in found
