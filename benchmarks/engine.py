"""Per-cage overhead and density on the real Docker engine of this machine, with docker-py.

A cage here is what components/cage.py declares, built with the same settings: an internal cage
network (ICC on, its own bridge name), the egress proxy (Squid, read-only, no capabilities, its
rendered squid.conf mounted read-only, on the cage network with its alias and on a shared egress
network with ICC off) and the claw (cage-init, sealed credentials, the key file mounted read-only,
read-only rootfs, noexec tmpfs, no capabilities, no DNS out, the same health check). Two things are
simplified and said so in the results: the whole-cage parent cgroup is left for Docker to create (the
limits script is not run), and the key file is written by this script rather than by the host
command. Everything started here carries the label clawstaff.bench=<run id> and is removed at the end.

The bare run is `docker run` of the same claw-runtime image with the same command (python3 directly,
no cage-init, no proxy, no network of its own, Docker's defaults) and a trivial health check run with
the same interval, so the two create-to-healthy times differ only by what the cage adds.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import docker
from docker.types import Healthcheck, Mount

from components import cage as cage_component
from components import cagehost
from components.conventions import (
    CAGE_KEY_MOUNT,
    LABEL_CLAW,
    LABEL_ROLE,
    PROXY_ALIAS,
    PROXY_CONFIG_MOUNT,
    SEALED_ENV,
    cage_bridge_name,
)
from components.egress import PROXY_PORT, egress_allowlist, render_proxy_config
from components.hostconfig import LOCAL_CGROUP_DRIVER
from components.model import Endpoint
from components.sealing import CLAW_ENV, cage_key_file_text, derive_cage_key, seal_credentials
from components.units import MiB

# The images `make images` builds now (images/VERSION); benchmarks/suites.py swaps in other builds.
VERSION = (Path(__file__).resolve().parent.parent / "images" / "VERSION").read_text().strip()
CLAW_IMAGE = f"clawstaff/claw-runtime:{VERSION}"
PROXY_IMAGE = f"clawstaff/egress-proxy:{VERSION}"
CLAW_COMMAND = ["/usr/bin/python3", "-c", "import signal; signal.pause()"]
SEALING_KEY = "benchmark-sealing-key-0123456789abcdef0123456789"
CONTROL_PLANE = Endpoint("control.clawstaff.example", 443)
LABEL_BENCH = "clawstaff.bench"
PROBE_INTERVAL_NS = 250_000_000  # both sides: how often Docker probes health while we wait


@dataclass
class Bench:
    client: docker.DockerClient
    run_id: str
    workdir: Path
    remap_base: int  # userns-remap: container uid U is host uid remap_base + U

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL_BENCH: self.run_id}


def open_bench() -> Bench:
    client = docker.from_env(timeout=120)
    client.ping()
    for image in (CLAW_IMAGE, PROXY_IMAGE):
        client.images.get(image)  # raises ImageNotFound: build them with `make images`
    return Bench(client, uuid.uuid4().hex[:8], Path(tempfile.mkdtemp(prefix="clawbench-")), _remap_base())


def _remap_base() -> int:
    """The first host uid of dockremap's range when the engine runs with userns-remap, else 0."""
    try:
        for line in Path("/etc/subuid").read_text().splitlines():
            user, start, _ = line.split(":")
            if user == "dockremap":
                return int(start)
    except (OSError, ValueError):
        pass
    return 0


def _hardening(uid: int, memory: int, cpus: Decimal, tmpfs_size: int, claw: str, init: bool) -> dict[str, Any]:
    """components.cage.hardening, in docker-py's words."""
    return dict(
        user=f"{uid}:{uid}",
        read_only=True,
        tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={tmpfs_size}"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges:true"],
        privileged=False,
        init=init,
        restart_policy={"Name": "on-failure", "MaximumRetryCount": cage_component.MAX_RESTARTS},
        mem_limit=cage_component.memory_mb(memory) * MiB,
        memswap_limit=cage_component.memory_mb(memory) * MiB,
        nano_cpus=int(cpus * 10**9),
        cgroup_parent=cagehost.cgroup_parent(claw, LOCAL_CGROUP_DRIVER),
        ipc_mode="private",
        sysctls={"net.ipv6.conf.all.disable_ipv6": "1"},
        log_config={"Type": "json-file", "Config": dict(cage_component.LOG_OPTS)},
    )


# The shared egress network's subnet. components/host.py leaves it to Docker, which takes a /29 from
# the cage pool (hostconfig.CAGE_SUBNET_PREFIX): room for 5 proxies, so a host holds at most 5 cages.
# Here it gets a /24 at the top of the cage pool (Docker allocates from the bottom) so that density
# measures what cages cost; benchmarks/README.md reports the limit itself.
EGRESS_SUBNET = "198.19.255.0/24"


def egress_network(bench: Bench):
    name = f"egress-bench-{bench.run_id}"
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=EGRESS_SUBNET)])
    return bench.client.networks.create(
        name, driver="bridge", options={"com.docker.network.bridge.enable_icc": "false",
                                        "com.docker.network.bridge.name": f"ce-b{bench.run_id}"},
        ipam=ipam, labels=bench.labels)  # fmt: skip


