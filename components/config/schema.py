"""The stack file's shape, one key at a time: pydantic models whose fields parse with components.config.fields.

Beside each model, ALLOWED says for each of its key paths what is allowed ([] stands for a list index,
* for a map key); a ConfigError quotes it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Callable, Literal, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic.alias_generators import to_camel

from components import broker, runtimes
from components.config import fields as f
from components.model import DEFAULT_MAX_CAGES_PER_HOST, HOST_RESERVE, Endpoint
from components.units import GiB, format_size, parse_cpus

ALLOWED: dict[str, str] = {}

DnsLabel = Annotated[str, PlainValidator(f.parse_dns_label)]
EndpointField = Annotated[Endpoint, PlainValidator(f.parse_endpoint)]
Cpus = Annotated[Decimal, PlainValidator(f.units(parse_cpus))]
Size = Annotated[int, PlainValidator(f.size_at_least(1))]
Drain = Annotated[bool, PlainValidator(f.parse_bool)]
MaxCages = Annotated[int, PlainValidator(f.parse_max_cages)]
ServerType = Annotated[str, PlainValidator(f.parse_server_type)]
Location = Annotated[str, PlainValidator(f.parse_location)]
HostImage = Annotated[str, PlainValidator(f.parse_host_image)]
Image = Annotated[str, PlainValidator(f.parse_image)]
Runtime = Annotated[str, PlainValidator(f._one_of(runtimes.RUNTIMES, "not a runtime the program provisions"))]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


class AdminModel(_Model):
    ssh_allowed_cidrs: list[Annotated[str, PlainValidator(f.parse_cidr)]] = []
    ssh_public_keys: list[Annotated[str, PlainValidator(f.parse_ssh_public_key)]] = []


ALLOWED.update(
    {
        "admin": "a mapping with sshAllowedCidrs and sshPublicKeys",
        "admin.sshAllowedCidrs": "a list of networks allowed to reach SSH, such as [203.0.113.0/24]",
        "admin.sshAllowedCidrs[]": f.CIDR_TEXT,
        "admin.sshPublicKeys": "a list of OpenSSH public keys",
        "admin.sshPublicKeys[]": f.SSH_PUBLIC_KEY_TEXT,
    }
)


# --- a host's role: it holds cages, or it is the stack's audit sink ----------------------------------

CAGES, AUDIT_SINK = "cages", "audit-sink"
ROLES = (CAGES, AUDIT_SINK)
SINK_KINDS = ("cloud", "dedicated")  # a server of its own: a pool's hosts and a local host hold cages
# journal-remote holds its files to MaxUse= from systemd 253 on: Debian 13 has 257, Debian 12 252 (no such key)
SINK_IMAGE = "debian-13"
MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 1, 3650
DEFAULT_RETENTION_DAYS = 400  # a year plus a quarter: a common minimum for regulated audit logs
MIN_SINK_MAX_USE = 1 * GiB

ROLE_TEXT = (
    f"{CAGES} (the default: the host runs cages) or {AUDIT_SINK} (the stack's one audit sink: a "
    f"{' or '.join(SINK_KINDS)} host on {SINK_IMAGE} that holds no cages and keeps the cage hosts' audit trail)"
)
RETENTION_DAYS_TEXT = (
    f"on the audit sink only: the days it keeps the trail, a whole number from {MIN_RETENTION_DAYS} to "
    f"{MAX_RETENTION_DAYS} (default {DEFAULT_RETENTION_DAYS}: a year plus a quarter, a common minimum for "
    "regulated audit logs)"
)
MAX_USE_TEXT = (
    f"on the audit sink only: the most disk its trail may take, a size of at least {format_size(MIN_SINK_MAX_USE)} "
    f"such as 200GiB, at most the sink's disk less the {format_size(HOST_RESERVE.disk)} kept for the system "
    "(the default: all of that)"
)


def holds_cages(host: Any) -> bool:
    """Whether placement may put cages on this host entry: every role but the audit sink's. The one
    test of a host's role; the checks and the loader ask it."""
    return host.role != AUDIT_SINK


def audit_sinks(hosts: Sequence[Any]) -> dict[str, int]:
    """The host entries with the audit sink's role: name -> index in hosts (at most one once
    checks.check_audit_sink passed). The one selection of the sink; the checks and the loader ask it."""
    return {h.name: i for i, h in enumerate(hosts) if not holds_cages(h)}


