"""One value of the stack file at a time: its limits, its pattern, its parser and what it allows.

A parser takes the raw value and returns it typed, or raises Invalid with the reason; the text that
says what is allowed sits beside the parser (the texts a key path adds, such as "unique among the
claws", sit beside that key's field in components.config.schema).
"""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from components import conventions, local_images
from components.addresses import NON_PUBLIC_NETWORKS as _NON_PUBLIC
from components.catalog import LOCATIONS, SERVER_TYPES
from components.conventions import RESERVED_ENV_NAMES, RESERVED_ENV_PREFIX, is_dns_label, is_reserved_env_name
from components.model import POOL_INDEX_WIDTH, Endpoint
from components.units import GB, GiB, MiB, SIZE_EXAMPLES, format_size, parse_size

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
LOCAL_DEFAULT_CAPACITY = (Decimal(2), 4 * GiB, 20 * GB)
HOST_IMAGES = ("debian-13", "debian-12")  # the releases the bootstrap is written for; the first is the default
POOL_MAX_HOSTS = 999
MAX_CAGES_PER_HOST = conventions.MAX_CAGES_PER_HOST  # the host's egress subnet holds one proxy per cage
MAX_OVERCOMMIT = Decimal(16)

# Not public: an address from these is refused for a dedicated host (components.addresses says why
# the documentation ranges are not in it).
NON_PUBLIC_NETWORKS = tuple(ipaddress.ip_network(n) for n in _NON_PUBLIC)
# Name suffixes that only mean something on a private network.
LOCAL_NAME_SUFFIXES = ("localhost", "local", "internal", "lan", "home.arpa", "arpa")