def start_cage(
    bench: Bench,
    claw: str,
    egress_net,
    *,
    uid: int,
    memory: int = 256 * MiB,
    cpus: Decimal = Decimal("0.25"),
    probe_interval_ns: int = PROBE_INTERVAL_NS,
) -> dict[str, Any]:
    """Create a cage like components/cage.py and wait until its claw is healthy; return the timings."""
    client = bench.client
    t0 = time.perf_counter()
    labels = {**bench.labels, LABEL_CLAW: claw}
    net = client.networks.create(
        f"cage-{claw}", driver="bridge", internal=True,
        options={"com.docker.network.bridge.enable_icc": "true", "com.docker.network.bridge.name": cage_bridge_name(claw)},
        labels={**labels, LABEL_ROLE: "cage-network"})  # fmt: skip
    t_network = time.perf_counter()
    state = bench.workdir / claw
    (state / "proxy").mkdir(parents=True)
    (state / "key").mkdir()
    (state / "proxy" / "squid.conf").write_text(
        render_proxy_config(
            claw=claw, org="bench", allowlist=egress_allowlist([Endpoint("api.anthropic.com", 443)], CONTROL_PLANE)
        )
    )
    key = derive_cage_key(SEALING_KEY, claw)
    key_file = state / "key" / "key"
    key_file.write_text(cage_key_file_text(key))
    os.chown(key_file, bench.remap_base + uid, bench.remap_base + uid)
    os.chmod(key_file, 0o400)
    os.chmod(state / "key", 0o755)
    proxy = client.containers.create(
        PROXY_IMAGE, name=f"proxy-{claw}", labels={**labels, LABEL_ROLE: "proxy"},
        network=egress_net.name,
        mounts=[Mount(PROXY_CONFIG_MOUNT, str(state / "proxy"), type="bind", read_only=True)],
        **_hardening(uid + 1, cage_component.PROXY_MEMORY, cage_component.PROXY_CPUS, 16 * MiB, claw, init=True))  # fmt: skip
    net.connect(proxy, aliases=[PROXY_ALIAS])
    proxy.start()
    t_proxy = time.perf_counter()
    proxy_url = f"http://{PROXY_ALIAS}:{PROXY_PORT}"
    sealed = seal_credentials(key, claw, {"MODEL_API_KEY": "sk-bench-not-a-secret"})
    claw_container = client.containers.create(
        CLAW_IMAGE, command=CLAW_COMMAND, name=f"claw-{claw}", labels={**labels, LABEL_ROLE: "claw"},
        network=net.name, dns=list(cage_component.CAGE_DNS),
        environment=[f"{SEALED_ENV}={sealed}", f"{CLAW_ENV}={claw}", f"HTTPS_PROXY={proxy_url}", f"HTTP_PROXY={proxy_url}",
                     f"https_proxy={proxy_url}", f"http_proxy={proxy_url}"],
        mounts=[Mount(CAGE_KEY_MOUNT.rsplit("/", 1)[0], str(state / "key"), type="bind", read_only=True)],
        healthcheck=Healthcheck(
            test=["CMD", "/usr/bin/python3", "-c",
                  f"import socket; socket.create_connection(('{PROXY_ALIAS}', {PROXY_PORT}), 3).close()"],
            interval=probe_interval_ns, timeout=5 * 10**9, retries=3, start_period=10 * 10**9),
        **_hardening(uid, memory, cpus, 64 * MiB, claw, init=False))  # fmt: skip
    claw_container.start()
    t_claw = time.perf_counter()
    healthy = _wait_healthy(claw_container, timeout=60.0 + 3 * probe_interval_ns / 1e9)
    return {
        "claw": claw,
        "seconds": healthy - t0,
        "proxy": proxy,
        "container": claw_container,
        "steps": {
            "network": t_network - t0,
            "proxy": t_proxy - t_network,
            "claw": t_claw - t_proxy,
            "first_healthy_probe": healthy - t_claw,
        },
    }


def start_bare(bench: Bench, name: str) -> dict[str, Any]:
    """`docker run` of the claw image with the claw's command, Docker's defaults, a trivial probe."""
    t0 = time.perf_counter()
    container = bench.client.containers.run(
        CLAW_IMAGE, entrypoint=[CLAW_COMMAND[0]], command=CLAW_COMMAND[1:], name=f"bare-{name}", detach=True,
        labels={**bench.labels, LABEL_ROLE: "bare"},
        healthcheck=Healthcheck(test=["CMD", "/usr/bin/python3", "-c", "pass"], interval=PROBE_INTERVAL_NS,
                                timeout=5 * 10**9, retries=3))  # fmt: skip
    healthy = _wait_healthy(container)
    return {"seconds": healthy - t0, "container": container}


def _wait_healthy(container, timeout: float = 60.0) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        container.reload()
        status = container.attrs["State"].get("Health", {}).get("Status")
        if status == "healthy":
            return time.perf_counter()
        if container.status in ("exited", "dead"):
            raise RuntimeError(f"{container.name} exited: {container.logs(tail=20).decode(errors='replace')}")
        time.sleep(0.02)
    raise RuntimeError(f"{container.name} not healthy after {timeout} s")


