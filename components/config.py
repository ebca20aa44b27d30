"""The stack config (`clawstaff:*` in Pulumi.<stack>.yaml), parsed into typed objects and checked before
any resource exists.

Every user mistake becomes one ConfigError whose text names the stack file, the key path, the value as
written and what is allowed. ConfigError is a pulumi.RunError, so `pulumi up` prints it without a
traceback. Secret values (sealingKey, clawSecrets) are never echoed.

Checking happens in two passes: pydantic models check each key on its own (types, units, syntax,
unknown and missing keys); then small named functions check what spans keys (unique names, pins,
capacity, secrets that match the claws).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Literal, Mapping, NoReturn, Sequence, Union

import pulumi
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic.alias_generators import to_camel

from components import conventions, local_images
from components.catalog import LOCATIONS, SERVER_TYPES
from components.units import MiB, GiB, SIZE_EXAMPLES, format_cpus, format_size, parse_cpus, parse_size

NAMESPACE = "clawstaff"
SECRET_KEYS = ("sealingKey", "clawSecrets")  # must be set with `pulumi config set --secret`
# Keys whose values are objects: the Pulumi runtime hands those over as JSON text.
STRUCTURED_KEYS = ("admin", "placement", "placementLock", "hosts", "claws", "clawSecrets")
HOST_KINDS = ("cloud", "dedicated", "local", "pool")

MIN_CLAW_MEMORY = 16 * MiB
MIN_TMPFS = 1 * MiB
MIN_VOLUME = 64 * MiB
MIN_PIDS, MAX_PIDS = 16, 65536
MIN_SEALING_KEY_CHARS = 32
LOCAL_DEFAULT_CAPACITY = (Decimal(2), 4 * GiB, 20 * 1000**3)
HOST_IMAGES = ("debian-12", "debian-13")  # the host setup is written for Debian's docker.io
# A pool's hosts are named <pool>-001 ... <pool>-999: a fixed width, so that growing the pool never
# renames a host (and the names sort in the order the pool fills them).
POOL_MAX_HOSTS = 999
POOL_INDEX_WIDTH = 3
# Cages per host unless the stack or the host says otherwise: each cage is a bridge network, veth
# pairs, iptables rules and a uid pair on its host; Docker's per-network work grows with the count.
DEFAULT_MAX_CAGES_PER_HOST = 100
MAX_CAGES_PER_HOST = conventions.MAX_CAGES_PER_HOST  # the host's egress subnet holds one proxy per cage
MAX_OVERCOMMIT = Decimal(16)

# Environment names a secret may not take: the cage runtime's own, and ones that change how the
# claw's process loads code or reaches the network.
RESERVED_ENV_NAMES = frozenset(
    {"PATH", "HOME", "HOSTNAME", "LD_PRELOAD", "LD_LIBRARY_PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"}
)
RESERVED_ENV_PREFIX = "CLAWCAGE_"

# Not public: an address from these is refused for a dedicated host. Documentation ranges
# (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are accepted on purpose: examples use them.
NON_PUBLIC_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
        "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip

# Name suffixes that only mean something on a private network.
LOCAL_NAME_SUFFIXES = ("localhost", "local", "internal", "lan", "home.arpa", "arpa")


# --- errors ----------------------------------------------------------------------------------------

_MISSING: Any = object()


class ConfigError(pulumi.RunError):
    """One user mistake, as one paragraph:
    'Pulumi.prod.yaml: clawstaff:claws[2].memory = "1 GB x": not a size; allowed: a size such as ...'

    `value` is the value as shown (secret values as "[secret]"), None when the key is missing.
    """

    def __init__(self, stack_file: str, key: str | None, value: str | None, reason: str, allowed: str) -> None:
        self.stack_file, self.key, self.value, self.reason, self.allowed = stack_file, key, value, reason, allowed
        if key is None:
            subject = f"{stack_file}: {reason}"
        elif value is None:
            subject = f"{stack_file}: {key} is {reason}"
        else:
            subject = f"{stack_file}: {key} = {value}: {reason}"
        super().__init__(f"{subject}; allowed: {allowed.rstrip('.')}.")


class Invalid(ValueError):
    """Raised by a field validator: why the value is wrong, and optionally what is allowed (else the
    key's entry in ALLOWED) and whether the value must not be echoed (a pasted private key)."""

    def __init__(self, reason: str, allowed: str | None = None, *, secret: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.allowed, self.secret = reason, allowed, secret


def show_value(value: Any, *, secret: bool = False) -> str:
    """The value as the user wrote it, quoted like JSON; a long list or mapping is cut short."""
    if secret:
        return "[secret]"
    text = json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (list, dict)) and len(text) > 120:
        return text[:117] + "..."
    return text


def secret_placeholder(key_path: str) -> str:
    """What load_stack_file puts where the file holds an encrypted value (offline preview)."""
    return f"[secret:{key_path}]"


def is_secret_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[secret:") and value.endswith("]")


# --- the typed config ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """An egress entry or the control plane: a DNS name (never an IP literal) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Capacity:
    cpus: Decimal
    memory: int  # bytes
    disk: int  # bytes


@dataclass(frozen=True)
class Host:
    name: str
    kind: Literal["cloud", "dedicated", "local"]
    capacity: Capacity
    server_type: str | None = None  # cloud
    location: str | None = None  # cloud
    image: str | None = None  # cloud
    address: str | None = None  # dedicated: public IP
    host_key: str | None = None  # dedicated: the server's current SSH host key (no trust on first use)
    drain: bool = False  # an explicit decision in the config: move this host's cages elsewhere
    max_cages: int | None = None  # None: the stack's placement.maxCagesPerHost
    pool: str | None = None  # the pool that made this host, if any
    pool_index: int | None = None  # its 1-based index in that pool


def pool_host_name(pool: str, index: int) -> str:
    """The stable name of a pool's index-th host: the index alone decides it, never the pool's size."""
    return f"{pool}-{index:0{POOL_INDEX_WIDTH}d}"


@dataclass(frozen=True)
class HostPool:
    """Identical cloud hosts made only as the cages need them, up to `max`, spread over `locations`.

    Host i (from 1) is named pool_host_name(name, i) and stands in locations[(i - 1) % len(locations)]:
    both depend on i alone, so raising `max` adds names and never renames or moves an existing host.
    """

    name: str
    server_type: str
    locations: tuple[str, ...]
    max: int
    image: str
    drain: tuple[str, ...] = ()  # names of this pool's hosts whose cages must move
    max_cages: int | None = None

    def host(self, index: int) -> Host:
        st = SERVER_TYPES[self.server_type]
        name = pool_host_name(self.name, index)
        return Host(
            name=name,
            kind="cloud",
            capacity=Capacity(cpus=Decimal(st.cpus), memory=st.memory, disk=st.disk),
            server_type=self.server_type,
            location=self.locations[(index - 1) % len(self.locations)],
            image=self.image,
            drain=name in self.drain,
            max_cages=self.max_cages,
            pool=self.name,
            pool_index=index,
        )

    def hosts(self) -> tuple[Host, ...]:
        """Every host the pool may make, in the order it fills them."""
        return tuple(self.host(i) for i in range(1, self.max + 1))


@dataclass(frozen=True)
class PlacementPolicy:
    """How full a host may be: usable capacity times an overcommit ratio per resource, and a ceiling of
    cages. Ratios are 1 (no overcommit) unless the stack says otherwise; memory overcommit is allowed
    only when asked for, because an overcommitted host can OOM-kill a neighbour's cage."""

    overcommit_cpus: Decimal = Decimal(1)
    overcommit_memory: Decimal = Decimal(1)
    overcommit_disk: Decimal = Decimal(1)
    max_cages_per_host: int = DEFAULT_MAX_CAGES_PER_HOST


@dataclass(frozen=True)
class Claw:
    name: str
    org: str
    image: str
    cpus: Decimal
    memory: int
    pids: int
    tmpfs: int
    volume: int | None
    egress: tuple[Endpoint, ...]
    secrets: tuple[str, ...]
    host: str | None
    command: tuple[str, ...] | None = None  # what cage-init execs; None: the image's CMD


@dataclass(frozen=True)
class Admin:
    ssh_allowed_cidrs: tuple[str, ...]
    ssh_public_keys: tuple[str, ...]


@dataclass(frozen=True)
class StackConfig:
    stack: str
    stack_file: str
    control_plane: Endpoint
    admin: Admin
    hosts: tuple[Host, ...]
    claws: tuple[Claw, ...]
    proxy_image: str
    # repr=False: a config printed in a log or a traceback must not carry the secrets.
    sealing_key: str = field(repr=False)
    claw_secrets: Mapping[str, Mapping[str, str]] = field(repr=False)
    pools: tuple[HostPool, ...] = ()
    placement: PlacementPolicy = PlacementPolicy()
    # claw -> the host it was placed on when last deployed: kept there while it fits (components.placement)
    placement_lock: Mapping[str, str] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def claw(self, name: str) -> Claw:
        return next(c for c in self.claws if c.name == name)


# --- what is allowed, per key path ([] stands for a list index, * for a map key) ---------------------

DNS_LABEL_TEXT = "a DNS label: 1-63 lower-case letters, digits and hyphens, not starting or ending with a hyphen"
ENDPOINT_TEXT = (
    "host:port with a public DNS name and a port 1-65535, such as api.anthropic.com:443 "
    "(no scheme, path, wildcard, IP address, trailing dot, localhost or .local/.internal name)"
)
IMAGE_TEXT = (
    "an image pinned by digest: name[:tag]@sha256:<64 lower-case hex digits>, such as "
    "ghcr.io/clawstaff/claw-runtime@sha256:0123...cdef, a local image's ID sha256:<64 hex digits>, or "
    "built:claw-runtime / built:egress-proxy for the image IDs the last `make images` recorded"
)
SIZE_TEXT = f"a size such as {SIZE_EXAMPLES}"
HOST_CPUS_TEXT = "a number of CPUs greater than 0 with at most 2 decimals, such as 16"
SECRET_VALUE_TEXT = "a non-empty string set with `pulumi config set --secret --path 'clawSecrets.<claw>.<NAME>' <value>`"

ALLOWED: dict[str, str] = {
    "controlPlane": ENDPOINT_TEXT.replace("api.anthropic.com", "control.clawstaff.example"),
    "admin": "a mapping with sshAllowedCidrs and sshPublicKeys",
    "admin.sshAllowedCidrs": "a list of networks allowed to reach SSH, such as [203.0.113.0/24]",
    "admin.sshAllowedCidrs[]": "an IPv4 or IPv6 network such as 203.0.113.0/24 or 2001:db8::/48, never 0.0.0.0/0 or ::/0",
    "admin.sshPublicKeys": "a list of OpenSSH public keys",
    "admin.sshPublicKeys[]": 'an OpenSSH public key such as "ssh-ed25519 AAAAC3Nza... you@laptop" (RSA at least 2048 bits)',
    "hosts": "a non-empty list of hosts",
    "hosts[]": "a mapping with name and kind (cloud, dedicated or local; or pool)",
    "hosts[].name": DNS_LABEL_TEXT + ", unique among the hosts",
    "hosts[].kind": "cloud, dedicated or local (one host), or pool (cloud hosts made as the cages need them)",
    "hosts[].serverType": "a Hetzner Cloud server type: " + ", ".join(SERVER_TYPES),
    "hosts[].location": "a Hetzner location: " + ", ".join(LOCATIONS),
    "hosts[].image": " or ".join(HOST_IMAGES),
    "hosts[].address": "a public IPv4 or IPv6 address (not private, loopback, link-local or shared)",
    "hosts[].hostKey": 'the server\'s SSH host key as printed by `ssh-keyscan -t ed25519 <address>` without the address: "ssh-ed25519 AAAA..."',
    "hosts[].cpus": HOST_CPUS_TEXT,
    "hosts[].memory": SIZE_TEXT,
    "hosts[].disk": SIZE_TEXT,
    "hosts[].drain": "true (move this host's cages to other hosts) or false; for a pool, a list of its host names",
    "hosts[].drain[]": "the name of one of this pool's hosts: <pool>-001 up to its max",
    "hosts[].maxCages": f"a whole number of cages from 1 to {MAX_CAGES_PER_HOST}",
    "hosts[].name (pool)": f"a DNS label of at most {63 - 1 - POOL_INDEX_WIDTH} characters (its hosts are <name>-001, <name>-002, ...)",
    "hosts[].locations": "a non-empty list of Hetzner locations, each once: " + ", ".join(LOCATIONS),
    "hosts[].locations[]": "a Hetzner location: " + ", ".join(LOCATIONS),
    "hosts[].max": f"the most hosts the pool may make: a whole number from 1 to {POOL_MAX_HOSTS}",
    "placement": "a mapping with overcommit and maxCagesPerHost",
    "placement.overcommit": "a mapping of cpus, memory and disk to a ratio",
    "placement.overcommit.cpus": f"a ratio from 1 to {MAX_OVERCOMMIT}, such as 1 (none) or 2",
    "placement.overcommit.memory": f"a ratio from 1 to {MAX_OVERCOMMIT}; 1 (the default) keeps every cage's memory backed by the host",
    "placement.overcommit.disk": f"a ratio from 1 to {MAX_OVERCOMMIT}, such as 1 (none)",
    "placementLock": "a mapping <claw> -> <host>: where each deployed claw runs, as `python -m components.placement --stack <stack> --write` records it",
    "placementLock.*": "the name of a host (a listed host or a pool's host)",
    "placement.maxCagesPerHost": f"a whole number of cages from 1 to {MAX_CAGES_PER_HOST} (default {DEFAULT_MAX_CAGES_PER_HOST})",
    "claws": "a non-empty list of claws",
    "claws[]": "a mapping with name, org, image, cpus, memory, pids, tmpfs and optionally volume, egress, secrets, host",
    "claws[].name": DNS_LABEL_TEXT + ", unique among the claws",
    "claws[].org": DNS_LABEL_TEXT,
    "claws[].image": IMAGE_TEXT,
    "proxyImage": IMAGE_TEXT,
    "claws[].cpus": "a number of CPUs greater than 0 with at most 2 decimals, such as 0.5, 1 or 2",
    "claws[].memory": f"a size of at least {format_size(MIN_CLAW_MEMORY)}, such as 512MiB or 2GiB",
    "claws[].pids": f"a whole number from {MIN_PIDS} to {MAX_PIDS}",
    "claws[].tmpfs": f"a size of at least {format_size(MIN_TMPFS)}, such as 64MiB or 256MiB, not above the claw's memory",
    "claws[].volume": f"a size of at least {format_size(MIN_VOLUME)}, such as 5GiB, or no volume key",
    "claws[].egress": "a list of host:port entries",
    "claws[].egress[]": ENDPOINT_TEXT,
    "claws[].secrets": "a list of environment variable names",
    "claws[].secrets[]": (
        "an environment variable name ([A-Z_][A-Z0-9_]*), unique in the list, not starting with CLAWCAGE_ "
        "and not one of " + ", ".join(sorted(RESERVED_ENV_NAMES))
    ),
    "claws[].command": "a non-empty list of strings (the claw's program and its arguments), or no command key",
    "claws[].command[]": "a non-empty string without NUL characters",
    "claws[].host": "the name of a host in clawstaff:hosts, or of a pool's host (<pool>-001 up to its max)",
    "sealingKey": (
        f"a secret of at least {MIN_SEALING_KEY_CHARS} random characters, set with "
        '`pulumi config set --secret sealingKey "$(openssl rand -base64 32)"`'
    ),
    "clawSecrets": "a mapping <claw name> -> <secret NAME> -> value, set with `pulumi config set --secret --path`",
    "clawSecrets.*": "a mapping <secret NAME> -> value for a claw in clawstaff:claws",
    "clawSecrets.*.*": SECRET_VALUE_TEXT,
}


# --- field validators: raw value in, typed value out, Invalid with a reason otherwise -----------------

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # "127.1" and "0x7f.1" are IPs to inet_aton
# Image references, after the grammar of github.com/distribution/reference, with a required digest.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = re.compile(
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not value.strip():
        raise Invalid("empty")
    return value.strip()


def parse_dns_label(value: Any) -> str:
    label = _text(value)
    if label != label.lower():
        raise Invalid("has upper-case letters")
    if len(label) > 63:
        raise Invalid("longer than 63 characters")
    if not _DNS_LABEL.match(label):
        raise Invalid("not a DNS label")
    return label


def parse_endpoint(value: Any) -> Endpoint:
    """host:port for the proxy allowlist. Only public DNS names: an IP literal or an internal name would
    let a cage reach the host's network or the cloud's metadata service."""
    text = _text(value)
    if "://" in text:
        raise Invalid("a URL; write only host:port")
    if "/" in text:
        raise Invalid("has a path; write only host:port")
    if "*" in text:
        raise Invalid("a wildcard; list each host name")
    if text.startswith("[") or text.count(":") > 1:
        raise Invalid("an IPv6 address; name the service by its DNS name")
    name, colon, port_text = text.rpartition(":")
    if not colon:
        raise Invalid("no port")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Invalid("port is not a number from 1 to 65535")
    return Endpoint(host=_public_dns_name(name), port=int(port_text))


def _public_dns_name(name: str) -> str:
    if not name:
        raise Invalid("no host name")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        kind = "a private IP address" if _is_non_public(address) else "an IP address"
        raise Invalid(f"{kind}; name the service by its DNS name")
    if name.endswith("."):
        raise Invalid("ends with a dot")
    host = name.lower()
    labels = host.split(".")
    if len(host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise Invalid("not a DNS name")
    if any(host == s or host.endswith("." + s) for s in LOCAL_NAME_SUFFIXES):
        raise Invalid("a local or internal name")
    if len(labels) < 2:
        raise Invalid("not a fully qualified name")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise Invalid("looks like an IP address")
    return host


def _is_non_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in NON_PUBLIC_NETWORKS)


def parse_public_ip(value: Any) -> str:
    text = _text(value)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise Invalid("not an IP address") from None
    if _is_non_public(address):
        raise Invalid("not a public address")
    return str(address)


def parse_cidr(value: Any) -> str:
    text = _text(value)
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            raise Invalid(f"has host bits set (did you mean {ipaddress.ip_network(text, strict=False)}?)") from None
        raise Invalid("not a network in CIDR notation") from None
    if network.prefixlen == 0:
        raise Invalid("opens SSH to the whole internet")
    return str(network)


def parse_ssh_public_key(value: Any) -> str:
    text = _text(value)
    if "PRIVATE KEY" in text:
        raise Invalid("a PRIVATE key: remove it from the stack file and replace the key pair", secret=True)
    try:
        key = load_ssh_public_key(text.encode())
    except (ValueError, TypeError):
        raise Invalid("not an OpenSSH public key") from None
    except Exception:  # cryptography raises UnsupportedAlgorithm for e.g. ssh-dss
        raise Invalid("not a supported OpenSSH public key") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise Invalid(f"an RSA key of only {key.key_size} bits")
    return text


def parse_image(value: Any) -> str:
    text = _text(value)
    if text.startswith(local_images.PREFIX):
        try:
            return local_images.built_image_id(text[len(local_images.PREFIX):])
        except local_images.NotBuilt as error:
            raise Invalid(str(error)) from None
    if text.startswith("sha256:") and _DIGEST.match(text):
        return text  # a local image by its ID: reproducible builds (images/build.py) make it a pin
    name, at, digest = text.partition("@")
    if not at:
        raise Invalid("not pinned by digest")
    if not digest.startswith("sha256:"):
        raise Invalid("not a sha256 digest")
    if not _DIGEST.match(digest):
        raise Invalid("the digest is not 64 lower-case hex digits")
    if not _IMAGE_NAME.match(name):
        raise Invalid("not a valid image name")
    return text


def parse_command_word(value: Any) -> str:
    # Not stripped: an argument's spaces and newlines are the user's (a `python3 -c` program).
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not value or "\x00" in value:
        raise Invalid("an empty string or one with a NUL character")
    return value


def parse_env_name(value: Any) -> str:
    text = _text(value)
    if not _ENV_NAME.match(text):
        raise Invalid("not an environment variable name")
    if text in RESERVED_ENV_NAMES or text.startswith(RESERVED_ENV_PREFIX):
        raise Invalid("reserved by the cage runtime")
    return text


def _units(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A units parser as a validator: its ValueError reason becomes an Invalid."""

    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as error:
            raise Invalid(str(error)) from None

    return validate


def size_at_least(minimum: int) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        size = _units(parse_size)(value)
        if size < minimum:
            raise Invalid(f"less than {format_size(minimum)}")
        return size

    return validate


def parse_pids(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("not a whole number")
    if not MIN_PIDS <= value <= MAX_PIDS:
        raise Invalid(f"not from {MIN_PIDS} to {MAX_PIDS}")
    return value


def parse_server_type(value: Any) -> str:
    name = _text(value)
    if name not in SERVER_TYPES:
        raise Invalid("not a known Hetzner Cloud server type")
    return name


def parse_location(value: Any) -> str:
    name = _text(value)
    if name not in LOCATIONS:
        raise Invalid("not a Hetzner location")
    return name


def parse_host_image(value: Any) -> str:
    name = _text(value)
    if name not in HOST_IMAGES:
        raise Invalid("not a supported host image")
    return name


def parse_max_cages(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("not a whole number")
    if not 1 <= value <= MAX_CAGES_PER_HOST:
        raise Invalid(f"not from 1 to {MAX_CAGES_PER_HOST}")
    return value


def parse_pool_max(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("not a whole number")
    if not 1 <= value <= POOL_MAX_HOSTS:
        raise Invalid(f"not from 1 to {POOL_MAX_HOSTS}")
    return value


def parse_overcommit(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid("not a number")
    try:
        ratio = Decimal(str(value).strip())
    except ArithmeticError:
        raise Invalid("not a number") from None
    if not ratio.is_finite() or not Decimal(1) <= ratio <= MAX_OVERCOMMIT:
        raise Invalid(f"not from 1 to {MAX_OVERCOMMIT}")
    if ratio != ratio.quantize(Decimal("0.01")):
        raise Invalid("more than two decimals")
    return ratio


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("not true or false")
    return value


def parse_sealing_key(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not is_secret_placeholder(value) and len(value) < MIN_SEALING_KEY_CHARS:
        raise Invalid(f"shorter than {MIN_SEALING_KEY_CHARS} characters")
    return value


def parse_secret_value(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not value:
        raise Invalid("empty")
    return value


DnsLabel = Annotated[str, PlainValidator(parse_dns_label)]
EndpointField = Annotated[Endpoint, PlainValidator(parse_endpoint)]
Cpus = Annotated[Decimal, PlainValidator(_units(parse_cpus))]
Size = Annotated[int, PlainValidator(size_at_least(1))]


# --- pydantic models: the file's shape, one key at a time ------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


class AdminModel(_Model):
    ssh_allowed_cidrs: list[Annotated[str, PlainValidator(parse_cidr)]] = []
    ssh_public_keys: list[Annotated[str, PlainValidator(parse_ssh_public_key)]] = []


Drain = Annotated[bool, PlainValidator(parse_bool)]
MaxCages = Annotated[int, PlainValidator(parse_max_cages)]


class CloudHostModel(_Model):
    name: DnsLabel
    kind: Literal["cloud"]
    server_type: Annotated[str, PlainValidator(parse_server_type)]
    location: Annotated[str, PlainValidator(parse_location)]
    image: Annotated[str, PlainValidator(parse_host_image)] = HOST_IMAGES[0]
    drain: Drain = False
    max_cages: MaxCages | None = None


class PoolModel(_Model):
    name: DnsLabel
    kind: Literal["pool"]
    server_type: Annotated[str, PlainValidator(parse_server_type)]
    locations: Annotated[list[Annotated[str, PlainValidator(parse_location)]], Field(min_length=1)]
    max: Annotated[int, PlainValidator(parse_pool_max)]
    image: Annotated[str, PlainValidator(parse_host_image)] = HOST_IMAGES[0]
    drain: list[DnsLabel] = []
    max_cages: MaxCages | None = None


class DedicatedHostModel(_Model):
    name: DnsLabel
    kind: Literal["dedicated"]
    address: Annotated[str, PlainValidator(parse_public_ip)]
    host_key: Annotated[str, PlainValidator(parse_ssh_public_key)]
    cpus: Cpus
    memory: Size
    disk: Size
    drain: Drain = False
    max_cages: MaxCages | None = None


class LocalHostModel(_Model):
    name: DnsLabel
    kind: Literal["local"]
    cpus: Cpus = LOCAL_DEFAULT_CAPACITY[0]
    memory: Size = LOCAL_DEFAULT_CAPACITY[1]
    disk: Size = LOCAL_DEFAULT_CAPACITY[2]
    drain: Drain = False
    max_cages: MaxCages | None = None


HOST_MODELS: dict[str, type[_Model]] = {
    "cloud": CloudHostModel, "dedicated": DedicatedHostModel, "local": LocalHostModel, "pool": PoolModel,
}
HostModel = Annotated[Union[CloudHostModel, DedicatedHostModel, LocalHostModel, PoolModel], Field(discriminator="kind")]


class ClawModel(_Model):
    name: DnsLabel
    org: DnsLabel
    image: Annotated[str, PlainValidator(parse_image)]
    cpus: Cpus
    memory: Annotated[int, PlainValidator(size_at_least(MIN_CLAW_MEMORY))]
    pids: Annotated[int, PlainValidator(parse_pids)]
    tmpfs: Annotated[int, PlainValidator(size_at_least(MIN_TMPFS))]
    volume: Annotated[int, PlainValidator(size_at_least(MIN_VOLUME))] | None = None
    egress: list[EndpointField] = []
    secrets: list[Annotated[str, PlainValidator(parse_env_name)]] = []
    host: DnsLabel | None = None
    command: Annotated[list[Annotated[str, PlainValidator(parse_command_word)]], Field(min_length=1)] | None = None


class OvercommitModel(_Model):
    cpus: Annotated[Decimal, PlainValidator(parse_overcommit)] = Decimal(1)
    memory: Annotated[Decimal, PlainValidator(parse_overcommit)] = Decimal(1)
    disk: Annotated[Decimal, PlainValidator(parse_overcommit)] = Decimal(1)


class PlacementModel(_Model):
    overcommit: OvercommitModel = OvercommitModel()
    max_cages_per_host: MaxCages = DEFAULT_MAX_CAGES_PER_HOST


class StackModel(_Model):
    control_plane: EndpointField
    proxy_image: Annotated[str, PlainValidator(parse_image)]
    admin: AdminModel | None = None
    placement: PlacementModel = PlacementModel()
    hosts: list[HostModel] = Field(min_length=1)
    claws: list[ClawModel] = Field(min_length=1)
    sealing_key: Annotated[str, PlainValidator(parse_sealing_key)]
    claw_secrets: dict[str, dict[str, Annotated[str, PlainValidator(parse_secret_value)]]] = {}
    placement_lock: dict[str, DnsLabel] = {}


# --- turning a pydantic error into a ConfigError ---------------------------------------------------

_REASONS = {
    "extra_forbidden": "an unknown key",
    "string_type": "not a string",
    "list_type": "not a list",
    "dict_type": "not a mapping",
    "model_type": "not a mapping",
    "model_attributes_type": "not a mapping",
    "too_short": "an empty list",
    "literal_error": "not an allowed value",
    "union_tag_invalid": "not a host kind",
}

Loc = tuple[Union[str, int], ...]


def key_path(loc: Loc) -> str:
    """('claws', 2, 'memory') -> 'clawstaff:claws[2].memory'."""
    path = f"{NAMESPACE}:{loc[0]}"
    for part in loc[1:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _pattern(loc: Loc) -> str:
    """('claws', 2, 'memory') -> 'claws[].memory'; map keys under clawSecrets -> '*'."""
    path = str(loc[0])
    for part in loc[1:]:
        if isinstance(part, int):
            path += "[]"
        else:
            path += ".*" if loc[0] in ("clawSecrets", "placementLock") else f".{part}"
    return path


def _value_at(root: Any, loc: Loc) -> Any:
    node = root
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return _MISSING
    return node


class _Reporter:
    """Builds ConfigErrors for one stack file, fetching the value as written from the raw config."""

    def __init__(self, stack_file: str, raw: Mapping[str, Any]) -> None:
        self.stack_file, self.raw = stack_file, raw

    def error(
        self, loc: Loc, reason: str, allowed: str | None = None, *, secret: bool = False, shown: str | None = None
    ) -> ConfigError:
        """`shown` lets a check show a summary (a claw's limits) instead of the value found at loc."""
        value = _value_at(self.raw, loc)
        if shown is None and value is _MISSING:
            reason = "missing"
        elif shown is None:
            shown = show_value(value, secret=secret or loc[0] in SECRET_KEYS)
        allowed = allowed or ALLOWED.get(_pattern(loc), "see DESIGN.md section 4")
        return ConfigError(self.stack_file, key_path(loc), shown, reason, allowed)

    def fail(self, loc: Loc, reason: str, allowed: str | None = None, *, shown: str | None = None) -> NoReturn:
        raise self.error(loc, reason, allowed, shown=shown)

    def from_pydantic(self, detail: Mapping[str, Any]) -> ConfigError:
        loc, kind = _host_kind_free(tuple(detail["loc"]))
        error_type = detail["type"]
        if loc[-1] == "[key]":  # pydantic's marker for a bad mapping key, e.g. a number
            return self.error(loc[:-1], "a key that is not a string")
        if error_type in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "kind")
        if error_type in ("missing", "union_tag_not_found"):
            return self.error(loc, "missing")
        if error_type == "extra_forbidden":
            return self.error(loc, _unknown_key_reason(kind), "the keys " + ", ".join(_known_keys(loc, kind)))
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, Invalid):
            return self.error(loc, cause.reason, cause.allowed, secret=cause.secret)
        return self.error(loc, _REASONS.get(error_type, str(detail["msg"]).lower()))


def _host_kind_free(loc: Loc) -> tuple[Loc, str | None]:
    """Drop the union tag pydantic puts in a host's path: ('hosts', 0, 'cloud', 'x') -> ('hosts', 0, 'x')."""
    if len(loc) > 2 and loc[0] == "hosts" and loc[2] in HOST_KINDS:
        return (*loc[:2], *loc[3:]), str(loc[2])
    return loc, None


def _unknown_key_reason(host_kind: str | None) -> str:
    return f"not a key of a {host_kind} host" if host_kind else "an unknown key"


def _known_keys(loc: Loc, host_kind: str | None) -> list[str]:
    model: type[_Model] = StackModel
    if host_kind:
        model = HOST_MODELS[host_kind]
    elif loc[0] == "claws":
        model = ClawModel
    elif loc[0] == "admin":
        model = AdminModel
    elif loc[0] == "placement":
        model = OvercommitModel if len(loc) > 2 and loc[1] == "overcommit" else PlacementModel
    names = [str(f.alias) for f in model.model_fields.values()]
    return [f"{NAMESPACE}:{n}" for n in names] if model is StackModel else names


# --- checks across keys ----------------------------------------------------------------------------


def check_unique_host_names_and_addresses(model: StackModel, report: _Reporter) -> None:
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for i, host in enumerate(model.hosts):
        if isinstance(host, PoolModel):
            continue
        if host.name in seen_names:
            report.fail(("hosts", i, "name"), f"a duplicate: hosts[{seen_names[host.name]}] has the same name")
        seen_names[host.name] = i
        if isinstance(host, DedicatedHostModel):
            if host.address in seen_addresses:
                report.fail(("hosts", i, "address"), f"a duplicate: hosts[{seen_addresses[host.address]}] has it")
            seen_addresses[host.address] = i
    check_pools(model, seen_names, report)


def check_pools(model: StackModel, explicit_names: Mapping[str, int], report: _Reporter) -> None:
    """A pool's name leaves room for its hosts' suffix; its hosts' names collide with no other host;
    each location once; drain names only its own hosts."""
    pools: dict[str, int] = {}
    for i, pool in enumerate(model.hosts):
        if not isinstance(pool, PoolModel):
            continue
        if len(pool.name) > 63 - 1 - POOL_INDEX_WIDTH:
            report.fail(("hosts", i, "name"), f"too long for a pool (its hosts are {pool_host_name(pool.name, 1)}, ...)",
                        ALLOWED["hosts[].name (pool)"])  # fmt: skip
        if pool.name in pools:
            report.fail(("hosts", i, "name"), f"a duplicate: hosts[{pools[pool.name]}] is a pool with the same name")
        pools[pool.name] = i
        for other, j in explicit_names.items():
            index = _pool_index(pool.name, other)
            if index is not None:
                report.fail(("hosts", i, "name"),
                            f"its host {other} (up to {pool_host_name(pool.name, pool.max)}) would have the name of hosts[{j}]",
                            "a pool name that no other host's name starts with followed by -<number>")  # fmt: skip
        for j, location in enumerate(pool.locations):
            if location in pool.locations[:j]:
                report.fail(("hosts", i, "locations", j), f"listed twice (also locations[{pool.locations.index(location)}])")
        for j, name in enumerate(pool.drain):
            index = _pool_index(pool.name, name)
            if index is None or index > pool.max:
                report.fail(("hosts", i, "drain", j), "not a host of this pool",
                            f"{pool_host_name(pool.name, 1)} up to {pool_host_name(pool.name, pool.max)}")  # fmt: skip


def _pool_index(pool: str, host: str) -> int | None:
    """The index of `host` in `pool` if the name is one the pool makes (<pool>-NNN), else None."""
    prefix, _, digits = host.rpartition("-")
    if prefix != pool or len(digits) != POOL_INDEX_WIDTH or not digits.isdigit() or int(digits) == 0:
        return None
    return int(digits)


def check_local_host_stands_alone(model: StackModel, report: _Reporter) -> None:
    """A local host is a development machine: one per stack, never beside real servers."""
    local = [i for i, h in enumerate(model.hosts) if h.kind == "local"]
    remote = [i for i, h in enumerate(model.hosts) if h.kind != "local"]
    if len(local) > 1:
        report.fail(("hosts", local[1], "kind"), f"a second local host (hosts[{local[0]}] is local too)",
                    "at most one local host per stack")  # fmt: skip
    if local and remote:
        report.fail(("hosts", local[0], "kind"),
                    f"a local host in a stack with a {model.hosts[remote[0]].kind} host (hosts[{remote[0]}])",
                    "a local host alone, or only cloud and dedicated hosts")  # fmt: skip


def check_server_type_offered_in_location(model: StackModel, report: _Reporter) -> None:
    for i, host in enumerate(model.hosts):
        if isinstance(host, PoolModel):
            offered = SERVER_TYPES[host.server_type].locations
            for j, location in enumerate(host.locations):
                if location not in offered:
                    report.fail(("hosts", i, "locations", j), f"Hetzner does not offer {host.server_type} there",
                                f"for {host.server_type}: " + ", ".join(l for l in LOCATIONS if l in offered))  # fmt: skip
        if isinstance(host, CloudHostModel):
            offered = SERVER_TYPES[host.server_type].locations
            if host.location not in offered:
                report.fail(("hosts", i, "location"), f"Hetzner does not offer {host.server_type} there",
                            f"for {host.server_type}: " + ", ".join(l for l in LOCATIONS if l in offered))  # fmt: skip


def check_admin_can_reach_servers(model: StackModel, report: _Reporter) -> None:
    """Cloud and dedicated hosts are set up over SSH: they need operators' keys and their networks."""
    remote = next((h for h in model.hosts if h.kind != "local"), None)
    if remote is None:
        return
    if model.admin is None:
        report.fail(("admin",), "missing", f"for {remote.kind} hosts: " + ALLOWED["admin"])
    if not model.admin.ssh_allowed_cidrs:
        report.fail(("admin", "sshAllowedCidrs"), "missing or empty", f"for {remote.kind} hosts: at least one network, such as [203.0.113.0/24]")
    if not model.admin.ssh_public_keys:
        report.fail(("admin", "sshPublicKeys"), "missing or empty", f"for {remote.kind} hosts: at least one OpenSSH public key")


def check_unique_claw_names(model: StackModel, report: _Reporter) -> None:
    seen: dict[str, int] = {}
    for i, claw in enumerate(model.claws):
        if claw.name in seen:
            report.fail(("claws", i, "name"), f"a duplicate: claws[{seen[claw.name]}] has the same name")
        seen[claw.name] = i


def check_no_repeats_in_lists(model: StackModel, report: _Reporter) -> None:
    for i, claw in enumerate(model.claws):
        for field_name, items in (("egress", [str(e) for e in claw.egress]), ("secrets", claw.secrets)):
            for j, item in enumerate(items):
                if item in items[:j]:
                    report.fail(("claws", i, field_name, j), f"listed twice (also {field_name}[{items.index(item)}])")


def check_tmpfs_within_memory(model: StackModel, report: _Reporter) -> None:
    """tmpfs pages are charged to the container's memory cgroup: a larger tmpfs could never be filled."""
    for i, claw in enumerate(model.claws):
        if claw.tmpfs > claw.memory:
            report.fail(("claws", i, "tmpfs"), f"more than the claw's memory ({format_size(claw.memory)})",
                        f"at most {format_size(claw.memory)} (tmpfs counts against memory)")  # fmt: skip


def check_pins(model: StackModel, report: _Reporter) -> None:
    names = [h.name for h in model.hosts if not isinstance(h, PoolModel)]
    pools = [h for h in model.hosts if isinstance(h, PoolModel)]
    choices = names + [f"{pool_host_name(p.name, 1)} ... {pool_host_name(p.name, p.max)}" for p in pools]
    for i, claw in enumerate(model.claws):
        if claw.host is None or claw.host in names:
            continue
        if any((index := _pool_index(p.name, claw.host)) is not None and index <= p.max for p in pools):
            continue
        report.fail(("claws", i, "host"), "not a host of this stack", "one of " + ", ".join(choices))


def check_claws_fit_a_host(hosts: Sequence[Host], model: StackModel, report: _Reporter) -> None:
    """A claw larger than every host it may run on can never be placed; say so before creating anything."""
    for i, claw in enumerate(model.claws):
        eligible = [h for h in hosts if h.name == claw.host or (h.pool and _pool_index(h.pool, claw.host or "") is not None)] \
            if claw.host else list(hosts)  # fmt: skip
        which = "its pinned host" if claw.host else "the largest host"
        needs = (("cpus", claw.cpus, format_cpus), ("memory", claw.memory, format_size), ("volume", claw.volume or 0, format_size))
        for field_name, need, fmt in needs:
            largest = max(eligible, key=lambda h: _capacity_of(h, field_name))
            have = _capacity_of(largest, field_name)
            if need > have:
                resource = "disk" if field_name == "volume" else field_name
                report.fail(("claws", i, field_name),
                            f'claw "{claw.name}" needs {resource} {fmt(need)} but {which}, {largest.name}, has {fmt(have)}',
                            f"at most {fmt(have)}")  # fmt: skip
        if not any(not _shortfall(claw, h) for h in eligible):
            limits = f"cpus {format_cpus(claw.cpus)}, memory {format_size(claw.memory)}, volume {format_size(claw.volume or 0)}"
            lacks = "; ".join(f"{h.name} lacks {_shortfall(claw, h)}" for h in eligible)
            report.fail(("claws", i), f'claw "{claw.name}" fits no single host ({lacks})',
                        "limits that one host can hold at once", shown=limits)  # fmt: skip


def _capacity_of(host: Host, field_name: str) -> Any:
    return getattr(host.capacity, "disk" if field_name == "volume" else field_name)


def _shortfall(claw: ClawModel, host: Host) -> str:
    """What the host lacks for the claw, e.g. "cpus (has 8)"; empty when the claw fits."""
    c = host.capacity
    short = []
    if claw.cpus > c.cpus:
        short.append(f"cpus (has {format_cpus(c.cpus)})")
    if claw.memory > c.memory:
        short.append(f"memory (has {format_size(c.memory)})")
    if (claw.volume or 0) > c.disk:
        short.append(f"disk (has {format_size(c.disk)})")
    return ", ".join(short)


def check_placement_lock_names_claws(model: StackModel, report: _Reporter) -> None:
    """A lock entry for a claw that no longer exists is stale: say so rather than keep it silently. An
    entry whose host is gone is not an error: removing a host is how its cages are moved."""
    claws = {c.name for c in model.claws}
    for claw_name in model.placement_lock:
        if claw_name not in claws:
            report.fail(("placementLock", claw_name), "a stale entry: no claw has this name",
                        "entries for claws in clawstaff:claws only; remove it (the lock is rewritten after each deployment)")  # fmt: skip


def check_secrets_are_secret(raw: Mapping[str, Any], secret_keys: Collection[str], report: _Reporter) -> None:
    """sealingKey and clawSecrets must be encrypted in the stack file. The runtime only says which
    top-level keys hold secrets; a stack file read by load_stack_file also lists each secure leaf, so
    a plaintext value beside secure ones is caught too."""
    for key in SECRET_KEYS:
        value = raw.get(key, _MISSING)
        if value is _MISSING or value in ({}, ""):
            continue
        full_key = f"{NAMESPACE}:{key}"
        if full_key not in secret_keys:
            report.fail((key,), "stored in plain text; it must be set with `pulumi config set --secret`")
        leaf_keys = {k for k in secret_keys if k.startswith(full_key + ".")}
        if leaf_keys and isinstance(value, Mapping):
            for loc in _leaf_locs(value, (key,)):
                if key_path(loc) not in leaf_keys:
                    report.fail(loc, "stored in plain text; it must be set with `pulumi config set --secret`")


def _leaf_locs(node: Mapping[str, Any], prefix: Loc) -> list[Loc]:
    locs: list[Loc] = []
    for k, v in node.items():
        locs.extend(_leaf_locs(v, (*prefix, k)) if isinstance(v, Mapping) else [(*prefix, k)])
    return locs


def check_claw_secrets_match_claws(model: StackModel, report: _Reporter) -> None:
    """Every listed secret has a value; no value lingers for a claw or a name no longer listed."""
    listed = {claw.name: claw.secrets for claw in model.claws}
    for claw in model.claws:
        values = model.claw_secrets.get(claw.name, {})
        for name in claw.secrets:
            if name not in values:
                report.fail(("clawSecrets", claw.name, name), "missing",
                            f"a value set with `pulumi config set --secret --path 'clawSecrets.{claw.name}.{name}' <value>`")  # fmt: skip
    for claw_name, values in model.claw_secrets.items():
        if claw_name not in listed:
            report.fail(("clawSecrets", claw_name), "a stale credential: no claw has this name",
                        f"only claws in clawstaff:claws; remove it with `pulumi config rm --path 'clawSecrets.{claw_name}'`")  # fmt: skip
        for name in values:
            if name not in listed[claw_name]:
                report.fail(("clawSecrets", claw_name, name),
                            f'a stale credential: claw "{claw_name}" does not list {name} in its secrets',
                            "the names in its secrets: " + (", ".join(listed[claw_name]) or "none")
                            + f"; remove it with `pulumi config rm --path 'clawSecrets.{claw_name}.{name}'`")  # fmt: skip


# --- building the typed config ---------------------------------------------------------------------


def _host(model: CloudHostModel | DedicatedHostModel | LocalHostModel) -> Host:
    common = dict(drain=model.drain, max_cages=model.max_cages)
    if isinstance(model, CloudHostModel):
        st = SERVER_TYPES[model.server_type]
        capacity = Capacity(cpus=Decimal(st.cpus), memory=st.memory, disk=st.disk)
        return Host(model.name, "cloud", capacity, server_type=model.server_type, location=model.location,
                    image=model.image, **common)  # fmt: skip
    capacity = Capacity(cpus=model.cpus, memory=model.memory, disk=model.disk)
    if isinstance(model, DedicatedHostModel):
        return Host(model.name, "dedicated", capacity, address=model.address, host_key=model.host_key, **common)
    return Host(model.name, "local", capacity, **common)


def _pool(model: PoolModel) -> HostPool:
    return HostPool(name=model.name, server_type=model.server_type, locations=tuple(model.locations), max=model.max,
                    image=model.image, drain=tuple(model.drain), max_cages=model.max_cages)  # fmt: skip


def _placement_policy(model: PlacementModel) -> PlacementPolicy:
    o = model.overcommit
    return PlacementPolicy(overcommit_cpus=o.cpus, overcommit_memory=o.memory, overcommit_disk=o.disk,
                           max_cages_per_host=model.max_cages_per_host)  # fmt: skip


def _claw(model: ClawModel) -> Claw:
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
    )


