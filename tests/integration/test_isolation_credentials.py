"""Credential probes (issue 5): the claw sees its secrets (a brokered one as its placeholder, issue 14);
nothing else on the host does.

The bench replaced every encrypted stack value by a fresh random plaintext (tests/integration/
bench.py), so a hit anywhere is this run's secret and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from components import cagehost
from components.conventions import HOST_PROXY_CONFIG_ROOT, HOST_VOLUME_ROOT, SEALED_ENV
from components.sealing import CLAW_ENV, SealError, open_credentials
from tests.integration.bench import CAGE_A, CAGE_B, CAGE_C, PROBE_PYTHON

pytestmark = pytest.mark.integration
GROUP = "credentials"
CAGES = (CAGE_A, CAGE_B, CAGE_C)

# The claw's own process (the stand-in claw idles in signal.pause): its environment, compared by hash
# so that no plaintext travels in a probe's argv.
CLAW_ENVIRON = """
import hashlib
res = {}
for p in os.listdir("/proc"):
    if not p.isdigit(): continue
    try:
        cmd = open(f"/proc/{p}/cmdline", "rb").read()
        if cmd != ARG["cmdline"].encode(): continue
        env = dict(l.split(b"=", 1) for l in open(f"/proc/{p}/environ", "rb").read().split(b"\\0") if b"=" in l)
    except OSError as e:
        res[p] = errno.errorcode.get(e.errno); continue
    res[p] = {k.decode(): hashlib.sha256(v).hexdigest() for k, v in env.items()}
out(res)
"""


def claw_cmdline(bench, cage: str) -> str:
    """/proc/PID/cmdline of the claw's own process: its configured command, NUL-separated."""
    claw = next(c for c in bench.stack.config.claws if c.name == cage)
    return "\0".join(claw.command) + "\0"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def test_claw_process_sees_its_secrets_and_not_the_sealed_blob(isolation_bench):
    bench = isolation_bench
    failures = []
    for cage in CAGES:
        wanted = bench.stack.claw_view(
            cage
        )  # a brokered secret: its placeholder (tests/integration/test_isolation_broker.py)
        res = bench.probe(f"claw-{cage}", CLAW_ENVIRON, {"cmdline": claw_cmdline(bench, cage)})
        envs = [e for e in res.values() if isinstance(e, dict)]
        ok = len(envs) == 1 and all(envs[0].get(k) == _sha(v) for k, v in wanted.items()) and SEALED_ENV not in envs[0]
        observed = {
            "claw processes": len(envs),
            "secrets present with the right value": sorted(
                k for k, v in wanted.items() if envs and envs[0].get(k) == _sha(v)
            ),
            f"{SEALED_ENV} still set": bool(envs and SEALED_ENV in envs[0]),
        }
        bench.scorecard.record(
            GROUP, f"{cage}: the claw's environment", f"{sorted(wanted)} set; sealed blob gone", observed, ok
        )
        if not ok:
            failures.append((cage, res))
    assert not failures, failures


def _hits(haystack: str, needles: list[str]) -> list[str]:
    return [n[:12] + "…" for n in needles if n in haystack]


def test_plaintext_absent_from_docker_inspect_and_logs(isolation_bench):
    bench = isolation_bench
    needles = bench.stack.secret_values()
    names = [f"{role}-{c}" for c in CAGES for role in ("claw", "proxy")]
    inspect = subprocess.run(["docker", "inspect", *names], capture_output=True, text=True, check=True).stdout
    sealed_present = all(
        f"{SEALED_ENV}=clawcage-v1:" in json.dumps(json.loads(inspect)[i]["Config"]["Env"])
        for i in range(0, len(names), 2)
    )
    inspect_hits = _hits(inspect, needles)
    ok = not inspect_hits and sealed_present
    bench.scorecard.record(
        GROUP,
        "docker inspect of every cage container",
        "ciphertext only, no plaintext",
        f"plaintext hits: {inspect_hits or 'none'}; sealed blob in the claws' env: {sealed_present}",
        ok,
    )
    logs = ""
    for name in names:
        result = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        logs += result.stdout + result.stderr
    logs += "".join(c.stdout for c in bench.deployment.created)  # the host commands' output
    log_hits = _hits(logs, needles)
    bench.scorecard.record(
        GROUP,
        "container logs and host command output",
        "no plaintext",
        f"{len(logs)} bytes searched; hits: {log_hits or 'none'}",
        not log_hits,
    )
    assert ok and not log_hits, (inspect_hits, sealed_present, log_hits)


