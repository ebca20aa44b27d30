"""Stack outputs: what runs where, with which limits. Never a secret (names of secrets are not secret)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from components.model import AuditSink, Host, StackConfig
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
    summary: dict[str, Any] = {"claws": claws, "hosts": hosts}
    if config.audit_sink is not None:
        summary["auditSink"] = audit_sink_summary(config.audit_sink)
    return summary


def audit_sink_summary(sink: AuditSink) -> dict[str, Any]:
    host = sink.host
    return {
        "host": host.name,
        "kind": host.kind,
        "location": host.location,
        "serverType": host.server_type,
        "retentionDays": sink.retention_days,
        "maxUse": format_size(sink.max_use),
        "provisioned": False,  # this version parses the sink and makes none of its resources (docs/audit.md)
    }


def audit_sink_notice(sink: AuditSink) -> str:
    """What the Fleet warns (`pulumi up`, `pulumi preview` and the offline preview show it) while the
    sink is parsed but not provisioned."""
    return (
        f"the audit sink {sink.host.name} (retention {sink.retention_days} days, at most "
        f"{format_size(sink.max_use)}) is not provisioned by this version: no server is made for it and no "
        "host ships to it; each cage host keeps its own trail (docs/audit.md)"
    )