def _admin(model: AdminModel | None) -> Admin:
    if model is None:
        return Admin((), ())
    return Admin(tuple(dict.fromkeys(model.ssh_allowed_cidrs)), tuple(dict.fromkeys(model.ssh_public_keys)))


def _own_keys(raw: Mapping[str, Any], report: _Reporter) -> dict[str, Any]:
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


def parse_stack_config(raw: Mapping[str, Any], *, stack: str, secret_keys: Collection[str] = (),
                       stack_file: str | None = None) -> StackConfig:
    """Check the whole `clawstaff:*` config and return it typed; raise ConfigError on the first mistake.

    `stack_file` names the file in messages (default Pulumi.<stack>.yaml)."""
    stack_file = stack_file or f"Pulumi.{stack}.yaml"
    report = _Reporter(stack_file, {})
    own = _own_keys(raw, report)
    report.raw = own
    check_secrets_are_secret(own, secret_keys, report)
    try:
        model = StackModel.model_validate(own)
    except ValidationError as error:
        raise report.from_pydantic(error.errors(include_url=False)[0]) from None

    check_unique_host_names_and_addresses(model, report)
    check_local_host_stands_alone(model, report)
    check_server_type_offered_in_location(model, report)
    check_admin_can_reach_servers(model, report)
    check_unique_claw_names(model, report)
    check_no_repeats_in_lists(model, report)
    check_tmpfs_within_memory(model, report)
    check_pins(model, report)
    hosts = tuple(_host(h) for h in model.hosts if not isinstance(h, PoolModel))
    pools = tuple(_pool(h) for h in model.hosts if isinstance(h, PoolModel))
    check_claws_fit_a_host(hosts + tuple(p.host(1) for p in pools), model, report)
    check_claw_secrets_match_claws(model, report)
    check_placement_lock_names_claws(model, report)

    return StackConfig(
        stack=stack,
        stack_file=stack_file,
        control_plane=model.control_plane,
        admin=_admin(model.admin),
        hosts=hosts,
        claws=tuple(_claw(c) for c in model.claws),
        proxy_image=model.proxy_image,
        sealing_key=model.sealing_key,
        claw_secrets={claw: dict(values) for claw, values in model.claw_secrets.items()},
        pools=pools,
        placement=_placement_policy(model.placement),
        placement_lock=dict(sorted(model.placement_lock.items())),
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
        raise ConfigError(path.name, None, None, f"no such file ({path})", "a stack file Pulumi.<stack>.yaml beside Pulumi.yaml") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path.name, None, None, f"cannot be read ({error})", "a readable UTF-8 YAML file") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ConfigError(path.name, None, None, f"not valid YAML{at}", "a YAML mapping with a config: section") from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(path.name, None, None, "has no config map", "a YAML mapping with a config: section of clawstaff:* keys")
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


def load() -> StackConfig:
    raw, secret_keys = read_runtime_config()
    return parse_stack_config(raw, stack=pulumi.get_stack(), secret_keys=secret_keys)
