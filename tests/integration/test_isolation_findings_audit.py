"""The attack-findings issue (issue 12), the audit trail: findings 4 (the proxy's log erased by
volume) and 5 (a tunnel logged only when it closes), replayed against the bench's cages as the
claw's own user. docs/attack-findings.md says what the fix is and what stays residual."""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from components.egress import CAGE_CONNECTIONS_BURST, CAGE_CONNECTIONS_PER_SECOND, parse_access_line
from components.firewall import NFT_TABLE
from tests.integration.bench import CAGE_A, OUTSIDE_IP

pytestmark = pytest.mark.integration
GROUP = "findings"


def _log_files(container) -> list[Path]:
    """The container's json-file log and its rotated files (what `docker logs` still holds)."""
    container.reload()
    current = Path(container.attrs["LogPath"])
    return sorted(current.parent.glob(current.name + "*"))


def _logged(container, needle: str) -> list[dict]:
    """The access log entries, in every retained log file, whose line holds `needle`."""
    import json

    found = []
    for path in _log_files(container):
        with open(path, errors="replace") as f:
            for raw in f:
                if needle in raw:
                    entry = parse_access_line(json.loads(raw)["log"])
                    if entry is not None:
                        found.append(entry)
    return found


def _throttled_syns() -> int:
    done = subprocess.run(["nft", "list", "chain", "inet", NFT_TABLE, "cage_throttled"], capture_output=True, text=True)
    counts = re.findall(r"counter packets (\d+)", done.stdout)
    return int(counts[-1]) if counts else -1


REFUSE = """
s = socket.create_connection(("egress-proxy", 3128), 10)
s.sendall(f"CONNECT {ARG['target']} HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n".encode())
reply = s.recv(200); s.close()
out(int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0)
"""

# Refused requests with long URLs, pipelined on several connections, for a while: the attack that
# rotated a marked refusal out of the proxy's log in 10.4 s.
AUDIT_FLOOD = """
import threading
stats = {"connections": 0, "connect timeouts": 0, "requests sent": 0, "403 replies": 0}
lock = threading.Lock()
one = (f"GET http://flood-{ARG['run']}.forbidden.example/" + "a" * ARG["url"] + " HTTP/1.1\\r\\n"
       "Host: flood.forbidden.example\\r\\n\\r\\n").encode()
end = time.time() + ARG["seconds"]
def worker():
    while time.time() < end:
        try:
            s = socket.create_connection(("egress-proxy", 3128), timeout=1)
        except OSError:
            with lock: stats["connect timeouts"] += 1
            continue
        with lock: stats["connections"] += 1
        s.settimeout(2)
        replies = 0
        try:
            while time.time() < end:
                s.sendall(one * ARG["batch"])
                with lock: stats["requests sent"] += ARG["batch"]
                replies, tail = 0, b""
                while replies < ARG["batch"] and time.time() < end:
                    chunk = s.recv(1 << 16)
                    if not chunk: raise EOFError
                    data = tail + chunk
                    replies += data.count(b"HTTP/1.1 403")
                    tail = data[-16:]
                with lock: stats["403 replies"] += replies
                replies = 0
        except (OSError, EOFError):
            pass
        finally:
            with lock: stats["403 replies"] += replies
            s.close()
threads = [threading.Thread(target=worker) for _ in range(ARG["connections"])]
for t in threads: t.start()
for t in threads: t.join()
out(stats)
"""


