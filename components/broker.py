"""Brokered credentials: a secret the claw never holds, attached by the cage's broker on its way out.

A claw's secret is delivered one of two ways (the stack config's `claws[].broker`):

- env (the default): sealed for the cage key, opened by cage-init into the claw's environment;
- brokered: sealed for the broker key (its own HKDF info string), opened in the memory of the cage's
  broker (`images/egress-broker/broker-init`, Debian's mitmproxy core with the cage's addon). The claw's
  environment holds a placeholder of the same shape instead. For the endpoints the secret is bound to,
  the broker terminates TLS with a certificate of the cage's own CA (made by `cryptography` in the
  broker at start, its private key never leaves the broker's memory), puts the real value where the
  placeholder was, and opens TLS to the upstream through the cage's Squid, verifying it against the
  system CA bundle. Every other endpoint stays a CONNECT tunnel it does not open.

Presentation forms (`Binding.form`):
- header: `header: "<Name>: <text with {value}>"`, e.g. `Authorization: Bearer {value}` or
  `x-api-key: {value}`; the header the claw sends must be exactly that text with the placeholder;
- basic: `basic: password`, HTTP Basic auth whose password is the secret (the claw sends
  `Authorization: Basic base64(user:<placeholder>)`, the broker re-encodes it with the real value).

The broker's wire format, shared with broker-init (which cannot import this package, like cage-init):

    CLAWCAGE_SEALED   seal_credentials(broker_key, claw, {NAME: real value})   (components.sealing)
    CLAWCAGE_BROKER   broker_spec(...): JSON {"claw", "org", "bindings": [{"name", "form", "header",
                      "template", "endpoints": ["host:port"], "placeholder"}]}
    key file          /run/clawcage/key in the broker: base64(broker_key), from the host's tmpfs

An audit line per request the broker opens, JSON on its stdout (`AUDIT_FIELDS`, read back by
`parse_audit_line`); a placeholder seen anywhere but in its bound header on its bound endpoint is
refused (403) and logged with `verdict` = `exfiltration-attempt`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from components.kdf import hkdf_sha256

FORMS = ("header", "basic")
BASIC_PARTS = ("password",)
BROKER_ENV = "CLAWCAGE_BROKER"
UPSTREAM_ENV = "CLAWCAGE_UPSTREAM"  # the broker's way out: the cage's Squid
# The test bench only: a CA its stand-in upstream uses, trusted beside the system bundle (never set by
# the program; the pack's broker table does not allow it).
BENCH_CA_ENV = "CLAWCAGE_BENCH_UPSTREAM_CA"
# What the claw container declares about its sealed blob (the policy pack cannot open it; the unit
# tests hold the declaration equal to the blob): the names sealed as real values, and the names
# sealed as placeholders (its brokered secrets).
ENV_SECRETS_ENV = "CLAWCAGE_ENV_DELIVERED"
PLACEHOLDERS_ENV = "CLAWCAGE_PLACEHOLDERS"
BROKER_ALIAS = "egress-broker"
# The host firewall lets a cage bridge carry TCP to one port only (components/firewall.py): the broker
# listens on the proxy's port, at its own address on the cage network.
BROKER_PORT = 3128
# Where the broker publishes the cage CA's certificate (never its key): a host tmpfs directory, written
# by the broker, read-only in the claw.
CA_MOUNT = "/run/clawcage-ca"
CA_CERT_FILE = f"{CA_MOUNT}/cage-ca.pem"  # the cage CA alone (NODE_EXTRA_CA_CERTS adds to Node's own)
CA_BUNDLE_FILE = f"{CA_MOUNT}/bundle.pem"  # the system bundle plus the cage CA (replaces a default)
CA_ENV = {
    "SSL_CERT_FILE": CA_BUNDLE_FILE,
    "REQUESTS_CA_BUNDLE": CA_BUNDLE_FILE,
    "CURL_CA_BUNDLE": CA_BUNDLE_FILE,
    "GIT_SSL_CAINFO": CA_BUNDLE_FILE,
    "NODE_EXTRA_CA_CERTS": CA_CERT_FILE,
}
BROKER_KEY_SALT = b"clawstaff/clawcage/sealing-salt/v1"
BROKER_KEY_INFO_PREFIX = b"clawstaff/clawcage/broker-key/v1\x00"
PLACEHOLDER_INFO_PREFIX = b"clawstaff/clawcage/placeholder/v1\x00"
BROKER_KEY_BYTES = 64

# Headers a binding may not name: the broker must not rewrite framing, routing or hop-by-hop headers.
REFUSED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
    }
)
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
VALUE_SLOT = "{value}"
HEADER_TEXT = (
    'a header with a format, "<Name>: <text>" whose text holds {value} exactly once, such as '
    '"Authorization: Bearer {value}" or "x-api-key: {value}" (not Host, Content-Length or a hop-by-hop header)'
)
# The shortest random tail a placeholder keeps: the broker finds a placeholder by its text.
MIN_PLACEHOLDER_TAIL = 16
_SEPARATORS = "-_.:"
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]*")


@dataclass(frozen=True)
class Binding:
    """One brokered secret: its name, the endpoints it is for, and how it is presented."""

    name: str
    endpoints: tuple[tuple[str, int], ...]
    form: str  # "header" or "basic"
    header: str  # the header's name (Authorization for basic)
    template: str  # the header's value with VALUE_SLOT (basic: "Basic {value}", value = base64(user:secret))


def parse_header_format(text: str) -> tuple[str, str]:
    """`"Name: text with {value}"` -> (Name, template); ValueError with the allowed text otherwise."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(HEADER_TEXT)
    name, _, template = text.partition(":")
    name, template = name.strip(), template.strip()
    if not HEADER_NAME.match(name) or name.lower() in REFUSED_HEADERS:
        raise ValueError(HEADER_TEXT)
    if template.count(VALUE_SLOT) != 1 or any(c in template for c in "\r\n\x00"):
        raise ValueError(HEADER_TEXT)
    if "{" in template.replace(VALUE_SLOT, "") or "}" in template.replace(VALUE_SLOT, ""):
        raise ValueError(HEADER_TEXT)
    return name, template


