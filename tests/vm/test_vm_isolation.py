"""Isolation proved on the VM host (issue 11 item 6; issue 12 rows 1-3 on cgroup v2): the probes that
depend on the host, run in the probe cage as the claw's own user while the neighbour cage measures
its own latency. Each probe records a row of the VM scorecard (docs/vm-isolation-report.md) before
it asserts; latency and throughput are figures in the scorecard, never asserted (TCG is ~27x slower
than real hardware, and so are these numbers)."""

from __future__ import annotations

import posixpath
import re
import secrets
import subprocess
import time

import pytest

from components.cagehost import volume_mount_path
from components.conventions import CLAW_LOG_BURST_BYTES, CLAW_LOG_RATE_BYTES
from components.egress import CAGE_CONNECTIONS_BURST, CAGE_CONNECTIONS_PER_SECOND
from components.firewall import NFT_TABLE
from tests.integration.test_isolation_filesystem import FILL
from tests.integration.test_isolation_findings import FLOOD, LOG_FLOOD, relayed_since
from tests.integration.test_isolation_limits import CPU_SPIN, MEMORY_HOG
from tests.vm import probes
from tests.vm.conftest import GVISOR, NEIGHBOUR, PROBE, cage_cgroup, container_cgroup, neighbour_row, ssh
from tools import vm

pytestmark = pytest.mark.vm
GROUP = "vm host"
MiB = probes.MiB
METADATA_IP, METADATA_IF = probes.METADATA_IP, "clawmeta0"


# --- limits: memory, CPU, disk ----------------------------------------------------------------------------


def test_a_memory_hog_is_oom_killed_inside_its_own_cage(cages, vm_scorecard, neighbour):
    _, machine, _ = cages
    cage, other = cage_cgroup(machine, PROBE), cage_cgroup(machine, NEIGHBOUR)
    limit = probes.cgroup_file(machine, container_cgroup(machine, f"claw-{PROBE}"), "memory.max").strip()
    before = [probes.keyed(probes.cgroup_file(machine, d, "memory.events"))["oom_kill"] for d in (cage, other)]
    state_before = probes.restarts_and_state(machine, NEIGHBOUR)
    neighbour.window()  # from here on: during the fault
    hog = probes.run(machine, f"claw-{PROBE}", MEMORY_HOG, timeout=120)
    during = neighbour.window()
    after = [probes.keyed(probes.cgroup_file(machine, d, "memory.events"))["oom_kill"] for d in (cage, other)]
    state_after = probes.restarts_and_state(machine, NEIGHBOUR)
    ok = hog.returncode == 137 and after[0] > before[0] and after[1] == before[1] and state_after == state_before
    vm_scorecard.record(
        GROUP, f"{PROBE}: allocates 16 MiB blocks until stopped",
        f"OOM-killed inside its cage (the claw's memory.max {int(limit) // MiB} MiB); the neighbour's "
        "cgroup sees no OOM kill and its containers keep running",
        f"exit {hog.returncode}; oom_kill in the probe cage's cgroup {before[0]} -> {after[0]}, in the "
        f"neighbour's {before[1]} -> {after[1]}; neighbour claw/proxy (restarts status) {state_before} -> "
        f"{state_after}", ok,
    )  # fmt: skip
    held = neighbour_row(vm_scorecard, "memory hog in the probe cage", during, neighbour.rest)
    assert ok and held, (hog.returncode, hog.stderr[-300:], before, after, state_before, state_after)


