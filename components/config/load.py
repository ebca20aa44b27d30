"""From the stack's config map to a StackConfig: namespaces and JSON text undone, each key checked
(components.config.schema), then the checks across keys (components.config.checks), then the model
objects (components.model) built. Also where the map comes from: the stack file (offline preview) or
the Pulumi engine (inside `pulumi up`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Collection, Mapping

import yaml
from pydantic import ValidationError

from components.broker import binding
from components.config import checks
from components.config.fields import NAMESPACE, STRUCTURED_KEYS, secret_placeholder
from components.config.report import ConfigError, Reporter
from components.config.schema import (
    AdminModel,
    ClawModel,
    CloudHostModel,
    DedicatedHostModel,
    LocalHostModel,
    PlacementModel,
    PoolModel,
    StackModel,
    audit_sinks,
    holds_cages,
)
from components.model import (
    Admin,
    AuditSink,
    Capacity,
    Claw,
    Host,
    HostPool,
    PlacementPolicy,
    StackConfig,
    server_capacity,
    sink_room,
)


def _host(model: CloudHostModel | DedicatedHostModel | LocalHostModel) -> Host:
    common = dict(drain=model.drain, max_cages=model.max_cages)
    if isinstance(model, CloudHostModel):
        capacity = server_capacity(model.server_type)
        return Host(model.name, "cloud", capacity, server_type=model.server_type, location=model.location,
                    image=model.image, **common)  # fmt: skip
    capacity = Capacity(cpus=model.cpus, memory=model.memory, disk=model.disk)
    if isinstance(model, DedicatedHostModel):
        return Host(model.name, "dedicated", capacity, address=model.address, host_key=model.host_key,
                    image=model.image, **common)  # fmt: skip
    return Host(model.name, "local", capacity, **common)


def _pool(model: PoolModel) -> HostPool:
    return HostPool(name=model.name, server_type=model.server_type, locations=tuple(model.locations), max=model.max,
                    image=model.image, drain=tuple(model.drain), max_cages=model.max_cages)  # fmt: skip


def _audit_sink(model: StackModel) -> AuditSink | None:
    """The host with role audit-sink and its retention (maxUse by default all the room its disk has)."""
    sinks = audit_sinks(model.hosts)
    if not sinks:
        return None
    entry = model.hosts[next(iter(sinks.values()))]
    host = _host(entry)
    max_use = sink_room(host) if entry.max_use is None else entry.max_use
    return AuditSink(host=host, retention_days=entry.retention_days, max_use=max_use)


def _placement_policy(model: PlacementModel) -> PlacementPolicy:
    o = model.overcommit
    return PlacementPolicy(overcommit_cpus=o.cpus, overcommit_memory=o.memory, overcommit_disk=o.disk,
                           max_cages_per_host=model.max_cages_per_host)  # fmt: skip


def _claw(model: ClawModel, default_runtime: str) -> Claw:
    return Claw(
        name=model.name,
        org=model.org,
        image=model.image,
        cpus=model.cpus,
        memory=model.memory,
        pids=model.pids,
        tmpfs=model.tmpfs,
        volume=model.volume,
        egress=tuple(model.egress),
        secrets=tuple(model.secrets),
        host=model.host,
        command=tuple(model.command) if model.command is not None else None,
        broker=tuple(
            binding(name, [(e.host, e.port) for e in b.endpoints], header=b.header, basic=b.basic)
            for name, b in sorted(model.broker.items())
        ),
        runtime=model.runtime or default_runtime,
    )


def _admin(model: AdminModel | None) -> Admin:
    if model is None:
        return Admin((), ())
    return Admin(tuple(dict.fromkeys(model.ssh_allowed_cidrs)), tuple(dict.fromkeys(model.ssh_public_keys)))


def _own_keys(raw: Mapping[str, Any], report: Reporter) -> dict[str, Any]:
    """The clawstaff:* keys without their namespace, JSON text of objects decoded. Other namespaces
    (pulumi:, hcloud:, docker:) belong to others; a key without a namespace is a typo."""
    own: dict[str, Any] = {}
    for key, value in raw.items():
        namespace, colon, name = str(key).partition(":")
        if not colon:
            raise ConfigError(report.stack_file, str(key), None, "a key without a namespace",
                              f"{NAMESPACE}:{key}")  # fmt: skip
        if namespace != NAMESPACE:
            continue
        if name in STRUCTURED_KEYS and isinstance(value, str):
            value = _json_or_text(value)
        own[name] = value
    return own


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value  # the model then says it is not a list/mapping


def parse_stack_config(
    raw: Mapping[str, Any], *, stack: str, secret_keys: Collection[str] = (), stack_file: str | None = None
) -> StackConfig:
    """Check the whole `clawstaff:*` config and return it typed; raise ConfigError on the first mistake.

    `stack_file` names the file in messages (default Pulumi.<stack>.yaml)."""
    stack_file = stack_file or f"Pulumi.{stack}.yaml"
    report = Reporter(stack_file, {})
    own = _own_keys(raw, report)
    report.raw = own
    checks.check_secrets_are_secret(own, secret_keys, report)
    try:
        model = StackModel.model_validate(own)
    except ValidationError as error:
        raise report.from_pydantic(error.errors(include_url=False)[0]) from None

    checks.check_unique_host_names_and_addresses(model, report)
    checks.check_audit_sink(model, report)
    checks.check_local_host_stands_alone(model, report)
    checks.check_server_type_offered_in_location(model, report)
    checks.check_admin_can_reach_servers(model, report)
    checks.check_unique_claw_names(model, report)
    checks.check_no_repeats_in_lists(model, report)
    checks.check_tmpfs_within_memory(model, report)
    checks.check_pins(model, report)
    checks.check_runtimes_have_hosts(model, report)
    # Only the hosts that hold cages reach placement; the audit sink is apart (StackConfig.audit_sink).
    cage_hosts = [h for h in model.hosts if holds_cages(h)]
    hosts = tuple(_host(h) for h in cage_hosts if not isinstance(h, PoolModel))
    pools = tuple(_pool(h) for h in cage_hosts if isinstance(h, PoolModel))
    audit_sink = _audit_sink(model)
    checks.check_audit_sink_room(model, audit_sink, report)
    checks.check_claws_fit_a_host(hosts + tuple(p.host(1) for p in pools), model, report)
    checks.check_claw_secrets_match_claws(model, report)
    checks.check_broker_bindings(model, report)
    checks.check_placement_lock_names_claws(model, report)

    return StackConfig(
        stack=stack,
        stack_file=stack_file,
        control_plane=model.control_plane,
        admin=_admin(model.admin),
        hosts=hosts,
        claws=tuple(_claw(c, model.runtime) for c in model.claws),
        proxy_image=model.proxy_image,
        broker_image=model.broker_image,
        sealing_key=model.sealing_key,
        claw_secrets={claw: dict(values) for claw, values in model.claw_secrets.items()},
        pools=pools,
        placement=_placement_policy(model.placement),
        placement_lock=dict(sorted(model.placement_lock.items())),
        audit_sink=audit_sink,
    )


# --- reading the config ----------------------------------------------------------------------------


def load_stack_file(path: str | Path) -> tuple[dict[str, Any], set[str]]:
    """The config map of a Pulumi.<stack>.yaml, for the offline preview. Each `secure:` value becomes
    an opaque placeholder; the secret set holds each top-level key with a secure value and each secure
    leaf's key path."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            path.name, None, None, f"no such file ({path})", "a stack file Pulumi.<stack>.yaml beside Pulumi.yaml"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path.name, None, None, f"cannot be read ({error})", "a readable UTF-8 YAML file") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(
            path.name, None, None, f"not valid YAML{at}", "a YAML mapping with a config: section"
        ) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(
            path.name, None, None, "has no config map", "a YAML mapping with a config: section of clawstaff:* keys"
        )
    secret_keys: set[str] = set()
    plain = {str(key): _open_secure(value, str(key), str(key), secret_keys) for key, value in config.items()}
    return plain, secret_keys


def _open_secure(node: Any, top_key: str, path: str, secret_keys: set[str]) -> Any:
    if isinstance(node, dict) and set(node) == {"secure"}:
        secret_keys.update({top_key, path} if path != top_key else {top_key})
        return secret_placeholder(path)
    if isinstance(node, dict):
        return {k: _open_secure(v, top_key, f"{path}.{k}", secret_keys) for k, v in node.items()}
    if isinstance(node, list):
        return [_open_secure(v, top_key, f"{path}[{i}]", secret_keys) for i, v in enumerate(node)]
    return node


def read_runtime_config() -> tuple[dict[str, Any], set[str]]:
    """Inside `pulumi up`: the clawstaff:* keys the engine handed the program, and which are secret."""
    from pulumi.runtime import config as runtime_config

    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    raw = {k: runtime_config.get_config(k) for k in sorted(keys) if k.startswith(f"{NAMESPACE}:")}
    env_secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys = {k for k in raw if runtime_config.is_config_secret(k) or k in env_secret_keys}
    return raw, secret_keys