def binding(name: str, endpoints: Iterable[tuple[str, int]], *, header: str | None, basic: str | None) -> Binding:
    if (header is None) == (basic is None):
        raise ValueError("exactly one presentation form: header or basic")
    points = tuple(sorted({(h.lower(), int(p)) for h, p in endpoints}))
    if not points:
        raise ValueError("a brokered secret is bound to at least one endpoint")
    if header is not None:
        header_name, template = parse_header_format(header)
        return Binding(name, points, "header", header_name, template)
    if basic not in BASIC_PARTS:
        raise ValueError("basic takes: " + ", ".join(BASIC_PARTS))
    return Binding(name, points, "basic", "Authorization", "Basic {value}")


def derive_broker_key(sealing_key: str, claw: str) -> bytes:
    """The broker's own key: the cage key's salt, its own info string, so the claw's key opens nothing
    the broker holds (and the broker's key is never mounted into the claw)."""
    if not sealing_key:
        raise ValueError("sealing key is empty")
    return hkdf_sha256(
        sealing_key, salt=BROKER_KEY_SALT, info=BROKER_KEY_INFO_PREFIX + claw.encode(), length=BROKER_KEY_BYTES
    )


def _shape_prefix(value: str) -> str:
    """What a placeholder keeps of the real value: its leading, format-naming part (`sk-ant-api03-`,
    `xoxb-`, `ghp_`), up to the last separator in its first 16 characters, if a long random tail is left."""
    head = value[:16]
    cut = max(head.rfind(c) for c in _SEPARATORS) + 1
    tail = value[cut:]
    if not _PREFIX.fullmatch(value[:cut]) or sum(ch.isalnum() for ch in tail) < MIN_PLACEHOLDER_TAIL:
        return ""
    return value[:cut]