def role_of(kind: str) -> Callable[[Any], str]:
    """The role parser of a host kind: only a cloud or dedicated host may be the audit sink."""

    def validate(value: Any) -> str:
        role = f._text(value)
        if role not in ROLES:
            raise f.Invalid("not a host role")
        if role == AUDIT_SINK and kind not in SINK_KINDS:
            raise f.Invalid(f"a {kind} host cannot be the audit sink",
                            f"{CAGES} (the default); the audit sink is a {' or '.join(SINK_KINDS)} host")  # fmt: skip
        return role

    return validate


def parse_retention_days(value: Any) -> int:
    return f._whole(value, MIN_RETENTION_DAYS, MAX_RETENTION_DAYS)


RetentionDays = Annotated[int, PlainValidator(parse_retention_days)]
SinkMaxUse = Annotated[int, PlainValidator(f.size_at_least(MIN_SINK_MAX_USE))]
# retentionDays and maxUse are keys of the cloud and dedicated models, with their defaults on a host
# that holds cages too: checks.check_audit_sink refuses them there when they are written (pydantic's
# model_fields_set), as it refuses drain and maxCages on the sink.


class CloudHostModel(_Model):
    name: DnsLabel
    kind: Literal["cloud"]
    server_type: ServerType
    location: Location
    image: HostImage = f.HOST_IMAGES[0]
    drain: Drain = False
    max_cages: MaxCages | None = None
    role: Annotated[str, PlainValidator(role_of("cloud"))] = CAGES
    retention_days: RetentionDays = Field(DEFAULT_RETENTION_DAYS, description=RETENTION_DAYS_TEXT)
    max_use: SinkMaxUse | None = Field(None, description=MAX_USE_TEXT)  # None: the disk less the host's reserve


class PoolModel(_Model):
    name: DnsLabel
    kind: Literal["pool"]
    server_type: ServerType
    locations: Annotated[list[Location], Field(min_length=1)]
    max: Annotated[int, PlainValidator(f.parse_pool_max)]
    image: HostImage = f.HOST_IMAGES[0]
    drain: list[DnsLabel] = []
    max_cages: MaxCages | None = None
    role: Annotated[str, PlainValidator(role_of("pool"))] = CAGES


class DedicatedHostModel(_Model):
    name: DnsLabel
    kind: Literal["dedicated"]
    address: Annotated[str, PlainValidator(f.parse_public_ip)]
    host_key: Annotated[str, PlainValidator(f.parse_ssh_public_key)]
    cpus: Cpus
    memory: Size
    disk: Size
    image: HostImage = f.HOST_IMAGES[0]  # the Debian release installed on the server
    drain: Drain = False
    max_cages: MaxCages | None = None
    role: Annotated[str, PlainValidator(role_of("dedicated"))] = CAGES
    retention_days: RetentionDays = Field(DEFAULT_RETENTION_DAYS, description=RETENTION_DAYS_TEXT)
    max_use: SinkMaxUse | None = Field(None, description=MAX_USE_TEXT)  # None: the disk less the host's reserve


class LocalHostModel(_Model):
    name: DnsLabel
    kind: Literal["local"]
    cpus: Cpus = f.LOCAL_DEFAULT_CAPACITY[0]
    memory: Size = f.LOCAL_DEFAULT_CAPACITY[1]
    disk: Size = f.LOCAL_DEFAULT_CAPACITY[2]
    drain: Drain = False
    max_cages: MaxCages | None = None
    role: Annotated[str, PlainValidator(role_of("local"))] = CAGES


HOST_MODELS: dict[str, type[_Model]] = {
    "cloud": CloudHostModel,
    "dedicated": DedicatedHostModel,
    "local": LocalHostModel,
    "pool": PoolModel,
}
HostModel = Annotated[Union[CloudHostModel, DedicatedHostModel, LocalHostModel, PoolModel], Field(discriminator="kind")]