def test_a_cpu_spin_is_throttled_at_its_quota(cages, vm_scorecard, neighbour):
    _, machine, _ = cages
    claw_dir, cage = container_cgroup(machine, f"claw-{PROBE}"), cage_cgroup(machine, PROBE)
    quota = probes.cgroup_file(machine, claw_dir, "cpu.max").split()
    stats = lambda: [probes.keyed(probes.cgroup_file(machine, d, "cpu.stat")) for d in (claw_dir, cage)]  # noqa: E731
    before = stats()
    neighbour.window()  # from here on: during the fault
    t0 = time.monotonic()
    spin = probes.probe(machine, f"claw-{PROBE}", CPU_SPIN, {"procs": 2, "seconds": 4}, timeout=120)
    after, wall = stats(), time.monotonic() - t0
    during = neighbour.window()
    delta = [{k: a[k] - b[k] for k in ("usage_usec", "nr_throttled", "throttled_usec")} for a, b in zip(after, before)]
    ok = spin["spinners"] == 2 and delta[0]["nr_throttled"] > 0 and delta[0]["throttled_usec"] > 0
    vm_scorecard.record(
        GROUP, f"{PROBE}: two processes spin for 4 s",
        f"throttled at the claw's quota (cpu.max {' '.join(quota)}): nr_throttled and throttled_usec rise",
        f"claw cgroup: {delta[0]['usage_usec'] / 1e6:.1f} CPU-s in the probe's {wall:.1f} s (exec included) = "
        f"{delta[0]['usage_usec'] / 1e6 / wall:.3f} CPU, nr_throttled +{delta[0]['nr_throttled']}, "
        f"throttled +{delta[0]['throttled_usec'] / 1e6:.2f} s; whole cage: nr_throttled +{delta[1]['nr_throttled']}, "
        f"throttled +{delta[1]['throttled_usec'] / 1e6:.2f} s", ok,
    )  # fmt: skip
    held = neighbour_row(vm_scorecard, "CPU spin in the probe cage", during, neighbour.rest)
    assert ok and held, (spin, delta, during)


def test_filling_the_volume_stops_inside_it_and_spares_the_hosts_disk(cages, vm_scorecard, neighbour):
    host, machine, _ = cages
    size = probes.script_facts(host, f"{PROBE}-volume")["size"]
    free_before = probes.root_free(machine)
    neighbour.window()  # from here on: during the fault
    fill = probes.probe(machine, f"claw-{PROBE}", FILL, {"dir": "/data", "limit": size + 64 * MiB}, timeout=300)
    during = neighbour.window()
    used = free_before - probes.root_free(machine)
    # The volume is a sparse file: filling it can take at most its own size from the host's disk.
    ok = fill["error"] == "ENOSPC" and fill["written"] <= size and used <= size + 8 * MiB
    vm_scorecard.record(
        GROUP, f"{PROBE}: fills its volume /data in 1 MiB fsynced writes",
        f"ENOSPC inside the volume ({size // MiB} MiB); the VM's root filesystem loses at most the volume's "
        "own size (its backing file is sparse) + 8 MiB",
        f"{fill['error']} after {fill['written'] // MiB} MiB; root filesystem free space {free_before // MiB} "
        f"-> {(free_before - used) // MiB} MiB ({used / MiB:+.1f} MiB used)", ok,
    )  # fmt: skip
    held = neighbour_row(vm_scorecard, "volume fill in the probe cage", during, neighbour.rest)
    assert ok and held, (fill, used, during)


# --- lateral traffic, host addresses, the metadata address ------------------------------------------------


@pytest.fixture(scope="module")
def lateral(cages, metadata_standin):
    """From the probe cage's claw, once: every port of the list, UDP and ICMP to the neighbour's
    containers, every address of the VM (the metadata stand-in's included) and this machine; and a
    CONNECT to each through the cage's own proxy."""
    _, machine, _ = cages
    neighbour = {f"{c}-{NEIGHBOUR} on {net}": ip for c in ("claw", "proxy") for net, ip in probes.addresses(machine, f"{c}-{NEIGHBOUR}").items()}  # fmt: skip
    own = probes.host_addresses(machine) | {"this machine (the VM's only peer)": vm.HOST_IP}
    res = probes.reach(machine, neighbour | own)
    cases = {k: f"{ip}:3128" for k, ip in neighbour.items()} | {k: f"{ip}:22" for k, ip in own.items()}
    proxied = probes.through_proxy(machine, cases | {"metadata": f"{METADATA_IP}:80"})
    return neighbour, own, res, proxied


