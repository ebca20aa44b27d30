"""tools.replay.deploy creates resources as Pulumi's engine does: each once what it depends on exists,
independent ones at the same time, and on a failure it waits for what is in flight and deletes
everything made, newest first. Real local commands (`/bin/sh -c`), no engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import replay
from tools.mockrun import Evaluation, Registered


def _command(name: str, create: str, delete: str, depends: tuple[str, ...] = ()) -> Registered:
    return Registered(
        urn=f"urn:pulumi:t::clawstaff::command:local:Command::{name}",
        type=replay.LOCAL_COMMAND,
        name=name,
        custom=True,
        dependencies=tuple(f"urn:pulumi:t::clawstaff::command:local:Command::{d}" for d in depends),
        inputs={"create": create, "delete": delete},
    )


def _wait_for(path: Path, seconds: int = 20) -> str:
    """sh that waits up to `seconds` for `path`, and fails if it never appears."""
    return f"i=0; while [ ! -e {path} ]; do i=$((i+1)); [ $i -le {seconds * 10} ] || exit 7; sleep 0.1; done"


def test_independent_resources_are_created_together_and_a_dependent_one_after(tmp_path):
    # a and b each wait for the other: one by one, the first would time out.
    a = _command("a", f"touch {tmp_path}/a && {_wait_for(tmp_path / 'b')}", f"echo a >> {tmp_path}/deleted")
    b = _command("b", f"touch {tmp_path}/b && {_wait_for(tmp_path / 'a')}", f"echo b >> {tmp_path}/deleted")
    # c needs both: it finds them done.
    c = _command("c", f"test -e {tmp_path}/a && test -e {tmp_path}/b && touch {tmp_path}/c",
                 f"echo c >> {tmp_path}/deleted", depends=("a", "b"))  # fmt: skip
    deployment = replay.deploy(Evaluation("t", [c, a, b], {}), client=object())
    names = [created.name for created in deployment.created]
    assert sorted(names[:2]) == ["a", "b"] and names[2] == "c"
    assert replay.teardown(deployment) == []
    deleted = (tmp_path / "deleted").read_text().split()
    assert deleted[0] == "c" and sorted(deleted[1:]) == ["a", "b"]


def test_one_by_one_keeps_the_replay_order(tmp_path):
    log = tmp_path / "log"
    first = _command("first", f"echo first >> {log}", "true")
    second = _command("second", f"echo second >> {log}", "true", depends=("first",))
    deployment = replay.deploy(Evaluation("t", [second, first], {}), client=object(), parallel=1)
    assert log.read_text().split() == ["first", "second"]
    assert replay.teardown(deployment) == []


def test_a_failure_waits_for_what_is_in_flight_and_deletes_all_of_it(tmp_path):
    slow = _command(
        "slow", f"sleep 1 && touch {tmp_path}/slow", f"rm {tmp_path}/slow && echo slow >> {tmp_path}/deleted"
    )
    fails = _command("fails", "echo no >&2; exit 3", "true")
    after = _command("after", f"touch {tmp_path}/after", "true", depends=("fails",))
    with pytest.raises(replay.ReplayError, match="fails"):
        replay.deploy(Evaluation("t", [slow, fails, after], {}), client=object())
    # slow finished after the failure, and was deleted; what needed the failed one never ran.
    assert (tmp_path / "deleted").read_text().split() == ["slow"]
    assert not (tmp_path / "slow").exists() and not (tmp_path / "after").exists()


def test_parallel_must_be_at_least_one():
    with pytest.raises(ValueError, match="at least 1"):
        replay.deploy(Evaluation("t", [], {}), client=object(), parallel=0)


def test_a_refused_input_creates_nothing_at_all(tmp_path):
    good = _command("good", f"touch {tmp_path}/good", f"rm {tmp_path}/good")
    bad = _command("bad", "true", "true")
    bad = Registered(**{**bad.__dict__, "inputs": {**bad.inputs, "triggers": ["x"]}})  # not a local input
    with pytest.raises(replay.ReplayError, match=r"'bad'.*'triggers'"):
        replay.deploy(Evaluation("t", [good, bad], {}), client=object())
    assert not (tmp_path / "good").exists()