ALLOWED.update(
    {
        "hosts": "a non-empty list of hosts",
        "hosts[]": "a mapping with name and kind (cloud, dedicated or local; or pool), and optionally role",
        "hosts[].name": f.DNS_LABEL_TEXT + ", unique among the hosts",
        "hosts[].kind": "cloud, dedicated or local (one host), or pool (cloud hosts made as the cages need them)",
        "hosts[].serverType": f.SERVER_TYPE_TEXT,
        "hosts[].location": f.LOCATION_TEXT,
        "hosts[].image": f.HOST_IMAGE_TEXT,
        "hosts[].address": f.PUBLIC_IP_TEXT,
        "hosts[].hostKey": 'the server\'s SSH host key as printed by `ssh-keyscan -t ed25519 <address>` without the address: "ssh-ed25519 AAAA..."',
        "hosts[].cpus": f.HOST_CPUS_TEXT,
        "hosts[].memory": f.SIZE_TEXT,
        "hosts[].disk": f.SIZE_TEXT,
        "hosts[].drain": "true (move this host's cages to other hosts) or false; for a pool, a list of its host names",
        "hosts[].drain[]": "the name of one of this pool's hosts: <pool>-001 up to its max",
        "hosts[].maxCages": f.MAX_CAGES_TEXT,
        "hosts[].name (pool)": f.POOL_NAME_TEXT,
        "hosts[].locations": "a non-empty list of Hetzner locations, each once: " + ", ".join(f.LOCATIONS),
        "hosts[].locations[]": f.LOCATION_TEXT,
        "hosts[].max": f.POOL_MAX_TEXT,
        "hosts[].role": ROLE_TEXT,
        "hosts[].retentionDays": RETENTION_DAYS_TEXT,
        "hosts[].maxUse": MAX_USE_TEXT,
    }
)


# A broker entry's presentation forms, one value at a time (components.broker holds the rule).
BROKER_HEADER_TEXT = broker.HEADER_TEXT
BROKER_BASIC_TEXT = "the part of HTTP Basic auth the secret is: " + ", ".join(broker.BASIC_PARTS)


def parse_broker_header(value: Any) -> str:
    text = f._text(value)
    try:
        broker.parse_header_format(text)
    except ValueError:
        raise f.Invalid("not a header with a format") from None
    return text


def parse_broker_basic(value: Any) -> str:
    text = f._text(value)
    if text not in broker.BASIC_PARTS:
        raise f.Invalid("not a part of Basic auth the broker fills in")
    return text


class BrokerModel(_Model):
    endpoints: Annotated[list[EndpointField], Field(min_length=1)]
    header: Annotated[str, PlainValidator(parse_broker_header)] | None = None
    basic: Annotated[str, PlainValidator(parse_broker_basic)] | None = None


class ClawModel(_Model):
    name: DnsLabel
    org: DnsLabel
    image: Image
    cpus: Cpus
    memory: Annotated[int, PlainValidator(f.size_at_least(f.MIN_CLAW_MEMORY))]
    pids: Annotated[int, PlainValidator(f.parse_pids)]
    tmpfs: Annotated[int, PlainValidator(f.size_at_least(f.MIN_TMPFS))]
    volume: Annotated[int, PlainValidator(f.size_at_least(f.MIN_VOLUME))] | None = None
    egress: list[EndpointField] = []
    secrets: list[Annotated[str, PlainValidator(f.parse_env_name)]] = []
    broker: dict[Annotated[str, PlainValidator(f.parse_env_name)], BrokerModel] = {}
    host: DnsLabel | None = None
    command: Annotated[list[Annotated[str, PlainValidator(f.parse_command_word)]], Field(min_length=1)] | None = None
    runtime: Runtime | None = None  # None: the stack's clawstaff:runtime