def test_from_the_cage_no_neighbour_and_no_host_address_answers(cages, vm_scorecard, lateral):
    neighbour, own, res, proxied = lateral
    rows = (("the neighbour cage's claw and proxy", neighbour), ("the VM host's addresses and this machine", own))
    ok_all = True
    for what, targets in rows:
        hit = sorted(label for label, ip in targets.items() if probes.reached(res[ip]))
        statuses = {label: proxied[label] for label in targets}
        ok = not hit and all(s != 200 for s in statuses.values())
        ok_all &= ok
        vm_scorecard.record(
            GROUP, f"{PROBE} -> {what} (TCP {len(probes.TCP)} ports, UDP {probes.UDP}, ICMP; CONNECT via its proxy)",
            "nothing answers; the proxy refuses every CONNECT",
            f"{len(targets)} addresses {sorted(set(targets.values()))}: answered {hit or 'none'}; "
            f"{probes.summary({ip: res[ip] for ip in targets.values()})}; proxy statuses {sorted(set(statuses.values()))}",
            ok,
        )  # fmt: skip
    assert ok_all, (res, proxied)


@pytest.fixture(scope="module")
def metadata_standin(cages, vm_scorecard):
    """A stand-in for the cloud metadata service inside the VM: 169.254.169.254:80 on a dummy
    interface, serving one file whose content is a fresh marker."""
    _, machine, _ = cages
    marker = f"metadata-{secrets.token_hex(8)}"
    wait = f"python3 -c 'import socket; socket.create_connection((\"{METADATA_IP}\", 80), 1)'"
    up = ssh(machine, f"""set -e
ip link add {METADATA_IF} type dummy 2>/dev/null || true
ip addr replace {METADATA_IP}/32 dev {METADATA_IF}
ip link set {METADATA_IF} up
mkdir -p /run/clawmeta && printf '%s' {marker} > /run/clawmeta/user-data
setsid python3 -m http.server --bind {METADATA_IP} 80 --directory /run/clawmeta </dev/null >/dev/null 2>&1 &
echo $! > /run/clawmeta.pid
for i in $(seq 60); do {wait} 2>/dev/null && exit 0; sleep 0.5; done
exit 1""")  # fmt: skip
    vm_scorecard.notes.append(
        f"a metadata stand-in inside the VM: {METADATA_IP}:80 on a dummy interface ({METADATA_IF}), "
        "python3 -m http.server run by root serving a fresh marker; removed after its probes"
    )
    try:
        assert up.returncode == 0, up.stderr
        yield marker
    finally:
        ssh(machine, f"kill $(cat /run/clawmeta.pid); ip link del {METADATA_IF}; rm -rf /run/clawmeta*")


def test_the_metadata_stand_in_answers_root_on_the_host_only(cages, vm_scorecard, metadata_standin, lateral):
    _, machine, _ = cages
    as_root = ssh(machine, probes.FETCH)
    as_nobody = ssh(machine, f"runuser -u nobody -- {probes.FETCH}")
    res, proxied = lateral[2][METADATA_IP], lateral[3]["metadata"]
    ok = (
        as_root.returncode == 0 and as_root.stdout.strip() == metadata_standin
        and as_nobody.returncode != 0 and "refused" in as_nobody.stderr.lower()
        and not probes.reached(res) and proxied != 200
    )  # fmt: skip
    nobody_error = (as_nobody.stderr.strip().splitlines() or ["no error"])[-1][-120:]
    vm_scorecard.record(
        GROUP, f"{METADATA_IP}:80 (a stand-in inside the VM): host root, host user nobody, the cage",
        "root reads it (cloud-init needs it); nobody is refused by the host firewall; the cage gets nothing",
        f"root: {'read the marker' if as_root.stdout.strip() == metadata_standin else as_root.stderr[-120:]}; "
        f"nobody: exit {as_nobody.returncode}, {nobody_error}; cage direct: {probes.summary({'m': res})}, open "
        f"{res['open'] or 'none'}; cage via its proxy: status {proxied}", ok,
    )  # fmt: skip
    assert ok, (as_root, as_nobody, res, proxied)


# --- DNS exfiltration under Docker 26 ---------------------------------------------------------------------


