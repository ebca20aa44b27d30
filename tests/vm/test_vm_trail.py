"""The kernel audit trail on the production path (issue 15): the bootstrap's auditd, each cage's rules
loaded by its audit command over SSH, read back with tools.audit's search over the pinned connection.

The probe claw (runc) runs a tool and makes, reads, renames, chmods and deletes files on its volume and
in /tmp; the neighbour does the same meanwhile; so does the gVisor claw, whose processes the host's
kernel never runs (gVisor's sentry serves their syscalls), so the host's rules see none of them.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from tests.integration.bench import TRAIL_ACTIONS, trail_arg, trail_expected, trail_steps
from tests.vm import probes
from tests.vm.conftest import GVISOR, NEIGHBOUR, PROBE, ssh
from components.conventions import audit_key
from components.daemon import PROVISIONED_CGROUP_DRIVER
from tools import audit, audittrail, vmhost

pytestmark = pytest.mark.vm
GROUP = "audit trail"
GVISOR_RUN = 420  # seconds the gVisor claw's run may take (measured: over 60 s while the tier runs)


def trail(host, machine, claw: str, tag: str | None = None, tries: int = 15, since: datetime | None = None):
    """The claw's events on the VM (auditd writes them a moment later: wait for the run's last one)."""
    orgs = {name: info["org"] for name, info in host.evaluation.outputs["claws"].items()}

    def run(script: str) -> str:
        done = ssh(machine, script)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cgroup = audit.cage_cgroup(claw, PROVISIONED_CGROUP_DRIVER)
    for _ in range(tries):
        found = audit.timeline(claw, run, orgs, since, cgroup=cgroup)
        if tag is None or any(step[1] == "/etc/" for step in trail_steps(found, tag)):
            return found
        time.sleep(1)
    return found


# The claw asks its proxy for each name in turn (ARG: host:port), waiting for each answer (an allowed
# name the VM cannot resolve is answered 503 once Squid's lookup gives up).
API_CALLS = """
said = []
for name in ARG:
    s = socket.create_connection(("egress-proxy", 3128), 60)
    s.sendall(("CONNECT %s HTTP/1.1\\r\\nHost: %s\\r\\n\\r\\n" % (name, name)).encode())
    said.append(s.recv(200).split(b"\\r\\n")[0].decode()); s.close()
