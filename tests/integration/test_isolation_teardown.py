"""Teardown probes (issue 5): after the delete steps nothing of a cage is left, and its volume's data
cannot be recovered. Runs last (file order); it tears the bench down itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from components import cagehost
from components.conventions import HOST_VOLUME_ROOT, audit_key, host_broker_dir, host_key_dir, host_volume_dir
from tests.integration.bench import CAGE_A, cage_cgroup_dirs
from tools import audit

pytestmark = pytest.mark.integration
GROUP = "teardown"


def _state(bench) -> dict:
    """What exists of the bench's cages (only theirs: other benches may share this engine)."""
    client = bench.deployment.client
    cages = [c.name for c in bench.stack.config.claws]
    volumes = tuple(host_volume_dir(c) + "/" for c in cages)
    # a loop device is attached through its volume's opaque alias (components/hostscripts/lib/volume-common.sh)
    aliases = (f"{HOST_VOLUME_ROOT}/.loop/",)
    mounts = Path("/proc/self/mountinfo").read_text()
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    return {
        "containers": [
            c.name
            for c in client.containers.list(all=True)
            if c.labels.get("clawstaff.claw") in cages and c.labels.get("clawstaff.host") == "laptop"
        ],
        "networks": [
            n.name for n in client.networks.list() if n.name in {f"cage-{c}" for c in cages} | {"egress-laptop"}
        ],
        "key files": [d for c in cages if os.path.exists(d := host_key_dir(c))],
        "broker keys and CA certificates": [d for c in cages if os.path.exists(d := host_broker_dir(c))],
        "volume dirs": [d for c in cages if os.path.exists(d := host_volume_dir(c))],
        "proxy configs": [d for c in cages if os.path.exists(d := cagehost.proxy_config_dir(c))],
        "mounts": [l.split()[4] for l in mounts.splitlines() if l.split()[4].startswith(volumes)],
        "loop devices": [l for l in loops.splitlines() if any(v in l for v in volumes + aliases)],
        "cgroups": [str(d) for c in cages for d in cage_cgroup_dirs(c)],
        "audit rules": [
            line
            for line in subprocess.run(["auditctl", "-l"], capture_output=True, text=True).stdout.splitlines()
            if any(line.endswith(f"-F key={audit_key(c)}") for c in cages)
        ],
    }


def test_teardown_leaves_nothing_and_the_volume_is_shredded(isolation_bench):
    bench = isolation_bench
    before = _state(bench)
    assert before["containers"] and before["key files"] and before["volume dirs"] and before["audit rules"], (
        f"the bench is not deployed as expected: {before}"
    )
    if bench.volume_marker is None:  # run on its own: write what a thief would look for
        from tests.integration.test_isolation_filesystem import WRITE_MARKER
        import secrets

        marker = (f"PLAINTEXT-{secrets.token_hex(12)}", f"diary-{secrets.token_hex(6)}.txt")
        bench.probe(f"claw-{CAGE_A}", WRITE_MARKER, {"marker": marker[0], "name": marker[1]})
        bench.volume_marker = marker
    marker = bench.volume_marker
    work = Path(tempfile.mkdtemp(prefix="clawbench-shred-", dir="/var/tmp"))
    copy = work / "backing.img"
    try:
        # Keep a copy of the ciphertext, as a thief with the disk would.
        subprocess.run(["cp", "--sparse=always", f"{host_volume_dir(CAGE_A)}/backing.img", str(copy)], check=True)
        errors = bench.teardown()
        after = _state(bench)
        left = {k: v for k, v in after.items() if v}
        ok = not errors and not left
        bench.scorecard.record(
            GROUP,
            "after the delete steps: containers, networks, keys, volumes, configs, mounts, loop devices, cgroups, "
            "audit rules",
            "nothing left",
            {"errors": errors, "left": left or "nothing", "removed": {k: len(v) for k, v in before.items()}},
            ok,
        )
        recovered = _try_recover(copy, work, marker)
        bench.scorecard.record(
            GROUP,
            f"{CAGE_A}: a copy of the volume's backing file after teardown",
            "mounts, but the data stays encrypted (key gone)",
            recovered,
            recovered.get("plaintext") is False,
        )
        # The cage's trail outlives it: its records stay in the host's log, the last one its rules' removal.
        orgs = {c.name: c.org for c in bench.stack.config.claws}
        trail = audit.timeline(CAGE_A, audit.local_run, orgs, bench.started)
        kept = bool(trail) and (trail[-1].kind, trail[-1].action) == ("rules", "removed")
        bench.scorecard.record(
            GROUP,
            f"{CAGE_A}'s audit trail after teardown (`tools.audit --stack local --claw {CAGE_A}`)",
            "its rules are gone (above); its records are kept, the last one the removal of its rules",
            {
                "events": len(trail),
                "first": trail[0].to_json() if trail else None,
                "last": trail[-1].to_json() if trail else None,
            },  # fmt: skip
            kept,
        )
        assert ok, (errors, left)
        assert recovered.get("plaintext") is False, recovered
        assert kept, trail[-3:]
    finally:
        subprocess.run(["umount", str(work / "mnt")], capture_output=True)
        for line in subprocess.run(["losetup", "-j", str(copy)], capture_output=True, text=True).stdout.splitlines():
            subprocess.run(["losetup", "-d", line.split(":")[0]], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _try_recover(copy: Path, work: Path, marker: tuple[str, str]) -> dict:
    """Mount the copy read-only and try to read what the claw wrote."""
    mnt = work / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-o", "ro,loop,noload", str(copy), str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"mount": done.stderr.strip(), "plaintext": None}
    result: dict = {"mount": "ok"}
    names, plaintext = [], False
    for root, _dirs, files in os.walk(mnt / "data"):
        for f in files:
            names.append(f)
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    if marker[0].encode() in fh.read():
                        plaintext = True
            except OSError as error:
                result.setdefault("read", error.strerror)
    result["file names seen"] = names[:3]
    result["marker file name visible"] = marker[1] in names
    result["plaintext"] = plaintext or result["marker file name visible"]
    if marker is None:
        result["plaintext"] = None  # the filesystem probes did not run: nothing to look for
    return result