def placeholder(sealing_key: str, claw: str, name: str, value: str) -> str:
    """The claw's stand-in for a brokered secret, of the same shape: the real value's format prefix,
    then as many characters, drawn from the alphabet of the real value's tail (lower case, upper case,
    digits; separators kept in place), at least MIN_PLACEHOLDER_TAIL of them. Deterministic (HKDF of
    the sealing key, the claw and the name: no diff without a change) and different in every cage.
    It tells nothing of the value but its length, prefix and alphabet."""
    prefix = _shape_prefix(value)
    tail = value[len(prefix) :]
    alphabet = ""
    for chars, test in (("abcdefghijklmnopqrstuvwxyz", str.islower), ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", str.isupper)):
        if any(test(c) and c.isascii() for c in tail):
            alphabet += chars
    if any(c.isdigit() for c in tail) or not alphabet:
        alphabet += "0123456789"
    if len(alphabet) == 10:  # digits only would be a weak marker: add lower case
        alphabet += "abcdefghijklmnopqrstuvwxyz"
    shape = [c if c in _SEPARATORS else None for c in tail]
    while sum(s is None for s in shape) < MIN_PLACEHOLDER_TAIL:
        shape.append(None)
    stream = hkdf_sha256(
        sealing_key,
        salt=BROKER_KEY_SALT,
        info=PLACEHOLDER_INFO_PREFIX + claw.encode() + b"\x00" + name.encode(),
        length=len(shape) * 2,
    )
    out = []
    for i, s in enumerate(shape):
        out.append(s if s is not None else alphabet[int.from_bytes(stream[2 * i : 2 * i + 2], "big") % len(alphabet)])
    result = prefix + "".join(out)
    if result == value:  # cannot happen for a value with a random tail; never hand the claw its secret
        raise ValueError(f"the placeholder of {name} would equal its value")
    return result


def presented(b: Binding, value: str, user: str = "") -> str:
    """The header value the upstream receives for `value` (basic: with the claw's user name)."""
    if b.form == "basic":
        return b.template.replace(VALUE_SLOT, base64.b64encode(f"{user}:{value}".encode()).decode())
    return b.template.replace(VALUE_SLOT, value)


def broker_spec(claw: str, org: str, bindings: Sequence[Binding], placeholders: Mapping[str, str]) -> str:
    """The broker's CLAWCAGE_BROKER: its bindings and the claw's placeholders (no secret value)."""
    entries = [
        {
            "name": b.name,
            "form": b.form,
            "header": b.header,
            "template": b.template,
            "endpoints": [f"{h}:{p}" for h, p in b.endpoints],
            "placeholder": placeholders[b.name],
        }
        for b in sorted(bindings, key=lambda b: b.name)
    ]
    return json.dumps({"claw": claw, "org": org, "bindings": entries}, sort_keys=True, separators=(",", ":"))


def intercepted_hosts(bindings: Sequence[Binding]) -> list[str]:
    """The host:port pairs the broker opens (every other one stays a tunnel), sorted."""
    return sorted({f"{h}:{p}" for b in bindings for h, p in b.endpoints})


# --- the audit line: its fields and their reader; broker-init writes it (its copy is checked equal) ---

AUDIT_TAG = "clawcage-broker"
AUDIT_FIELDS = (
    "log",
    "time",
    "claw",
    "org",
    "method",
    "host",
    "path",
    "status",
    "bytes_out",
    "bytes_in",
    "duration_ms",
    "secret",
    "verdict",
)
VERDICTS = ("brokered", "no-credential", "exfiltration-attempt", "upstream-error")


def path_without_query_values(path: str) -> str:
    """A request path with every query value dropped (`/v1/x?key=abc&b` -> `/v1/x?key=&b`): what the
    audit keeps of a URL, so a token in a query string never reaches the log."""
    base, sep, query = path.partition("?")
    if not sep:
        return base
    keys = [part.split("=", 1)[0] + ("=" if "=" in part else "") for part in query.split("&")]
    return base + "?" + "&".join(keys)


def parse_audit_line(line: str) -> dict | None:
    """One broker audit line as a dict; None for another line (mitmproxy's own messages). A line that
    claims to be one but does not parse raises ValueError: an audit reader never skips a line."""
    text = line.strip()
    if AUDIT_TAG not in text:
        return None
    try:
        entry = json.loads(text)
    except ValueError as err:
        raise ValueError(f"unreadable broker audit line ({err}): {text[:200]!r}") from None
    if not isinstance(entry, dict) or entry.get("log") != AUDIT_TAG or tuple(entry) != AUDIT_FIELDS:
        raise ValueError(f"not a broker audit object: {text[:200]!r}")
    if entry["verdict"] not in VERDICTS:
        raise ValueError(f"unknown verdict in a broker audit line: {text[:200]!r}")
    return entry
