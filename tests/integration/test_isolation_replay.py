"""The replayer (tools/replay.py) refuses what it does not understand, before it creates anything,
and replays in dependency order. No engine needed: every refusal happens before the first call."""

from __future__ import annotations

import dataclasses

import pytest

from tools import replay
from tools.mockrun import Evaluation, Registered

pytestmark = pytest.mark.integration


class _NoEngine:
    """Stands in for the docker client: any use of it means the replayer acted before refusing."""

    def __getattr__(self, name):
        raise AssertionError(f"the replayer touched the engine ({name}) before refusing")


def _with_input(evaluation: Evaluation, name: str, key: str, value) -> Evaluation:
    resources = [
        dataclasses.replace(r, inputs={**r.inputs, key: value}) if r.name == name else r for r in evaluation.resources
    ]
    return dataclasses.replace(evaluation, resources=resources)


def _first(evaluation: Evaluation, type_: str) -> Registered:
    return next(r for r in replay.replay_order(evaluation.resources) if r.type == type_)


def test_unknown_network_input_is_refused_before_anything_is_created(local_eval):
    first_network = _first(local_eval, replay.NETWORK)
    bad = _with_input(local_eval, first_network.name, "attachable", True)
    with pytest.raises(replay.ReplayError, match=rf"{first_network.name}.*'attachable' is not understood"):
        replay.deploy(bad, client=_NoEngine())


@pytest.mark.parametrize(
    "key,value",
    [
        ("ports", [{"internal": 22, "external": 2222}]),
        ("logs", True),
        ("wait", True),
        ("networkMode", "host"),
        ("pidMode", "host"),
    ],
)
def test_unknown_or_unsupported_container_input_is_refused(local_eval, key, value):
    claw = next(r for r in local_eval.resources if r.name.endswith("-claw"))
    bad = _with_input(local_eval, claw.name, key, value)
    resource = next(r for r in bad.resources if r.name == claw.name)
    with pytest.raises(replay.ReplayError, match=rf"{claw.name}.*'{key}'"):
        replay._container_config(resource, client=None)


@pytest.mark.parametrize(
    "key,value",
    [
        ("mounts", [{"type": "volume", "source": "x", "target": "/x"}]),
        ("mounts", [{"type": "bind", "source": "/", "target": "/h", "bindOptions": {}}]),
        ("healthcheck", {"tests": ["CMD", "true"], "interval": "soon"}),
        ("restart", "sometimes"),
    ],
)
def test_inputs_the_replayer_cannot_map_faithfully_are_refused(local_eval, key, value):
    claw = next(r for r in local_eval.resources if r.name.endswith("-claw"))
    resource = dataclasses.replace(claw, inputs={**claw.inputs, key: value})
    with pytest.raises(replay.ReplayError, match=claw.name):
        replay._container_config(resource, client=None)


def test_unknown_command_input_and_unknown_type_are_refused(local_eval):
    command = _first(local_eval, replay.LOCAL_COMMAND)
    with pytest.raises(replay.ReplayError, match=rf"{command.name}.*'triggers'"):
        replay._run_command(dataclasses.replace(command, inputs={**command.inputs, "triggers": ["x"]}))
    stranger = Registered(
        urn="urn:pulumi:local::clawstaff::docker:index/volume:Volume::v",
        type="docker:index/volume:Volume",
        name="v",
        custom=True,
        inputs={"name": "v"},
    )
    with pytest.raises(replay.ReplayError, match="docker:index/volume:Volume 'v'"):
        replay.deploy(dataclasses.replace(local_eval, resources=[stranger, *local_eval.resources]), client=_NoEngine())


def test_a_remote_docker_provider_is_refused(local_eval):
    provider = _first(local_eval, replay.DOCKER_PROVIDER)
    bad = _with_input(local_eval, provider.name, "host", "ssh://root@203.0.113.7:22")
    with pytest.raises(replay.ReplayError, match="only a local engine"):
        replay.deploy(bad, client=_NoEngine())


def test_order_puts_every_dependency_first(local_eval):
    order = replay.replay_order(local_eval.resources)
    position = {r.urn: i for i, r in enumerate(order)}
    for r in order:
        for needed in (*r.dependencies, r.provider, r.parent):
            if needed in position:
                assert position[needed] < position[r.urn], (needed, r.urn)
    kinds = [r.type for r in order if r.type in (replay.NETWORK, replay.CONTAINER)]
    # Every container comes after its own networks; the claw after its proxy and its host commands.
    for cage in {r.name.rsplit("-", 1)[0] for r in order if r.name.endswith("-claw")}:
        names = [r.name for r in order]
        assert names.index(f"{cage}-network") < names.index(f"{cage}-proxy") < names.index(f"{cage}-claw")
        for piece in ("limits", "key", "proxy-config"):
            assert names.index(f"{cage}-{piece}") < names.index(f"{cage}-proxy" if piece != "key" else f"{cage}-claw")
    assert kinds, "the local stack registered no docker resources"


def test_a_dependency_cycle_is_refused():
    a = Registered(urn="urn:a", type=replay.NETWORK, name="a", custom=True, dependencies=("urn:b",))
    b = Registered(urn="urn:b", type=replay.NETWORK, name="b", custom=True, dependencies=("urn:a",))
    with pytest.raises(replay.ReplayError, match="cycle"):
        replay.replay_order([a, b])
