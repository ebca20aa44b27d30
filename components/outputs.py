"""Stack outputs: what runs where, with which limits. Never a secret (names of secrets are not secret)."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from components.model import AuditSink, Host, StackConfig
from components.units import format_size


def fleet_summary(
    config: StackConfig, placement: Mapping[str, str], hosts: Iterable[Host], sink_url: str | None = None
) -> dict[str, Any]:
    """`hosts`: the hosts the fleet runs (listed ones and the pool hosts placement opened); `sink_url`:
    where the cage hosts reach the audit sink, when the stack has one (components.sink)."""
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
        if sink_url is None:
            raise ValueError("a stack with an audit sink summarises it with its URL")
        summary["auditSink"] = audit_sink_summary(config.audit_sink, sink_url)
    return summary


def audit_sink_summary(sink: AuditSink, url: str) -> dict[str, Any]:
    host = sink.host
    return {
        "host": host.name,
        "kind": host.kind,
        "location": host.location,
        "serverType": host.server_type,
        "retentionDays": sink.retention_days,
        "maxUse": format_size(sink.max_use),
        "url": url,
        # Its server, its trail files and certificates are made (components.sink) ...
        "provisioned": True,
        # ... but no cage host ships its trail to it yet (docs/audit.md, "Not built yet").
        "cageHostsUpload": False,
    }


def audit_sink_notice(sink: AuditSink, url: str) -> str:
    """What the Fleet warns (`pulumi up`, `pulumi preview` and the offline preview show it) while the
    sink is provisioned and the cage hosts do not yet upload to it."""
    return (
        f"the audit sink {sink.host.name} (retention {sink.retention_days} days, at most "
        f"{format_size(sink.max_use)}) is provisioned (its server, trail files and certificates; it takes "
        f"uploads at {url}), but no cage host uploads to it yet: each cage host keeps its own trail "
        "(docs/audit.md)"
    )
