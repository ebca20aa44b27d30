"""The broker rules against the real local graph (acme-support brokers ANTHROPIC_API_KEY): the graph is
clean, and each way of handing the claw a brokered value or a private key is refused, by name."""

from __future__ import annotations

from typing import Any

import pytest

from components.broker import CA_MOUNT, ENV_SECRETS_ENV, PLACEHOLDERS_ENV
from components.conventions import host_broker_ca_dir, host_broker_key_dir
from tests.policies.test_real_stacks import changed, inputs_of, verdicts
from tools import mockrun

CLAW = "acme-support"
NOT_IN_CLAW = "brokered-secret-stays-out-of-the-claw"
NO_CA_KEY = "claw-holds-no-cage-ca-key"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


def _env(evaluation: mockrun.Evaluation, name: str) -> list[str]:
    return list(inputs_of(evaluation, name)["envs"])


def _with_env(evaluation: mockrun.Evaluation, name: str, key: str, value: str) -> mockrun.Evaluation:
    envs = [e for e in _env(evaluation, name) if not e.startswith(key + "=")] + [f"{key}={value}"]
    return changed(evaluation, name, envs=envs)


def _with_mounts(evaluation: mockrun.Evaluation, name: str, extra: list[dict[str, Any]], drop_ca: bool = False):
    mounts = [m for m in inputs_of(evaluation, name)["mounts"] if not (drop_ca and m["target"] == CA_MOUNT)]
    return changed(evaluation, name, mounts=mounts + extra)


def test_the_local_stack_brokers_and_is_clean(local_eval: mockrun.Evaluation) -> None:
    env = dict(e.split("=", 1) for e in _env(local_eval, f"{CLAW}-claw"))
    assert env[PLACEHOLDERS_ENV] == "ANTHROPIC_API_KEY" and env[ENV_SECRETS_ENV] == "SLACK_BOT_TOKEN"
    assert [p for p, _ in verdicts(local_eval) if p in (NOT_IN_CLAW, NO_CA_KEY)] == []


@pytest.mark.parametrize(
    "breach",
    [
        "real value declared sealed for the claw",
        "placeholder not declared",
        "placeholder of a secret no broker binds",
    ],
)
def test_a_brokered_secret_that_would_reach_the_claw_is_refused(local_eval: mockrun.Evaluation, breach: str) -> None:
    claw = f"{CLAW}-claw"
    if breach == "real value declared sealed for the claw":
        evaluation = _with_env(local_eval, claw, ENV_SECRETS_ENV, "ANTHROPIC_API_KEY,SLACK_BOT_TOKEN")
    elif breach == "placeholder not declared":
        evaluation = _with_env(local_eval, claw, PLACEHOLDERS_ENV, "")
    else:
        evaluation = _with_env(local_eval, claw, PLACEHOLDERS_ENV, "ANTHROPIC_API_KEY,OPENAI_API_KEY")
    assert (NOT_IN_CLAW, claw) in verdicts(evaluation)


@pytest.mark.parametrize(
    "breach",
    ["PEM private key in env", "broker key directory mounted", "CA directory writable", "broker root mounted"],
)
def test_a_claw_that_carries_the_cage_ca_key_is_refused(local_eval: mockrun.Evaluation, breach: str) -> None:
    claw = f"{CLAW}-claw"
    bind = {"type": "bind", "readOnly": True}
    if breach == "PEM private key in env":
        evaluation = _with_env(local_eval, claw, "CLAWCAGE_EXTRA", PEM_KEY)
    elif breach == "broker key directory mounted":
        extra = [{**bind, "source": host_broker_key_dir(CLAW), "target": "/run/broker"}]
        evaluation = _with_mounts(local_eval, claw, extra)
    elif breach == "CA directory writable":
        extra = [{**bind, "source": host_broker_ca_dir(CLAW), "target": CA_MOUNT, "readOnly": False}]
        evaluation = _with_mounts(local_eval, claw, extra, drop_ca=True)
    else:
        extra = [{**bind, "source": "/run/clawstaff/brokers", "target": "/run/brokers"}]
        evaluation = _with_mounts(local_eval, claw, extra)
    assert (NO_CA_KEY, claw) in verdicts(evaluation)