@pytest.fixture
def dns_counted(cages, vm_scorecard):
    """nft counters for DNS out of the VM, on both ends of its only link (the VM's eth0 and this
    machine's tap): nothing the VM sends can leave another way (tools/vm.py). For the probe the VM
    gets the default route a cloud server has (via this machine, which drops what it routes), so
    that a query forwarded from the host would leave, and be counted."""
    _, machine, _ = cages
    vm_side, tier_side = probes.dns_counter_tables()
    vm_scorecard.notes.append(
        "nft counters of port-53 packets on the VM's eth0 (postrouting, table clawprobe_dns) and on this "
        "machine's tap (prerouting), and a default route via this machine (which drops what it gets), "
        "added for the DNS probe and removed after it"
    )
    try:
        added = machine.ssh("nft -f -", check=False, input=vm_side)
        assert added.returncode == 0, added.stderr
        subprocess.run(["nft", "-f", "-"], input=tier_side, text=True, check=True)
        routed = ssh(machine, f"ip route add default via {vm.HOST_IP} dev eth0")
        assert routed.returncode == 0, routed.stderr
        yield
    finally:
        ssh(machine, f"ip route del default via {vm.HOST_IP} dev eth0")
        ssh(machine, f"nft delete table inet {probes.VM_DNS_TABLE}")
        subprocess.run(["nft", "delete", "table", "inet", probes.TIER_DNS_TABLE], capture_output=True)


def test_a_lookup_from_the_claw_gets_no_answer_and_no_query_leaves_the_vm(cages, vm_scorecard, dns_counted):
    from components.firewall import HETZNER_RESOLVERS

    _, machine, _ = cages
    start = probes.dns_counters(machine)
    # Control: one datagram from the host itself to its resolver is seen at both ends.
    send = f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(bytes(12), ('{HETZNER_RESOLVERS[0]}', 53))"
    ssh(machine, f'python3 -c "import socket; {send}"')
    time.sleep(1)
    control = probes.dns_counters(machine)
    names = {"name": f"exfil-{secrets.token_hex(8)}.leak.example", "proxied": f"tunnel-{secrets.token_hex(8)}.leak.example"}  # fmt: skip
    looked = probes.probe(machine, f"claw-{PROBE}", probes.LOOKUP, names, timeout=90)
    time.sleep(2)
    end = probes.dns_counters(machine)
    seen = [c - s for c, s in zip(control, start)]
    leaked = [e - c for e, c in zip(end, control)]
    ok = (
        all(n >= 1 for n in seen) and leaked == [0, 0]
        and looked["getaddrinfo"].startswith("failed") and " 200 " not in looked["proxy"] + " "
    )  # fmt: skip
    vm_scorecard.record(
        GROUP, "DNS from the claw on Docker 26: resolve a unique outside name; CONNECT to another via its proxy",
        "no answer; not one packet to port 53 leaves the VM (counted on its eth0 and on this machine's tap)",
        f"claw resolv.conf: {looked['resolv.conf']}; getaddrinfo: {looked['getaddrinfo']}; proxy: "
        f"{looked['proxy']}; port-53 packets out (eth0, tap): control from the host +{seen[0]}/+{seen[1]}, "
        f"during the claw's lookups +{leaked[0]}/+{leaked[1]}", ok,
    )  # fmt: skip
    assert all(n >= 1 for n in seen), f"the counters did not see the control datagram: {seen}"
    assert ok, (looked, seen, leaked)


# --- issue 12 rows 1-3 on cgroup v2 -----------------------------------------------------------------------