ALLOWED.update(
    {
        "claws": "a non-empty list of claws",
        "claws[]": (
            "a mapping with name, org, image, cpus, memory, pids, tmpfs and optionally volume, egress, secrets, "
            "broker, host, command, runtime"
        ),
        "claws[].name": f.DNS_LABEL_TEXT + ", unique among the claws",
        "claws[].org": f.DNS_LABEL_TEXT,
        "claws[].image": f.IMAGE_TEXT,
        "claws[].cpus": f.CPUS_TEXT + ", such as 0.5, 1 or 2",
        "claws[].memory": f"a size of at least {format_size(f.MIN_CLAW_MEMORY)}, such as 512MiB or 2GiB",
        "claws[].pids": f.PIDS_TEXT,
        "claws[].tmpfs": f"a size of at least {format_size(f.MIN_TMPFS)}, such as 64MiB or 256MiB, not above the claw's memory",
        "claws[].volume": f"a size of at least {format_size(f.MIN_VOLUME)}, such as 5GiB, or no volume key",
        "claws[].egress": "a list of host:port entries",
        "claws[].egress[]": f.ENDPOINT_TEXT,
        "claws[].secrets": "a list of environment variable names",
        "claws[].secrets[]": f.ENV_NAME_TEXT,
        "claws[].broker": (
            "a mapping <secret NAME> -> {endpoints, header or basic}: the secrets of this claw that its broker "
            "attaches (the claw gets a placeholder); a secret not named here reaches the claw's environment"
        ),
        "claws[].broker.*": "a mapping with endpoints and one of header, basic",
        "claws[].broker.*.endpoints": "a non-empty list of host:port entries, each in this claw's egress",
        "claws[].broker.*.endpoints[]": f.ENDPOINT_TEXT + ", one of this claw's egress entries",
        "claws[].broker.*.header": BROKER_HEADER_TEXT,
        "claws[].broker.*.basic": BROKER_BASIC_TEXT,
        "claws[].command": "a non-empty list of strings (the claw's program and its arguments), or no command key",
        "claws[].command[]": f.COMMAND_WORD_TEXT,
        "claws[].host": "the name of a host in clawstaff:hosts, or of a pool's host (<pool>-001 up to its max)",
        "claws[].runtime": runtimes.RUNTIME_TEXT + "; without the key, the stack's clawstaff:runtime",
    }
)


class OvercommitModel(_Model):
    cpus: Annotated[Decimal, PlainValidator(f.parse_overcommit)] = Decimal(1)
    memory: Annotated[Decimal, PlainValidator(f.parse_overcommit)] = Decimal(1)
    disk: Annotated[Decimal, PlainValidator(f.parse_overcommit)] = Decimal(1)


class PlacementModel(_Model):
    overcommit: OvercommitModel = OvercommitModel()
    max_cages_per_host: MaxCages = DEFAULT_MAX_CAGES_PER_HOST


ALLOWED.update(
    {
        "placement": "a mapping with overcommit and maxCagesPerHost",
        "placement.overcommit": "a mapping of cpus, memory and disk to a ratio",
        "placement.overcommit.cpus": f.overcommit_text(", such as 1 (none) or 2"),
        "placement.overcommit.memory": f.overcommit_text(
            "; 1 (the default) keeps every cage's memory backed by the host"
        ),
        "placement.overcommit.disk": f.overcommit_text(", such as 1 (none)"),
        "placement.maxCagesPerHost": f"{f.MAX_CAGES_TEXT} (default {DEFAULT_MAX_CAGES_PER_HOST})",
    }
)


class StackModel(_Model):
    control_plane: EndpointField
    proxy_image: Image
    broker_image: Image | None = None
    runtime: Runtime = runtimes.DEFAULT_RUNTIME
    admin: AdminModel | None = None
    placement: PlacementModel = PlacementModel()
    hosts: list[HostModel] = Field(min_length=1)
    claws: list[ClawModel] = Field(min_length=1)
    sealing_key: Annotated[str, PlainValidator(f.parse_sealing_key)]
    claw_secrets: dict[str, dict[str, Annotated[str, PlainValidator(f.parse_secret_value)]]] = {}
    placement_lock: dict[str, DnsLabel] = {}


ALLOWED.update(
    {
        "controlPlane": f.ENDPOINT_TEXT.replace("api.anthropic.com", "control.clawstaff.example"),
        "proxyImage": f.IMAGE_TEXT,
        "runtime": runtimes.RUNTIME_TEXT + f" (every claw without a runtime key; default {runtimes.DEFAULT_RUNTIME})",
        "brokerImage": f.IMAGE_TEXT + " (the credential broker; required when a claw has a broker entry)",
        "placementLock": (
            "a mapping <claw> -> <host>: where each deployed claw runs, as "
            "`python -m tools.placement_lock --stack <stack> --write` records it"
        ),
        "placementLock.*": "the name of a host (a listed host or a pool's host)",
        "sealingKey": f.SEALING_KEY_TEXT,
        "clawSecrets": "a mapping <claw name> -> <secret NAME> -> value, set with `pulumi config set --secret --path`",
        "clawSecrets.*": "a mapping <secret NAME> -> value for a claw in clawstaff:claws",
        "clawSecrets.*.*": f.SECRET_VALUE_TEXT,
    }
)
