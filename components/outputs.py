"""Stack outputs: what runs where, with which limits. Never a secret (names of secrets are not secret)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from components.model import Host, StackConfig
from components.units import format_size


def fleet_summary(config: StackConfig, placement: Mapping[str, str], hosts: Iterable[Host]) -> dict[str, Any]:
    """`hosts`: the hosts the fleet runs (listed ones and the pool hosts placement opened)."""
    claws = {
        c.name: {
            "org": c.org,
            "host": placement[c.name],
            "cpus": str(c.cpus),
            "memory": format_size(c.memory),
            "pids": c.pids,
            "tmpfs": format_size(c.tmpfs),
            "volume": format_size(c.volume) if c.volume else None,
            "egress": [str(e) for e in c.egress],
            "secrets": list(c.secrets),
            "runtime": c.runtime,
        }
        for c in sorted(config.claws, key=lambda c: c.name)
    }
    hosts = {
        h.name: {
            "kind": h.kind,
            "location": h.location,
            "serverType": h.server_type,
            "claws": sorted(n for n, host in placement.items() if host == h.name),
        }
        for h in sorted(hosts, key=lambda h: h.name)
    }
    return {"claws": claws, "hosts": hosts}