def test_a_udp_flood_to_its_own_proxy_does_not_grow_the_hosts_conntrack_table(cages, vm_scorecard, neighbour):
    _, machine, _ = cages
    claw_nets, proxy_nets = probes.addresses(machine, f"claw-{PROBE}"), probes.addresses(machine, f"proxy-{PROBE}")
    target = next(ip for net, ip in proxy_nets.items() if net in claw_nets)  # the proxy on the cage's bridge
    pids = [probes.pid_of(machine, f"{c}-{PROBE}") for c in ("proxy", "claw")]
    counts = lambda: [probes.conntrack(machine), *(probes.conntrack(machine, pid) for pid in pids)]  # noqa: E731
    before = counts()
    neighbour.window()  # from here on: during the fault
    flood = probes.probe(machine, f"claw-{PROBE}", FLOOD, {"target": target, "seconds": 4, "min": 2000}, timeout=90)
    after = counts()
    during = neighbour.window()
    grew = [a - b for a, b in zip(after, before)]
    limit = ssh(machine, "cat /proc/sys/net/netfilter/nf_conntrack_max").stdout.strip()
    ok = flood["sent"] > 1000 and grew[0] < flood["sent"] // 20 + 100 and grew[1] < flood["sent"] // 20 + 100
    vm_scorecard.record(
        GROUP, f"{PROBE}: 1-byte UDP datagrams from 8 sockets to closed ports of its own proxy, 4 s (at least 2,000)",
        "the host's and the proxy's conntrack tables do not grow (< 5% of the datagrams + 100); the claw's "
        "own namespace is the bounded residual (docs/attack-findings.md #1)",
        f"{flood['sent']} datagrams; conntrack entries: host {before[0]} -> {after[0]}, proxy's namespace "
        f"{before[1]} -> {after[1]}, claw's own {before[2]} -> {after[2]} (nf_conntrack_max {limit})", ok,
    )  # fmt: skip
    held = neighbour_row(vm_scorecard, "UDP flood (conntrack) in the probe cage", during, neighbour.rest)
    assert ok and held, (flood, before, after, during)


def test_socket_buffers_are_charged_to_the_cages_memory_cgroup(cages, vm_scorecard, neighbour):
    """Finding 2 on cgroup v2: what loopback sockets that never read hold in the kernel is charged to
    the cage (memory.stat `sock`), so the host's available memory cannot fall by more than the cage's
    limit. (On cgroup v1 it was not: docs/attack-findings.md #2.)"""
    _, machine, _ = cages
    cage = cage_cgroup(machine, PROBE)
    cage_max = int(probes.cgroup_file(machine, cage, "memory.max"))
    sock = lambda: probes.keyed(probes.cgroup_file(machine, cage, "memory.stat"))["sock"]  # noqa: E731
    kills = lambda: probes.keyed(probes.cgroup_file(machine, cage, "memory.events"))["oom_kill"]  # noqa: E731
    before, kills_before, available = sock(), kills(), probes.meminfo(machine)["MemAvailable"] * 1024
    neighbour.window()  # from here on: during the fault
    arg = {"conns": 64, "budget_mib": 128, "seconds": 30}
    hog = probes.start(machine, f"claw-{PROBE}", probes.SOCKET_HOG, arg, timeout=180)
    held = hog.readline()
    peak, available_peak = sock(), probes.meminfo(machine)["MemAvailable"] * 1024
    current = int(probes.cgroup_file(machine, cage, "memory.current"))
    code, _, stderr = hog.stop()
    during = neighbour.window()
    after, kills_after = sock(), kills()
    queued = int(held["queued_mib"] * MiB)
    fell = available - available_peak
    ok = code == 0 and peak - before >= queued // 2 and fell <= cage_max + 32 * MiB
    vm_scorecard.record(
        GROUP, f"{PROBE}: {held['conns']} loopback TCP connections that never read; sends up to {arg['budget_mib']} MiB",
        "the buffers are charged to the cage's memory cgroup (memory.stat sock rises by at least half of what "
        f"was queued); host MemAvailable falls by no more than the cage's memory.max ({cage_max // MiB} MiB)",
        f"{held['queued_mib']} MiB queued; the cage's sock {before / MiB:.1f} -> {peak / MiB:.1f} MiB (memory.current "
        f"{current / MiB:.1f} MiB) -> {after / MiB:.1f} MiB after release; host MemAvailable {fell / MiB:+.1f} MiB "
        f"fall; oom_kill {kills_before} -> {kills_after}; hog exit {code}", ok,
    )  # fmt: skip
    neighbour_ok = neighbour_row(vm_scorecard, "socket-buffer hog in the probe cage", during, neighbour.rest)
    assert ok and neighbour_ok, (held, before, peak, after, fell, code, stderr[-500:])


