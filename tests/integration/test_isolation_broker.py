"""Brokered credentials on the real engine (issue 14): the bound header reaches the upstream with the real
value, the claw never holds it, an unbound endpoint sees only the placeholder, and every brokered request
is in the broker's audit log with the claw's identity.

The `local` stack brokers acme-support's ANTHROPIC_API_KEY (header `x-api-key: {value}`, bound to
api.anthropic.com:443) and delivers its SLACK_BOT_TOKEN to the claw's environment. The outside world's
TLS server records every HTTP request it receives (tests/integration/bench.py), which is how the test
sees what left the cage. No probe is ever given a real value: a search inside the cage gets the value's
leading text (which its placeholder shares), its length and its hash, and compares candidates by hash.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from components.broker import CA_MOUNT, parse_audit_line
from tests.integration.bench import CAGE_C

pytestmark = pytest.mark.integration
GROUP = "broker"
CAGE = CAGE_C  # acme-support
SECRET = "ANTHROPIC_API_KEY"
BOUND, UNBOUND = "api.anthropic.com", "slack.com"

# Run as the claw, in its cage: read the placeholder from the claw's own process, then make requests
# through its HTTPS_PROXY (the broker) with the trust the cage gives it (SSL_CERT_FILE).
REQUESTS = """
import hashlib, http.client, ssl
for _ in range(120):  # the broker publishes the cage CA when it starts
    if os.path.exists(os.environ["SSL_CERT_FILE"]): break
    time.sleep(0.5)
proxy = os.environ["HTTPS_PROXY"].rsplit("/", 1)[1].split(":")
for _ in range(120):  # and listens once mitmproxy is loaded (seconds, at the broker's CPU share)
    try:
        socket.create_connection((proxy[0], int(proxy[1])), 2).close(); break
    except OSError:
        time.sleep(0.5)
def claw_env():
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try:
            if open(f"/proc/{p}/cmdline", "rb").read() != ARG["cmdline"].encode(): continue
            raw = open(f"/proc/{p}/environ", "rb").read()
        except OSError:
            continue
        return dict(l.decode().split("=", 1) for l in raw.split(b"\\0") if b"=" in l)
    return {}
env = claw_env()
ph = env.get(ARG["name"], "")
def request(host, path, headers, extra_ca=None):
    ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if extra_ca: ctx.load_verify_locations(cadata=extra_ca)
    ctx.set_alpn_protocols(["http/1.1"])
    c = http.client.HTTPSConnection(proxy[0], int(proxy[1]), context=ctx, timeout=15)
    try:
        c.set_tunnel(host, 443)
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        return {"status": r.status, "body": r.read().decode(errors="replace")[:2000]}
    except Exception as e:
        return {"status": -1, "body": type(e).__name__ + ": " + str(e)[:300]}
    finally:
        c.close()