class Invalid(ValueError):
    """Raised by a field validator: why the value is wrong, and optionally what is allowed (else the
    key's entry in ALLOWED) and whether the value must not be echoed (a pasted private key)."""

    def __init__(self, reason: str, allowed: str | None = None, *, secret: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.allowed, self.secret = reason, allowed, secret


def secret_placeholder(key_path: str) -> str:
    """What load_stack_file puts where the file holds an encrypted value (offline preview)."""
    return f"[secret:{key_path}]"


def is_secret_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[secret:") and value.endswith("]")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not value.strip():
        raise Invalid("empty")
    return value.strip()


def _whole(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("not a whole number")
    if not low <= value <= high:
        raise Invalid(f"not from {low} to {high}")
    return value


# --- names -----------------------------------------------------------------------------------------

DNS_LABEL_TEXT = "a DNS label: 1-63 lower-case letters, digits and hyphens, not starting or ending with a hyphen"


def parse_dns_label(value: Any) -> str:
    label = _text(value)
    if label != label.lower():
        raise Invalid("has upper-case letters")
    if len(label) > 63:
        raise Invalid("longer than 63 characters")
    if not is_dns_label(label):
        raise Invalid("not a DNS label")
    return label


ENV_NAME_TEXT = (
    f"an environment variable name ({conventions.ENV_NAME_PATTERN}), unique in the list, not starting with "
    f"{RESERVED_ENV_PREFIX} and not one of "
    + ", ".join(sorted(n for n in RESERVED_ENV_NAMES if not n.startswith(RESERVED_ENV_PREFIX)))
)
_ENV_NAME = re.compile(conventions.ENV_NAME_PATTERN)


def parse_env_name(value: Any) -> str:
    text = _text(value)
    if not _ENV_NAME.fullmatch(text):
        raise Invalid("not an environment variable name")
    if is_reserved_env_name(text):
        raise Invalid("reserved by the cage runtime")
    return text


# --- endpoints and addresses -----------------------------------------------------------------------

ENDPOINT_TEXT = (
    "host:port with a public DNS name and a port 1-65535, such as api.anthropic.com:443 "
    "(no scheme, path, wildcard, IP address, trailing dot, localhost or .local/.internal name)"
)
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")  # "127.1" and "0x7f.1" are IPs to inet_aton


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
    if len(host) > 253 or not all(is_dns_label(label) for label in labels):
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


PUBLIC_IP_TEXT = "a public IPv4 or IPv6 address (not private, loopback, link-local or shared)"


def parse_public_ip(value: Any) -> str:
    text = _text(value)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise Invalid("not an IP address") from None
    if _is_non_public(address):
        raise Invalid("not a public address")
    return str(address)


CIDR_TEXT = "an IPv4 or IPv6 network such as 203.0.113.0/24 or 2001:db8::/48, never 0.0.0.0/0 or ::/0"


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


SSH_PUBLIC_KEY_TEXT = 'an OpenSSH public key such as "ssh-ed25519 AAAAC3Nza... you@laptop" (RSA at least 2048 bits)'


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


# --- images and commands ---------------------------------------------------------------------------

IMAGE_TEXT = (
    "an image pinned by digest: name[:tag]@sha256:<64 lower-case hex digits>, such as "
    "ghcr.io/clawstaff/claw-runtime@sha256:0123...cdef, a local image's ID sha256:<64 hex digits>, or "
    "built:claw-runtime / built:egress-proxy / built:egress-broker for the image IDs the last `make images` recorded"
)
# Image references, after the grammar of github.com/distribution/reference, with a required digest.
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_NAME = re.compile(
    rf"^(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def parse_image(value: Any) -> str:
    text = _text(value)
    if text.startswith(local_images.PREFIX):
        try:
            return local_images.built_image_id(text[len(local_images.PREFIX) :])
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


COMMAND_WORD_TEXT = "a non-empty string without NUL characters"


def parse_command_word(value: Any) -> str:
    # Not stripped: an argument's spaces and newlines are the user's (a `python3 -c` program).
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not value or "\x00" in value:
        raise Invalid("an empty string or one with a NUL character")
    return value


# --- sizes and counts ------------------------------------------------------------------------------

SIZE_TEXT = f"a size such as {SIZE_EXAMPLES}"
CPUS_TEXT = "a number of CPUs greater than 0 with at most 2 decimals"
HOST_CPUS_TEXT = CPUS_TEXT + ", such as 16"


def units(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A components.units parser as a validator: its ValueError reason becomes an Invalid."""

    def validate(value: Any) -> Any:
        try:
            return parse(value)
        except ValueError as error:
            raise Invalid(str(error)) from None

    return validate


def size_at_least(minimum: int) -> Callable[[Any], int]:
    def validate(value: Any) -> int:
        size = units(parse_size)(value)
        if size < minimum:
            raise Invalid(f"less than {format_size(minimum)}")
        return size

    return validate


PIDS_TEXT = f"a whole number from {MIN_PIDS} to {MAX_PIDS}"


def parse_pids(value: Any) -> int:
    return _whole(value, MIN_PIDS, MAX_PIDS)


MAX_CAGES_TEXT = f"a whole number of cages from 1 to {MAX_CAGES_PER_HOST}"


def parse_max_cages(value: Any) -> int:
    return _whole(value, 1, MAX_CAGES_PER_HOST)


POOL_MAX_TEXT = f"the most hosts the pool may make: a whole number from 1 to {POOL_MAX_HOSTS}"
POOL_NAME_TEXT = (
    f"a DNS label of at most {63 - 1 - POOL_INDEX_WIDTH} characters (its hosts are <name>-001, <name>-002, ...)"
)


def parse_pool_max(value: Any) -> int:
    return _whole(value, 1, POOL_MAX_HOSTS)


def overcommit_text(note: str) -> str:
    return f"a ratio from 1 to {MAX_OVERCOMMIT}{note}"


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


# --- Hetzner ---------------------------------------------------------------------------------------

SERVER_TYPE_TEXT = "a Hetzner Cloud server type: " + ", ".join(SERVER_TYPES)
LOCATION_TEXT = "a Hetzner location: " + ", ".join(LOCATIONS)
HOST_IMAGE_TEXT = " or ".join(HOST_IMAGES)


def _one_of(choices: Any, reason: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        name = _text(value)
        if name not in choices:
            raise Invalid(reason)
        return name

    return validate


parse_server_type = _one_of(SERVER_TYPES, "not a known Hetzner Cloud server type")
parse_location = _one_of(LOCATIONS, "not a Hetzner location")
parse_host_image = _one_of(HOST_IMAGES, "not a supported host image")


# --- flags and secrets -----------------------------------------------------------------------------


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("not true or false")
    return value


SEALING_KEY_TEXT = (
    f"a secret of at least {MIN_SEALING_KEY_CHARS} random characters, set with "
    '`pulumi config set --secret sealingKey "$(openssl rand -base64 32)"`'
)


def parse_sealing_key(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not is_secret_placeholder(value) and len(value) < MIN_SEALING_KEY_CHARS:
        raise Invalid(f"shorter than {MIN_SEALING_KEY_CHARS} characters")
    return value


SECRET_VALUE_TEXT = (
    "a non-empty string set with `pulumi config set --secret --path 'clawSecrets.<claw>.<NAME>' <value>`"
)


def parse_secret_value(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("not a string")
    if not value:
        raise Invalid("empty")
    return value