def test_a_log_flood_is_held_to_the_relays_rate_and_the_neighbour_keeps_answering(cages, vm_scorecard, neighbour):
    """Finding 3 on the VM (docs/attack-findings.md #3): pid 1's stdout is refused to the claw; what it
    writes to its own reaches the engine at most at cage-init's burst plus rate, and the hold is on record."""
    _, machine, _ = cages
    log_path = ssh(machine, f"docker inspect -f '{{{{.LogPath}}}}' claw-{PROBE}").stdout.strip()
    since = ssh(machine, "date -u +%Y-%m-%dT%H:%M:%S").stdout.strip()
    engine_before, t0 = probes.engine_cpu_s(machine), time.monotonic()
    neighbour.window()  # from here on: during the fault
    flood = probes.probe(machine, f"claw-{PROBE}", LOG_FLOOD, {"seconds": 4}, timeout=60)
    during = neighbour.window()
    engine, wall = probes.engine_cpu_s(machine) - engine_before, time.monotonic() - t0
    time.sleep(1)
    relayed, notes = relayed_since(ssh(machine, f"cat {log_path}*").stdout.splitlines(), since)
    bound = CLAW_LOG_BURST_BYTES + CLAW_LOG_RATE_BYTES * (wall + 2)
    held = [n for n in notes if n.get("event") == "log-throttled"]
    refused = flood["open /proc/1/fd/1"] == "EACCES"
    ok = refused and 0 < relayed <= bound and bool(held)
    vm_scorecard.record(
        GROUP, f"{PROBE}: writes 16 KiB lines to pid 1's stdout, then to its own, for 4 s",
        f"pid 1's stdout refused; at most {CLAW_LOG_BURST_BYTES // MiB} MiB + {CLAW_LOG_RATE_BYTES // 1024} KiB/s "
        "reach the engine; a log-throttled record",
        f"pid 1's stdout: {flood['open /proc/1/fd/1']}; the claw wrote "
        f"{flood['written bytes'] / MiB:.2f} MiB, {relayed / MiB:.2f} MiB reached the log (bound {bound / MiB:.2f}); "
        f"log-throttled records: {len(held)}; dockerd, containerd and shims spent {engine:.1f} CPU-s in {wall:.1f} s",
        ok,
    )  # fmt: skip
    answered = neighbour_row(vm_scorecard, "log flood in the probe cage", during, neighbour.rest)
    assert ok and answered, (flood, relayed, bound, notes, during)


# New connections to its own proxy, as fast as the claw can send SYNs (non-blocking connects, no waiting for
# the handshake: threads of blocking connects are too slow under TCG to pass the limit). The host firewall
# admits a cage's new connections at a rate (finding 4), per cage, so the neighbour's are untouched.
CONNECT_FLOOD = """
proxy = socket.gethostbyname("egress-proxy")
socks, t0 = [], time.time()
for _ in range(ARG["count"]):
    s = socket.socket(); s.setblocking(False); s.connect_ex((proxy, 3128)); socks.append(s)
sending = time.time() - t0
time.sleep(ARG["wait"])
connected = 0
for s in socks:
    try: s.getpeername(); connected += 1
    except OSError: pass
    s.close()
out({"SYNs": len(socks), "connected": connected, "seconds": round(time.time() - t0, 2), "sending s": round(sending, 2)})
"""


def _throttled_syns(machine) -> int:
    done = ssh(machine, f"nft list chain inet {NFT_TABLE} cage_throttled")
    counts = re.findall(r"counter packets (\d+)", done.stdout)
    assert done.returncode == 0 and counts, done.stderr
    return int(counts[-1])