def test_a_flood_of_refused_requests_does_not_rotate_a_marked_refusal_out_of_the_audit_log(isolation_bench):
    """Finding 4: one request per client connection, a cage's new connections rate-limited on its
    bridge, the client's fields cut at a width in the log: the claw cannot make its proxy log fast
    enough to rotate a refusal out while it floods. Residual (docs/attack-findings.md): the log is
    the proxy's container log on the host; retention is bounded, shipping is the audit-trail issue."""
    bench = isolation_bench
    proxy = bench.proxy(CAGE_A)
    run = secrets.token_hex(4)
    mark = f"mark-{run}.forbidden.example:443"
    claw = f"claw-{CAGE_A}"
    assert bench.probe(claw, REFUSE, {"target": mark}) == 403
    for _ in range(20):
        if _logged(proxy, f"mark-{run}"):
            break
        time.sleep(0.5)
    before = (_logged(proxy, f"mark-{run}"), _throttled_syns())
    flood = bench.probe(
        claw, AUDIT_FLOOD, {"run": run, "seconds": 20, "connections": 4, "batch": 20, "url": 8000}, timeout=60
    )
    time.sleep(2)
    kept = _logged(proxy, f"mark-{run}")
    flood_lines = _logged(proxy, f"flood-{run}")
    size = sum(p.stat().st_size for p in _log_files(proxy))
    throttled = _throttled_syns() - before[1]
    ok = len(before[0]) == 1 and len(kept) == 1 and kept[0]["status"] == "403"
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: a marked refusal, then 20 s of pipelined refused requests with 8,000-byte URLs on "
        "4 connections at a time",
        f"the marked refusal is still in the proxy's log; one request per connection, at most "
        f"{CAGE_CONNECTIONS_PER_SECOND}/s (burst {CAGE_CONNECTIONS_BURST}) new connections per cage",
        {
            **flood,
            "flood lines logged": len(flood_lines),
            "of them cut (truncated)": sum("truncated" in e for e in flood_lines),
            "throttled SYNs (nft counter)": throttled,
            "proxy log files now (MiB)": round(size / 2**20, 2),
            "marked refusal still logged": bool(kept),
        },
        ok,
    )
    assert ok, (before[0], kept, flood)


OPEN_TUNNEL = """
s = socket.create_connection(("egress-proxy", 3128), 10)
s.sendall(f"CONNECT {ARG['target']} HTTP/1.1\\r\\nHost: {ARG['target']}\\r\\n\\r\\n".encode())
reply = s.recv(200)
print(json.dumps({"status": int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0}), flush=True)
time.sleep(ARG["hold"])
s.close()
out({"closed": True})
"""


def _kernel_log() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()


def test_an_allowed_tunnel_is_on_record_while_it_is_still_open(isolation_bench):
    """Finding 5: Squid writes a CONNECT line only when its tunnel closes, so a tunnel open when the
    proxy dies would be on no record. The host's firewall logs each connection a proxy opens when it
    opens (kernel log: the journal on a host), out of the cage's reach; Squid's line follows at close."""
    bench = isolation_bench
    proxy = bench.proxy(CAGE_A)
    egress_ip = next(ip for net, ip in bench.addresses(proxy).items() if net != f"cage-{CAGE_A}")
    allowed = next(c for c in bench.stack.config.claws if c.name == CAGE_A).egress[0]
    target = f"{allowed.host}:{allowed.port}"
    seen_before = set(_kernel_log())  # the ring buffer is bounded: compare lines, not positions
    since = str(int(time.time()) - 1)
    holder = bench.popen_probe(f"claw-{CAGE_A}", OPEN_TUNNEL, {"target": target, "hold": 8}, timeout=30)
    first = holder.stdout.readline()
    time.sleep(2)  # the tunnel is open now, for another ~6 s
    pattern = re.compile(rf"clawstaff-proxy-open: .* SRC={re.escape(egress_ip)} DST={re.escape(OUTSIDE_IP)} .*DPT=443 ")
    opened = [l for l in _kernel_log() if l not in seen_before if pattern.search(l)]
    squid_while_open = [
        e
        for l in subprocess.run(["docker", "logs", "--since", since, proxy.name], capture_output=True, text=True).stdout.splitlines()
        if (e := parse_access_line(l)) is not None and e["request"] == target
    ]  # fmt: skip
    still_open = holder.poll() is None
    holder.communicate(timeout=30)
    squid_after = []
    for _ in range(20):
        done = subprocess.run(["docker", "logs", "--since", since, proxy.name], capture_output=True, text=True)
        squid_after = [
            e for l in done.stdout.splitlines() if (e := parse_access_line(l)) is not None and e["request"] == target
        ]
        if squid_after:
            break
        time.sleep(0.5)
    ok = '"status": 200' in first and still_open and len(opened) >= 1 and len(squid_after) == 1
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: CONNECT {target}, kept open; the records while it is open, then after it closes",
        "the host's log holds the proxy's connection while the tunnel is open; Squid's line follows at close",
        {
            "tunnel": first.strip(),
            "open while checked": still_open,
            "host log while open": opened[0].split("] ", 1)[-1][:200] if opened else "none",
            "Squid lines while open": len(squid_while_open),
            "Squid lines after close": [f"{e['result']}/{e['status']} {e['bytes']} B" for e in squid_after],
        },
        ok,
    )
    assert ok, (first, still_open, opened, squid_after)