key = {ARG["header"]: ph}
res = {
    "placeholder_sha": hashlib.sha256(ph.encode()).hexdigest() if ph else None,
    "trust": {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")},
    "bound": request(ARG["bound"], "/v1/messages?beta=tools&user=" + ARG["marker"], key),
    "echo": request(ARG["bound"], "/echo", key),
    "unbound": request(ARG["unbound"], "/api/" + ARG["marker"], key, ARG["ca"]),
    "in_query": request(ARG["bound"], "/v1/messages?leak=" + ph, {}),
    "other_header": request(ARG["bound"], "/v1/" + ARG["marker"] + "/other", {"authorization": "Bearer " + ph}),
}
out(res)
"""

# As the claw: is the real value anywhere it can read? Candidates are found by the value's leading
# text (shared with its placeholder) and compared by hash. Also: every PEM private key the claw can
# read, compared with the cage CA's public key.
SEARCH = """
import hashlib
prefix, length, want = ARG["prefix"].encode(), ARG["length"], ARG["sha"]
hits, scanned, keys_seen, ca_keys = [], 0, 0, []
def look(where, data):
    global scanned
    scanned += 1
    i = data.find(prefix)
    while i != -1:
        if hashlib.sha256(data[i:i + length]).hexdigest() == want:
            hits.append(where); return
        i = data.find(prefix, i + 1)
for p in os.listdir("/proc"):
    if not p.isdigit(): continue
    for part in ("environ", "cmdline"):
        try: look(f"/proc/{p}/{part}", open(f"/proc/{p}/{part}", "rb").read())
        except OSError: pass
from cryptography import x509
from cryptography.hazmat.primitives import serialization
ca = x509.load_pem_x509_certificate(open(ARG["ca_cert"], "rb").read())
ca_pub = ca.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root == "/": dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for f in files:
        path = os.path.join(root, f)
        try:
            if os.path.islink(path) or not os.path.isfile(path): continue
            data = open(path, "rb").read(64 * 1024 * 1024)
        except OSError:
            continue
        look(path, data)
        if b"PRIVATE KEY-----" in data:
            for block in data.split(b"-----BEGIN ")[1:]:
                if b"PRIVATE KEY-----" not in block.split(b"\\n", 1)[0]: continue
                keys_seen += 1
                try:
                    k = serialization.load_pem_private_key(b"-----BEGIN " + block, password=None)
                    pub = k.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
                    if pub == ca_pub: ca_keys.append(path)
                except Exception:
                    pass
out({"hits": hits, "scanned": scanned, "private_keys_seen": keys_seen, "ca_keys": ca_keys,
     "ca_subject": ca.subject.rfc4514_string(), "ca_dir": sorted(os.listdir(ARG["ca_dir"]))})
"""


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cmdline(bench) -> str:
    claw = next(c for c in bench.stack.config.claws if c.name == CAGE)
    return "\0".join(claw.command) + "\0"


@pytest.fixture(scope="module")
def brokered(isolation_bench):
    """One round of requests from the claw, and what the outside server recorded during it."""
    bench = isolation_bench
    marker = "m" + hashlib.sha256(bench.outside.workdir.name.encode()).hexdigest()[:12]
    before = len(bench.outside.http_requests())
    res = bench.probe(
        f"claw-{CAGE}",
        REQUESTS,
        {
            "cmdline": _cmdline(bench),
            "name": SECRET,
            "header": "x-api-key",
            "bound": BOUND,
            "unbound": UNBOUND,
            "marker": marker,
            "ca": bench.outside.cert_pem,
        },
        timeout=90,
    )
    return bench, res, bench.outside.http_requests()[before:], marker


def _received(records, path_part: str) -> list[dict]:
    return [r for r in records if path_part in r["request"]]


def _header(record: dict, name: str) -> list[str]:
    return [v for k, v in record["headers"] if k.lower() == name]


def test_bound_header_arrives_with_the_real_value(brokered):
    bench, res, records, marker = brokered
    real = bench.stack.brokered(CAGE)[SECRET]
    ph = bench.stack.placeholder(CAGE, SECRET)
    got = _received(records, f"/v1/messages?beta=tools&user={marker}")
    values = [_header(r, "x-api-key") for r in got]
    ok = (
        res["placeholder_sha"] == _sha(ph)
        and res["bound"]["status"] == 200
        and len(got) == 1
        and values == [[real]]
        and res["trust"]["SSL_CERT_FILE"] == f"{CA_MOUNT}/bundle.pem"
    )
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: {SECRET} to its bound endpoint {BOUND}:443",
        "the claw holds the placeholder; the upstream receives the real value in x-api-key",
        {
            "claw's env holds the placeholder": res["placeholder_sha"] == _sha(ph),
            "status": res["bound"]["status"],
            "requests received": len(got),
            "x-api-key received": ["the real value" if v == [real] else "OTHER" for v in values],
        },
        ok,
    )
    assert ok, (res, got)


def test_unbound_endpoint_receives_only_the_placeholder(brokered):
    bench, res, records, marker = brokered
    real = bench.stack.brokered(CAGE)[SECRET]
    ph = bench.stack.placeholder(CAGE, SECRET)
    got = _received(records, f"/api/{marker}")
    values = [_header(r, "x-api-key") for r in got]
    leaked = [
        r["request"]
        for r in records
        if real in json.dumps(r)
        and not r["request"].startswith("GET /v1/messages?beta=tools")
        and "/echo" not in r["request"]
    ]
    ok = res["unbound"]["status"] == 200 and values == [[ph]] and not leaked
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: the placeholder sent to {UNBOUND}:443 (allowlisted, not bound)",
        "a plain tunnel: the upstream receives the placeholder, never the value",
        {"status": res["unbound"]["status"], "x-api-key received": ["placeholder" if v == [ph] else v for v in values]},
        ok,
    )
    assert ok, (res["unbound"], got, leaked)


def test_misplaced_placeholder_is_refused_and_logged(brokered):
    bench, res, records, marker = brokered
    ph = bench.stack.placeholder(CAGE, SECRET)
    lines = _audit(bench)
    refused = [l for l in lines if l["verdict"] == "exfiltration-attempt" and l["secret"] == SECRET]
    sent = [r for r in records if ph in json.dumps(r) and f"/api/{marker}" not in r["request"]]
    ok = (
        res["in_query"]["status"] == 403
        and res["other_header"]["status"] == 403
        and len(refused) >= 2
        and any(l["path"] == "/v1/messages?leak=" for l in refused)
        and not sent
    )
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: the placeholder in a query string, and in another header, to {BOUND}",
        "refused by the broker (403), logged as exfiltration-attempt, nothing sent upstream",
        {
            "statuses": [res["in_query"]["status"], res["other_header"]["status"]],
            "audit lines": len(refused),
            "requests upstream with it": len(sent),
        },
        ok,
    )
    assert ok, (res["in_query"], res["other_header"], refused, sent)


def test_an_endpoint_that_echoes_the_header_shows_the_claw_the_placeholder(brokered):
    bench, res, _, _ = brokered
    real = bench.stack.brokered(CAGE)[SECRET]
    ph = bench.stack.placeholder(CAGE, SECRET)
    body = res["echo"]["body"]
    ok = res["echo"]["status"] == 200 and ph in body and real not in body
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: {BOUND}/echo reflects the request headers",
        "the response reaches the claw with the placeholder, not the value",
        {"status": res["echo"]["status"], "placeholder in body": ph in body, "value in body": real in body},
        ok,
    )
    assert ok, res["echo"]


def _audit(bench) -> list[dict]:
    logs = subprocess.run(["docker", "logs", f"broker-{CAGE}"], capture_output=True, text=True).stdout
    return [e for e in (parse_audit_line(l) for l in logs.splitlines()) if e is not None]


def test_audit_line_per_brokered_request_with_the_claws_identity(brokered):
    bench, _, _, _ = brokered
    lines = _audit(bench)  # the fixture's round is the only traffic through this broker in a session
    brokered_lines = [l for l in lines if l["verdict"] == "brokered" and l["path"].startswith("/v1/messages")]
    ok = (
        len(brokered_lines) == 1
        and all(l["claw"] == CAGE and l["org"] == "acme" for l in lines)
        and brokered_lines[0]["secret"] == SECRET
        and brokered_lines[0]["host"] == f"{BOUND}:443"
        and brokered_lines[0]["path"] == "/v1/messages?beta=&user="  # query values never logged
        and brokered_lines[0]["status"] == "200"
        and int(brokered_lines[0]["bytes_in"]) > 0
        and not any(UNBOUND in l["host"] for l in lines)  # a tunnel is not opened: Squid logs its CONNECT
    )
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: the broker's audit log",
        "one JSON line per opened request: claw, org, method, host, path without query values, status, "
        "bytes, duration, secret name; tunnels absent",
        brokered_lines[0] if brokered_lines else {"lines": lines[-5:]},
        ok,
    )
    assert ok, lines


def test_the_claw_finds_the_real_value_nowhere_and_no_ca_key(brokered):
    bench, _, _, _ = brokered
    real = bench.stack.brokered(CAGE)[SECRET]
    ph = bench.stack.placeholder(CAGE, SECRET)
    prefix = real[: next(i for i in range(len(real)) if real[i] != ph[i])]
    assert 4 <= len(prefix) < len(real) - 8, "the search needs a shared, non-secret leading text"
    res = bench.probe(
        f"claw-{CAGE}",
        SEARCH,
        {
            "prefix": prefix,
            "length": len(real),
            "sha": _sha(real),
            "ca_cert": f"{CA_MOUNT}/cage-ca.pem",
            "ca_dir": CA_MOUNT,
        },
        timeout=240,
    )
    inspect = subprocess.run(
        ["docker", "inspect", f"claw-{CAGE}", f"broker-{CAGE}"], capture_output=True, text=True, check=True
    ).stdout
    logs = "".join(
        subprocess.run(["docker", "logs", n], capture_output=True, text=True).stdout
        + subprocess.run(["docker", "logs", n], capture_output=True, text=True).stderr
        for n in (f"claw-{CAGE}", f"broker-{CAGE}", f"proxy-{CAGE}")
    )
    claw_env = json.loads(inspect)[0]["Config"]["Env"]
    ok = (
        not res["hits"]
        and res["scanned"] > 1000
        and not res["ca_keys"]
        and res["ca_dir"] == ["bundle.pem", "cage-ca.pem"]
        and real not in inspect
        and real not in logs
        and not any("PRIVATE KEY" in e for e in claw_env)
    )
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: the claw, as its uid, searches /proc of every process it sees and every file it can read",
        "the brokered value nowhere; no private key of the cage CA; not in docker inspect or the logs",
        {
            "value found in": res["hits"] or "nowhere",
            "files and /proc entries searched": res["scanned"],
            "PEM private keys seen / of the cage CA": f"{res['private_keys_seen']} / {len(res['ca_keys'])}",
            "CA directory": res["ca_dir"],
            "in docker inspect (claw, broker)": real in inspect,
            "in the cage's logs": real in logs,
        },
        ok,
    )
    assert ok, res


def test_no_ca_key_on_disk_while_the_broker_runs(brokered):
    """The CA key lives in the broker's memory only: not in its container's files or tmpfs, not in
    the host's broker directory, not in the claw's view (above)."""
    bench, _, _, _ = brokered
    listing = bench.exec(
        f"broker-{CAGE}",
        """
import os
found = []
for root in ("/tmp", "/run/clawcage-ca", "/run/clawcage"):
    for d, _, files in os.walk(root, onerror=lambda e: None):
        for f in files:
            try: data = open(os.path.join(d, f), "rb").read()
            except OSError: continue
            found.append([os.path.join(d, f), b"PRIVATE KEY" in data])
out(found)
""",
    )
    files = json.loads([l for l in listing.stdout.splitlines() if l.strip()][-1])
    diff = subprocess.run(["docker", "diff", f"broker-{CAGE}"], capture_output=True, text=True).stdout
    # Docker's own mount points (its init, the bind mounts' targets) are not writes of the broker.
    docker_own = {"/usr", "/usr/sbin", "/usr/sbin/docker-init", "/run", CA_MOUNT, "/run/clawcage"}
    diff = "\n".join(l for l in diff.splitlines() if l.split(" ", 1)[-1] not in docker_own)
    from components.conventions import host_broker_dir

    host = subprocess.run(
        ["grep", "-r", "-l", "PRIVATE KEY", host_broker_dir(CAGE)], capture_output=True, text=True
    ).stdout
    ok = files and not any(k for _, k in files) and not diff.strip() and not host.strip()
    bench.scorecard.record(
        GROUP,
        f"{CAGE}: the broker's files (tmpfs, mounts, container layer) and the host's broker directory",
        "no private key: the cage CA's key is in the broker's memory only",
        {"broker files": [f for f, _ in files], "container layer changes": diff.split() or "none"},
        ok,
    )
    assert ok, (files, diff, host)


def test_another_cage_cannot_reach_the_broker(isolation_bench):
    """The broker is on its own cage's network only: a claw of another cage (same org) reaches it
    neither by its alias nor by its address."""
    bench = isolation_bench
    from tests.integration.bench import CAGE_A

    address = bench.addresses(bench.deployment.client.containers.get(f"broker-{CAGE}"))
    res = bench.probe(
        f"claw-{CAGE_A}",
        """
res = {}
for label, host in (("alias", "egress-broker"), ("address", ARG["ip"])):
    try:
        socket.create_connection((host, 3128), 3).close(); res[label] = "CONNECTED"
    except OSError as e:
        res[label] = type(e).__name__
out(res)
""",
        {"ip": next(iter(address.values()))},
    )
    ok = all(v != "CONNECTED" for v in res.values()) and len(address) == 1
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A} -> {CAGE}'s broker (by alias, by address)",
        "unreachable: the broker joins its own cage network only",
        {"networks of the broker": sorted(address), **res},
        ok,
    )
    assert ok, (address, res)
