"""Audit probes (issue 5): each cage's proxy logs every allowed and refused request of a probe run,
with the claw and its org, and no secret."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time

import pytest

from components.egress import parse_access_line
from tests.integration.bench import CAGE_A, CAGE_B, CAGE_C, OUTSIDE_IP, local_timeline
from tests.integration.test_isolation_network import THROUGH_PROXY

pytestmark = pytest.mark.integration
GROUP = "audit"


@pytest.mark.parametrize("cage", [CAGE_A, CAGE_B, CAGE_C])
def test_proxy_log_shows_each_request_with_claw_and_org(isolation_bench, cage):
    bench = isolation_bench
    claw = next(c for c in bench.stack.config.claws if c.name == cage)
    allowed = f"{claw.egress[0].host}:443"
    run = secrets.token_hex(4)
    forbidden = f"audit-{run}.forbidden.example:443"
    cases = [
        ("allowed", f"CONNECT {allowed} HTTP/1.1\r\nHost: {allowed}\r\n\r\n", claw.egress[0].host),
        ("forbidden", f"CONNECT {forbidden} HTTP/1.1\r\nHost: {forbidden}\r\n\r\n", None),
        ("ip", f"CONNECT {OUTSIDE_IP}:443 HTTP/1.1\r\nHost: x\r\n\r\n", None),
    ]
    since = str(int(time.time()) - 1)
    result = bench.probe(f"claw-{cage}", THROUGH_PROXY, {"ca": bench.outside.cert_pem, "cases": cases})
    logs = ""
    for _ in range(20):  # squid writes a CONNECT's line when the tunnel closes
        done = subprocess.run(["docker", "logs", "--since", since, f"proxy-{cage}"], capture_output=True, text=True)
        logs = done.stdout + done.stderr
        if forbidden in logs and allowed in logs and f"{OUTSIDE_IP}:443" in logs:
            break
        time.sleep(0.5)
    # JSON lines, read with the format's own parser: a line it cannot read fails the probe.
    entries = [e for l in logs.splitlines() if (e := parse_access_line(l)) is not None]
    who = {"claw": cage, "org": claw.org}
    expect = {
        "allowed": {"request": allowed, "status": "200", "reason": "allowlisted"},
        "refused name": {"request": forbidden, "status": "403", "reason": "not-allowlisted"},
        "refused IP literal": {"request": f"{OUTSIDE_IP}:443", "status": "403", "reason": "ip-literal"},
    }
    found = {k: any(e.items() >= (who | parts).items() for e in entries) for k, parts in expect.items()}
    leaked = [v[:10] for v in bench.stack.secret_values() if v in logs]
    ok = all(found.values()) and not leaked and result["allowed"]["status"] == 200
    example = next((json.dumps(e) for e in entries if e["request"] == forbidden), "")
    bench.scorecard.record(
        GROUP,
        f"{cage}: proxy log of one probe run",
        f"allowed + refused lines with claw={cage} org={claw.org}, no secret",
        {"found": found, "secrets in log": leaked or "none", "example": re.sub(r"\s+", " ", example)[:200]},
        ok,
    )
    assert ok, (found, leaked, entries[-5:])
    # The same calls in the claw's timeline (`tools.audit --stack local`), with the claw's own events.
    calls = [e for e in local_timeline(bench, cage) if e.kind == "api"]
    seen = {(e.action, e.request, e.result) for e in calls if e.claw == cage and e.org == claw.org}
    want = {("allowed", allowed, "ok"), ("refused", forbidden, "403"), ("refused", f"{OUTSIDE_IP}:443", "403")}
    bench.scorecard.record(
        "audit trail",
        f"{cage}: the same run in its timeline (`tools.audit --stack local --claw {cage}`)",
        "the allowed call and both refusals as `api` events, with the claw, its org and the status",
        sorted(seen & want) or "none",
        want <= seen,
    )
    assert want <= seen, sorted(seen)[-6:]
