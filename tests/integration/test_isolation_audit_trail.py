"""Kernel audit trail probes (issue 15): what a claw runs and which files it makes, changes, reads and
deletes are in its host's audit log under its own cage's key, in order, and nothing of another cage is.
(The file sorts before test_isolation_teardown.py, which removes the cages.)

The claw does it as the claw does anything: code run in its container as its user. The trail is read
as an operator reads it, with tools.audit (ausearch on this machine, the `local` stack's host).
"""

from __future__ import annotations

import secrets

import pytest

from tests.integration.bench import CAGE_A, CAGE_B, TRAIL_ACTIONS, trail_arg, trail_expected, trail_steps
from tools import audit

pytestmark = pytest.mark.integration
GROUP = "audit trail"


def test_a_claws_programs_and_file_operations_are_in_its_trail_in_order_and_no_neighbours(isolation_bench):
    bench = isolation_bench
    orgs = {c.name: c.org for c in bench.stack.config.claws}
    tag, other = f"trail-{secrets.token_hex(4)}", f"trail-{secrets.token_hex(4)}"
    said = bench.probe(f"claw-{CAGE_A}", TRAIL_ACTIONS, trail_arg(tag))
    bench.probe(f"claw-{CAGE_B}", TRAIL_ACTIONS, trail_arg(other))  # the neighbour does the same meanwhile
    found = audit.timeline(CAGE_A, audit.local_run, orgs, bench.started)
    assert said["bases"] == ["/data", "/tmp"], said  # the probe cage has a volume
    steps = trail_steps(found, tag)
    want = trail_expected(tag, said)
    neighbours = trail_steps(found, other)
    identities = {(e.claw, e.org) for e in found}
    uids = {e.uid for e in found if e.uid is not None}
    ok = steps == want and not neighbours and identities == {(CAGE_A, orgs[CAGE_A])} and len(uids) == 1
    bench.scorecard.record(
        GROUP,
        f"claw {CAGE_A} runs a tool, writes, reads, renames, chmods and deletes a file on its volume and in /tmp, "
        f"tries to write /etc; {CAGE_B} does the same meanwhile; `tools.audit --stack local --claw {CAGE_A}`",
        "every one of those events in order with the claw and its org and the result (EACCES for /etc); the "
        "read of /tmp is not recorded (reads are audited on the volume only); nothing of the neighbour",
        {
            "events of the run": steps,
            "neighbour's events in this trail": neighbours,
            "identities": sorted(identities),
            "host uids": sorted(uids),
        },  # fmt: skip
        ok,
    )
    assert steps == want
    assert neighbours == [] and identities == {(CAGE_A, orgs[CAGE_A])} and len(uids) == 1
    # The neighbour's own trail has its run and none of this one.
    theirs = audit.timeline(CAGE_B, audit.local_run, orgs, bench.started)
    assert trail_steps(theirs, other) and not trail_steps(theirs, tag)