def test_new_connections_to_its_proxy_are_rate_limited_per_cage(cages, vm_scorecard, neighbour):
    """Finding 4's bound on the VM's firewall: of a burst of SYNs to its proxy, a cage gets at most the
    burst plus the rate through; the rest are dropped and counted; the neighbour keeps answering."""
    _, machine, _ = cages
    arg = {"count": 400, "wait": 1.5}
    before = _throttled_syns(machine)
    neighbour.window()  # from here on: during the fault
    flood = probes.probe(machine, f"claw-{PROBE}", CONNECT_FLOOD, arg, timeout=60)
    during = neighbour.window()
    throttled = _throttled_syns(machine) - before
    bound = CAGE_CONNECTIONS_BURST + CAGE_CONNECTIONS_PER_SECOND * (flood["seconds"] + 1)
    ok = 0 < flood["connected"] <= bound and throttled > 0
    vm_scorecard.record(
        GROUP, f"{PROBE}: {arg['count']} non-blocking connects to its own proxy, then {arg['wait']} s",
        f"at most {CAGE_CONNECTIONS_BURST} + {CAGE_CONNECTIONS_PER_SECOND}/s connect; the rest dropped and "
        "counted by the host firewall",
        f"{flood['SYNs']} SYNs in {flood['sending s']} s; connected {flood['connected']} (bound {bound:.0f}) after "
        f"{flood['seconds']} s; throttled SYNs (nft counter) +{throttled}", ok,
    )  # fmt: skip
    answered = neighbour_row(vm_scorecard, "connection flood in the probe cage", during, neighbour.rest)
    assert ok and answered, (flood, throttled, during)


# --- plaintext on the VM's disk ---------------------------------------------------------------------------


def test_no_plaintext_of_the_secret_or_the_volume_on_the_vms_raw_disk(cages, vm_scorecard):
    """The VM's disk image, searched byte for byte on this machine after a sync: the claws' secrets,
    and what the claws (one under runc, one under gVisor) wrote to their encrypted volumes, are not on
    it; controls written in plaintext (the host's /root and a volume's unencrypted root directory) are,
    so the search sees the disk."""
    host, machine, _ = cages
    claw_marker, gvisor_marker, root_marker, volume_marker = (
        f"{w}-{secrets.token_hex(12)}" for w in ("claw", "gvisor", "root", "vol")
    )
    # The gVisor sandbox may still be coming back from test_vm_gvisor.py's memory hog (an OOM kill ends it).
    assert probes.wait_answers(machine, GVISOR), f"claw-{GVISOR} does not answer"
    copied = {
        claw: probes.probe(machine, f"claw-{claw}", probes.INTO_VOLUME,
                           {"var": "ANTHROPIC_API_KEY", "dir": "/data", "marker": marker}, timeout=180)["secret copied"]
        for claw, marker in ((PROBE, claw_marker), (GVISOR, gvisor_marker))
    }  # fmt: skip
    volume_root = posixpath.dirname(volume_mount_path(PROBE))
    controls = f"/root/{root_marker} {volume_root}/{volume_marker}"
    wrote = ssh(machine, f"for f in {controls}; do basename $f > $f; done; sync; sleep 1; sync")
    assert wrote.returncode == 0, wrote.stderr
    try:
        # host.probe_secret is a prefix of host.gvisor_secret: its hits count both claws' secrets.
        needles = [host.probe_secret.encode(), claw_marker.encode(), gvisor_marker.encode(), root_marker.encode(),
                   volume_marker.encode()]  # fmt: skip
        hits = probes.disk_hits(machine.workdir / "disk.img", needles)
    finally:
        ssh(machine, f"rm -f {controls}")
    secret, claw, gvisor, root, volume = (hits[n] for n in needles)
    ok = all(copied.values()) and secret == 0 and claw == 0 and gvisor == 0 and root > 0 and volume > 0
    vm_scorecard.record(
        GROUP, "the VM's raw disk image, searched on this machine after a sync",
        "the claws' secrets and what the claws (runc and gVisor) wrote to their encrypted volumes: absent; "
        "plaintext controls (/root, a volume's unencrypted root): found",
        f"secrets (also copied into their volumes by the claws: {copied}): {secret} hits; the runc claw's "
        f"marker in /data: {claw}; the gVisor claw's: {gvisor}; controls: /root {root}, volume root {volume}", ok,
    )  # fmt: skip
    assert root > 0 and volume > 0, f"the search does not see the disk: {hits}"
    assert ok, hits