def memory_of(container, reads: int = 5) -> dict[str, float]:
    """The container's memory (MiB) from its cgroup: rss (anonymous, what the cage really costs) and
    usage (with page cache, which the kernel reclaims). The least of a few reads: a health probe is a
    short-lived python3 in the same cgroup, and it is not what the cage costs at rest."""
    rss_reads, usage_reads = [], []
    for _ in range(reads):
        stats = container.stats(stream=False, one_shot=True)["memory_stats"]
        detail = stats.get("stats", {})
        rss_reads.append(detail.get("rss", detail.get("anon", 0)))
        usage_reads.append(stats.get("usage", 0))
        time.sleep(0.05)
    return {"rss": min(rss_reads) / MiB, "usage": min(usage_reads) / MiB}


def host_used_mib() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    kib = lambda k: int(info[k].split()[0])  # noqa: E731
    return (kib("MemTotal") - kib("MemAvailable")) / 1024


def cleanup(bench: Bench) -> None:
    """Remove every container and network this run started (by its label), and its files."""
    client = bench.client
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_BENCH}={bench.run_id}"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"{LABEL_BENCH}={bench.run_id}"}):
        network.remove()
    shutil.rmtree(bench.workdir, ignore_errors=True)


def _remove(*containers) -> None:
    for c in containers:
        c.remove(force=True)


def overhead(samples: int = 5) -> dict[str, Any]:
    """Create-to-healthy of a cage and of a bare run, interleaved; memory of the proxy and of the claw
    container (cage-init, the claw's pid 1 and log relay, around the claw) against the bare container."""
    bench = open_bench()
    try:
        egress = egress_network(bench)
        cage_times, bare_times, proxy_mem, claw_mem, bare_mem, steps = [], [], [], [], [], []
        for i in range(samples):
            cage = start_cage(bench, f"bench-{bench.run_id}-{i}", egress, uid=20000 + 2 * i)
            bare = start_bare(bench, f"{bench.run_id}-{i}")
            time.sleep(1.0)  # let both settle before reading memory
            proxy_mem.append(memory_of(cage["proxy"]))
            claw_mem.append(memory_of(cage["container"]))
            bare_mem.append(memory_of(bare["container"]))
            cage_times.append(cage["seconds"])
            steps.append(cage["steps"])
            bare_times.append(bare["seconds"])
            _remove(cage["container"], cage["proxy"], bare["container"])
            bench.client.networks.get(f"cage-{cage['claw']}").remove()
        med = statistics.median
        return {
            "samples": samples,
            "cage_create_to_healthy_s": med(cage_times),
            "bare_create_to_healthy_s": med(bare_times),
            "ratio": med(cage_times) / med(bare_times),
            "proxy_rss_mib": med(m["rss"] for m in proxy_mem),
            "proxy_usage_mib": med(m["usage"] for m in proxy_mem),
            "claw_rss_mib": med(m["rss"] for m in claw_mem),
            "bare_rss_mib": med(m["rss"] for m in bare_mem),
            "cage_init_rss_mib": med(c["rss"] - b["rss"] for c, b in zip(claw_mem, bare_mem)),
            "overhead_per_cage_mib": med(
                p["rss"] + c["rss"] - b["rss"] for p, c, b in zip(proxy_mem, claw_mem, bare_mem)
            ),
            "probe_interval_s": PROBE_INTERVAL_NS / 1e9,
            "cage_steps_s": {k: med(s[k] for s in steps) for k in steps[0]},
        }
    finally:
        cleanup(bench)


# components/cage.py's health-check interval: 50 cages probed every 0.25 s would measure the probes.
CAGE_PROBE_INTERVAL_NS = 30 * 10**9


def density(cages: int = 50, workers: int = 25) -> dict[str, Any]:
    """Start `cages` cages like the local stack's claws (0.25 cpus, 256MiB), `workers` at a time, with
    the cage's own health-check interval; memory per cage once all are healthy."""
    bench = open_bench()
    try:
        before = host_used_mib()
        egress = egress_network(bench)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            started = list(pool.map(lambda i: start_cage(bench, f"dense-{bench.run_id}-{i:02d}", egress, uid=30000 + 2 * i,
                                                         probe_interval_ns=CAGE_PROBE_INTERVAL_NS), range(cages)))  # fmt: skip
        elapsed = time.perf_counter() - t0
        time.sleep(3.0)
        after = host_used_mib()
        mems = [(memory_of(c["proxy"], reads=2), memory_of(c["container"], reads=2)) for c in started]
        rss = sum(p["rss"] + c["rss"] for p, c in mems)
        return {
            "cages": cages,
            "all_healthy": len(started) == cages,
            "seconds_to_all_healthy": elapsed,
            "probe_interval_s": CAGE_PROBE_INTERVAL_NS / 1e9,
            "cgroup_rss_per_cage_mib": rss / cages,
            "host_used_per_cage_mib": (after - before) / cages,
        }
    finally:
        cleanup(bench)