out(said)
"""


def test_the_hosts_trail_has_each_claws_actions_in_order_and_nothing_of_another_cage(cages, vm_scorecard):
    host, machine, _ = cages
    tags = {claw: f"vm-trail-{claw}-{int(time.time())}" for claw in (PROBE, NEIGHBOUR, GVISOR)}
    # The gVisor claw's run starts first and goes on beside the others: under TCG its two Python starts
    # take minutes (the sentry's systrap platform stops on every syscall), the runc claws' seconds.
    sandbox = probes.start(machine, f"claw-{GVISOR}", TRAIL_ACTIONS, trail_arg(tags[GVISOR]), timeout=GVISOR_RUN)
    said = {
        claw: probes.probe(machine, f"claw-{claw}", TRAIL_ACTIONS, trail_arg(tags[claw])) for claw in (PROBE, NEIGHBOUR)
    }
    found = trail(host, machine, PROBE, tags[PROBE])
    steps = trail_steps(found, tags[PROBE])
    want = trail_expected(tags[PROBE], said[PROBE])
    strangers = [t for c, t in tags.items() if c != PROBE and trail_steps(found, t)]
    org = host.evaluation.outputs["claws"][PROBE]["org"]
    identities = {(e.claw, e.org) for e in found}
    ok = steps == want and not strangers and identities == {(PROBE, org)} and said[PROBE]["bases"] == ["/data", "/tmp"]
    vm_scorecard.record(
        GROUP,
        f"{PROBE} runs a tool, writes, reads, renames, chmods and deletes a file on its volume and in /tmp, tries "
        f"to write /etc; {NEIGHBOUR} and {GVISOR} do the same; the host's trail of {PROBE} (tools.audit's search)",
        "each of those events in order, with the claw, its org and the result; nothing of the other cages",
        {
            "events of the run": steps,
            "other cages' runs in this trail": strangers or "none",
            "identities": sorted(identities),
        },  # fmt: skip
        ok,
    )
    assert steps == want
    assert not strangers and identities == {(PROBE, org)}
    # Loading the host's audit settings again (what audit-rules.service and an upgrade of auditd do)
    # keeps every cage's rules: the program's rules.d has no -D.
    before = ssh(machine, "auditctl -l").stdout
    reloaded = ssh(machine, "augenrules --load && auditctl -l")
    assert reloaded.returncode == 0 and f"key={audit_key(PROBE)}" in reloaded.stdout, reloaded.stderr
    assert reloaded.stdout.count("-F key=clawcage-") == before.count("-F key=clawcage-")
    neighbours = trail(host, machine, NEIGHBOUR, tags[NEIGHBOUR])
    assert trail_steps(neighbours, tags[NEIGHBOUR]) == trail_expected(tags[NEIGHBOUR], said[NEIGHBOUR])
    # Limit hits, from the host's journal (the kernel's log): the probe's fork bomb and memory hog
    # (test_vm_cages.py, test_vm_isolation.py ran them), in its own slice; none in the neighbour's.
    hits = {
        c: [(e.action, e.cgroup) for e in t if e.kind == "limit"] for c, t in ((PROBE, found), (NEIGHBOUR, neighbours))
    }
    slice_ = audit.cage_cgroup(PROBE, PROVISIONED_CGROUP_DRIVER) + "/"
    ours = {action for action, cgroup in hits[PROBE] if cgroup.startswith(slice_)}
    limited = ours == {"fork-refused", "oom-kill"} and not hits[NEIGHBOUR]
    vm_scorecard.record(
        GROUP,
        f"the trails of {PROBE} and {NEIGHBOUR} after {PROBE}'s fork bomb and memory hog (tools.audit, from the "
        "host's journal)",
        f"{PROBE}'s has the refused fork and the OOM kill, in its own slice; {NEIGHBOUR}'s has no limit hit",
        hits,
        limited,
    )
    assert limited, hits
    # API calls, from the probe's proxy log: a refused name, then the control plane (allowed; the VM
    # has no route to it, so Squid answers 503 once its lookup gives up).
    allowed = vmhost.CONTROL_PLANE
    refused = f"{tags[PROBE]}.refused.example:443"
    # From here the trail is read from the VM's clock's now on: each source's own time bound (ausearch
    # -ts, journalctl --since, docker logs --since) on the production path.
    start = datetime.fromtimestamp(float(ssh(machine, "date +%s.%N").stdout), timezone.utc)
    asked = probes.probe(machine, f"claw-{PROBE}", API_CALLS, [refused, allowed], timeout=150)
    want = [("refused", refused, "403", "not-allowlisted"), ("allowed", allowed, "503", "allowlisted")]
    for _ in range(10):  # Squid writes a CONNECT's line when its tunnel closes
        bounded = trail(host, machine, PROBE, tries=1, since=start)
        calls = [(e.action, e.request, e.status, e.reason) for e in bounded if e.kind == "api"]
        ours = [c for c in calls if c[1] in (refused, allowed)][-2:]
        if ours == want:
            break
        time.sleep(1)
    vm_scorecard.record(
        GROUP,
        f"{PROBE} asks its proxy for a name not on its allowlist, then for the control plane; its trail",
        "the refusal (403 not-allowlisted) then the allowed call (allowlisted; 503: the VM reaches no "
        "upstream), as api events of the claw",
        {"the claw was answered": asked, "api events": ours or "none"},
        ours == want,
    )
    assert ours == want, (asked, calls[-4:])
    assert all(e.time >= audittrail.iso_time(start.timestamp()) for e in bounded), bounded
    # gVisor: the claw's processes are the sentry's, not the host kernel's; the host sees none of them.
    code, lines, errors = sandbox.stop(timeout=GVISOR_RUN + 60)
    assert code == 0 and lines, f"the run in {GVISOR} failed ({code}): {errors[-1500:]}"
    said[GVISOR] = lines[-1]
    sandboxed = trail(host, machine, GVISOR, tries=1)
    seen = trail_steps(sandboxed, tags[GVISOR])
    rules = [e.action for e in sandboxed if e.kind == "rules"]
    vm_scorecard.record(
        GROUP,
        f"the same run in the gVisor claw {GVISOR}: what the host's audit rules see of it",
        "its rules are loaded, but none of the run's events: gVisor's sentry serves the claw's syscalls, the "
        "host kernel runs only the sandbox (docs/audit.md says what a gVisor claw's trail lacks)",
        {"rules events": rules, "events of the run": seen or "none", "the run said": said[GVISOR]},
        "loaded" in rules and not seen,
    )
    assert "loaded" in rules and not seen
