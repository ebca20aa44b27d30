"""What brokered credentials cost, measured on this machine's engine in one run (issue 14):

    sudo .venv/bin/python -m benchmarks.broker [--requests 150] [--out benchmarks/broker-results.json]

- memory per cage with and without brokering: the cage's own containers besides the claw (the proxy;
  the proxy and the broker), each container's memory usage less page cache (what `docker stats` shows),
  after the latency run has warmed both paths up; acme-support (brokered) against acme-reports (not);
- added latency per brokered request: from the claw of acme-support, the same HTTPS GET to the same
  upstream (the isolation bench's outside TLS server, api.anthropic.com:443) through a plain tunnel
  (CONNECT at the cage's Squid, TLS from the claw to the upstream) and brokered (the broker terminates
  TLS with the cage CA, attaches the key, opens TLS to the upstream through the same Squid); each
  request on a new connection (the proxy serves one request per connection), interleaved, paced below
  the cage's connection rate limit; p50 and p95 of each, and their ratios.

It deploys the isolation bench (tests/integration/bench.py: the local stack and the outside world),
measures, and tears it down; wrap it in `flock /tmp/clawstaff-host.lock` on a shared engine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration import bench as bench_mod  # noqa: E402

CAGE, PLAIN_CAGE = bench_mod.CAGE_C, bench_mod.CAGE_A  # acme-support brokers; acme-reports does not
MIB = 1024 * 1024

LATENCY = """
import hashlib, http.client, ssl
proxy_env = os.environ["HTTPS_PROXY"].rsplit("/", 1)[1].split(":")
broker = (proxy_env[0], int(proxy_env[1]))
for _ in range(240):
    try:
        socket.create_connection(broker, 2).close(); break
    except OSError:
        time.sleep(0.5)
env = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            if open(f"/proc/{p}/cmdline", "rb").read() == ARG["cmdline"].encode():
                raw = open(f"/proc/{p}/environ", "rb").read()
                env = dict(l.decode().split("=", 1) for l in raw.split(b"\\0") if b"=" in l)
        except OSError:
            pass
ph = env["ANTHROPIC_API_KEY"]
def once(via, ctx, headers):
    start = time.perf_counter()
    c = http.client.HTTPSConnection(via[0], via[1], context=ctx, timeout=20)
    c.set_tunnel(ARG["host"], 443)
    c.request("GET", "/v1/bench", headers=headers)
    r = c.getresponse(); r.read(); c.close()
    if r.status != 200: raise RuntimeError(r.status)
    return (time.perf_counter() - start) * 1000
tunnel_ctx = ssl.create_default_context(cadata=ARG["ca"]); tunnel_ctx.set_alpn_protocols(["http/1.1"])
broker_ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"]); broker_ctx.set_alpn_protocols(["http/1.1"])
once(("egress-proxy", 3128), tunnel_ctx, {}); once(broker, broker_ctx, {"x-api-key": ph})  # warm-up
tunnel, brokered = [], []
for i in range(ARG["n"]):
    tunnel.append(once(("egress-proxy", 3128), tunnel_ctx, {}))
    time.sleep(ARG["pace"])
    brokered.append(once(broker, broker_ctx, {"x-api-key": ph}))
    time.sleep(ARG["pace"])
out({"tunnel": tunnel, "brokered": brokered})
"""


def _memory(container) -> float:
    stats = container.stats(stream=False)["memory_stats"]
    cache = stats.get("stats", {}).get("cache", 0) or stats.get("stats", {}).get("inactive_file", 0)
    return (stats["usage"] - cache) / MIB


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(requests: int) -> dict:
    scorecard = bench_mod.Scorecard()
    bench = bench_mod.start_bench(scorecard)
    try:
        claw = next(c for c in bench.stack.config.claws if c.name == CAGE)
        res = bench.probe(
            f"claw-{CAGE}",
            LATENCY,
            {
                "cmdline": "\0".join(claw.command) + "\0",
                "host": "api.anthropic.com",
                "ca": bench.outside.cert_pem,
                "n": requests,
                "pace": 0.12,
            },
            timeout=600,
        )
        client = bench.deployment.client
        memory = {
            name: round(_memory(client.containers.get(name)), 1)
            for name in (f"proxy-{CAGE}", f"broker-{CAGE}", f"proxy-{PLAIN_CAGE}", f"claw-{CAGE}", f"claw-{PLAIN_CAGE}")
        }
    finally:
        bench.teardown()
        bench.outside.remove()
    t, b = res["tunnel"], res["brokered"]
    figures = {
        "tunnel_p50_ms": round(_pct(t, 0.5), 2),
        "tunnel_p95_ms": round(_pct(t, 0.95), 2),
        "brokered_p50_ms": round(_pct(b, 0.5), 2),
        "brokered_p95_ms": round(_pct(b, 0.95), 2),
    }
    figures |= {
        "added_p50_ms": round(figures["brokered_p50_ms"] - figures["tunnel_p50_ms"], 2),
        "ratio_p50": round(figures["brokered_p50_ms"] / figures["tunnel_p50_ms"], 2),
        "ratio_p95": round(figures["brokered_p95_ms"] / figures["tunnel_p95_ms"], 2),
        "tunnel_mean_ms": round(statistics.mean(t), 2),
        "brokered_mean_ms": round(statistics.mean(b), 2),
    }
    without = memory[f"proxy-{PLAIN_CAGE}"]
    with_broker = memory[f"proxy-{CAGE}"] + memory[f"broker-{CAGE}"]
    return {
        "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"),
        "requests_each": requests,
        "latency": figures,
        "memory_mib": memory,
        "per_cage_overhead_mib": {
            "without_brokering (proxy)": round(without, 1),
            "with_brokering (proxy + broker)": round(with_broker, 1),
            "ratio": round(with_broker / without, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "broker-results.json")
    args = parser.parse_args(argv)
    result = measure(args.requests)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