def test_plaintext_absent_from_docker_data_root_and_host_paths(isolation_bench):
    bench = isolation_bench
    data_root = json.loads(
        subprocess.run(
            ["docker", "info", "--format", "{{json .DockerRootDir}}"], capture_output=True, text=True, check=True
        ).stdout
    )
    paths = [
        p
        for p in {
            str(Path(data_root).parent) if "/var/lib/docker/" in data_root else data_root,
            "/etc/docker",
            "/etc/clawstaff",
            HOST_PROXY_CONFIG_ROOT,
            HOST_VOLUME_ROOT,
            cagehost.KEY_TMPFS,
            "/var/log",
            "/var/run/docker",
        }
        if os.path.exists(p)
    ]
    patterns = "\n".join(bench.stack.secret_values()) + "\n"
    # Patterns on stdin, never in argv; -a: binary files too; sockets and FIFOs skipped. Exit 1: nothing
    # found. Tolerated errors: a file that vanished while grep walked (a container's churn), and the
    # network-namespace handles under /var/run/docker/netns (nsfs: no content to read).
    result = subprocess.run(
        ["grep", "-r", "-l", "-a", "-F", "-D", "skip", "-f", "-", *sorted(paths)],
        input=patterns,
        capture_output=True,
        text=True,
        timeout=300,
    )
    found = [l for l in result.stdout.splitlines() if l]
    errors = [
        l
        for l in result.stderr.splitlines()
        if l
        and not l.endswith("No such file or directory")
        and not (l.startswith("grep: /var/run/docker/netns/") and l.endswith("Invalid argument"))
    ]
    ok = result.returncode in (1, 2) and not found and not errors
    bench.scorecard.record(
        GROUP,
        "grep every plaintext under " + ", ".join(sorted(paths)),
        "no file holds one",
        {
            "files with a plaintext": found or "none",
            "unreadable": errors or "none",
            "vanished or namespace handles": len(result.stderr.splitlines()) - len(errors),
        },
        ok,
    )
    assert ok, (found, errors)


def test_sealed_blob_opens_only_with_its_own_cage_key(isolation_bench):
    bench = isolation_bench
    env = dict(e.split("=", 1) for e in bench.claw(CAGE_A).attrs["Config"]["Env"])
    sealed = env[SEALED_ENV]

    def key_of(cage: str) -> bytes:
        import base64

        return base64.b64decode(Path(cagehost.host_key_path(cage)).read_text().strip())

    def attempt(key: bytes, claw: str) -> str:
        try:
            opened = open_credentials(key, claw, sealed)
        except SealError as error:
            return f"refused ({error})"
        return "OPENED, correct" if opened == bench.stack.claw_secrets(CAGE_A) else "OPENED, wrong"

    outcomes = {
        "A's own key (control)": attempt(key_of(CAGE_A), CAGE_A),
        "another cage's key (B)": attempt(key_of(CAGE_B), CAGE_A),
        "same org's cage key (C)": attempt(key_of(CAGE_C), CAGE_A),
        "a random key": attempt(os.urandom(64), CAGE_A),
        "A's key, sealed for another claw name": attempt(key_of(CAGE_A), CAGE_B),
    }
    # Inside B, as B's claw: B's cage-init with A's blob (B's key is the only one it can read).
    in_b = bench.exec(
        f"claw-{CAGE_B}",
        "",
        env={SEALED_ENV: sealed, CLAW_ENV: CAGE_A},
        entrypoint=["/usr/local/bin/cage-init", *PROBE_PYTHON],
    )
    outcomes["B's cage-init given A's blob"] = (
        f"exit {in_b.returncode}: {in_b.stderr.strip()[-120:]}" if in_b.returncode else "OPENED"
    )
    ok = (
        outcomes["A's own key (control)"] == "OPENED, correct"
        and all(v.startswith("refused") for k, v in outcomes.items() if "control" not in k and "cage-init" not in k)
        and in_b.returncode != 0
    )
    bench.scorecard.record(GROUP, f"open {CAGE_A}'s sealed blob", "only with A's key and name", outcomes, ok)
    assert ok, outcomes
