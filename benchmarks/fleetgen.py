"""Generated fleets for the benchmarks: a stack config of N claws, as the offline preview reads it.

The workload is mixed and reproducible (a seeded random.Random): many small claws, some medium ones
with volumes, a few large ones, over several orgs; hosts are a pool of one Hetzner server type, plus
a few listed dedicated hosts so that "remove a host" has something to remove.
"""

from __future__ import annotations

import random
from typing import Any

SEALING_KEY = "benchmark-sealing-key-0123456789abcdef0123456789"  # not a secret: a generated fleet
IMAGE = "ghcr.io/clawstaff/claw-runtime@sha256:" + "ab" * 32
PROXY_IMAGE = "ghcr.io/clawstaff/egress-proxy@sha256:" + "cd" * 32
OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3OD8Gz7mTqeWfEe4WLwOXtactueReI8QJQlnxxajNI ops@clawstaff.example"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJvwWEP6UecWtArTPY7gDywFZrAVocMQihvrvvYgNeDk"
SECRET_KEYS = {"clawstaff:sealingKey", "clawstaff:clawSecrets"}
ORGS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell")
ENDPOINTS = ("api.anthropic.com:443", "api.openai.com:443", "slack.com:443", "api.github.com:443",
             "graph.microsoft.com:443", "api.pagerduty.com:443")  # fmt: skip

# (share, cpus, memory, tmpfs, volume): the mixed workload.
WORKLOAD = (
    (0.60, "0.5", "512MiB", "64MiB", None),
    (0.30, "1", "2GiB", "256MiB", "5GiB"),
    (0.10, "2", "8GiB", "512MiB", "50GiB"),
)


def claw_entry(i: int, rnd: random.Random) -> dict[str, Any]:
    draw, acc = rnd.random(), 0.0
    for share, cpus, memory, tmpfs, volume in WORKLOAD:  # noqa: B007 (the drawn row is used after the loop)
        acc += share
        if draw < acc:
            break
    org = ORGS[i % len(ORGS)]
    entry: dict[str, Any] = {
        "name": f"{org}-claw-{i:05d}",
        "org": org,
        "image": IMAGE,
        "cpus": cpus,
        "memory": memory,
        "pids": 256,
        "tmpfs": tmpfs,
        "egress": rnd.sample(ENDPOINTS, 2),
        "secrets": ["MODEL_API_KEY"],
    }
    if volume:
        entry["volume"] = volume
    return entry


def fleet_config(
    claws: int, *, seed: int = 6, listed_hosts: int = 4, pool_max: int = 999, server_type: str = "ccx33"
) -> dict[str, Any]:
    """The raw `clawstaff:*` config of a fleet of `claws` claws (see load_stack_file's output)."""
    rnd = random.Random(seed)
    entries = [claw_entry(i, rnd) for i in range(claws)]
    hosts: list[dict[str, Any]] = [
        {"name": f"hel1-metal-{i + 1:02d}", "kind": "dedicated", "address": f"198.51.100.{10 + i}", "cpus": 32,
         "memory": "128GiB", "disk": "2TB", "hostKey": HOST_KEY}
        for i in range(listed_hosts)
    ]  # fmt: skip
    hosts.append({"name": "cage", "kind": "pool", "serverType": server_type, "locations": ["fsn1", "nbg1", "hel1"],
                  "max": pool_max})  # fmt: skip
    return {
        "clawstaff:controlPlane": "control.clawstaff.example:443",
        "clawstaff:proxyImage": PROXY_IMAGE,
        "clawstaff:admin": {"sshAllowedCidrs": ["203.0.113.0/24"], "sshPublicKeys": [OPERATOR_KEY]},
        "clawstaff:hosts": hosts,
        "clawstaff:claws": entries,
        "clawstaff:sealingKey": SEALING_KEY,
        "clawstaff:clawSecrets": {e["name"]: {"MODEL_API_KEY": f"sk-bench-{e['name']}"} for e in entries},
    }


def extra_claw(config: dict[str, Any], seed: int = 99) -> dict[str, Any]:
    """One more claw, of the same workload, with a name no other claw has."""
    entry = claw_entry(len(config["clawstaff:claws"]), random.Random(seed))
    entry["name"] = "newcomer-" + entry["name"]
    return entry
