"""The certificates of the audit trail's transport: mutual TLS between each cage host's
systemd-journal-upload and the stack's audit sink's systemd-journal-remote (issue 15, docs/audit.md).

One certificate authority per stack signs two kinds of certificate:

- the sink's (server authentication), naming the addresses the hosts reach it at;
- one per cage host (client authentication), whose common name is the host's name. journal-remote
  takes a client's name from its verified certificate, not from what it uploads, and writes each
  client's entries to its own file (`remote-<name>.journal`): a host cannot write as another host.

Every key is Ed25519 and derived from the stack's sealing secret (components.hostkeys.derive_key, its
own purpose per key), and Ed25519 signatures are deterministic: the same stack renders the same
certificates on every run, so nothing changes (and no host is touched) until the secret, a name, an
address or the validity does. The validity is the calendar years' (`yearly_validity`), so the
certificates change once a year and not on every run. The private keys are delivered like the cages'
secrets, over the pinned SSH connection, never in user-data.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.hostkeys import derive_key

ORGANIZATION = "ClawStaff audit trail"


@dataclass(frozen=True)
class Validity:
    """When a stack's trail certificates are valid (UTC, aware datetimes)."""

    not_before: datetime
    not_after: datetime

    def __post_init__(self) -> None:
        if self.not_before.tzinfo is None or self.not_after.tzinfo is None:
            raise ValueError("a trail certificate's validity takes aware datetimes (UTC)")
        if self.not_after <= self.not_before:
            raise ValueError(
                f"a trail certificate's validity ends ({self.not_after}) before it starts ({self.not_before})"
            )


# How many calendar years a certificate issued in one year is valid: the year it is issued in and the
# next, so that the certificates issued in the next year overlap it by a whole year.
VALIDITY_YEARS = 2


def yearly_validity(now: datetime) -> Validity:
    """The validity of the certificates a run at `now` renders: from 1 January of now's year (UTC) to 1
    January VALIDITY_YEARS later. Every run in one year renders the same certificates; the first run of
    the next year renders new ones (new serials, the same keys), and those that are deployed stay valid
    for that whole year, so a host not yet updated keeps working. A stack must be updated (`pulumi up`)
    at least once a year, or its certificates expire. `now` is the caller's (the program's clock, or a
    test's date)."""
    if now.tzinfo is None:
        raise ValueError("the trail certificates' validity is computed from an aware datetime (UTC)")
    year = now.astimezone(timezone.utc).year
    return Validity(
        datetime(year, 1, 1, tzinfo=timezone.utc), datetime(year + VALIDITY_YEARS, 1, 1, tzinfo=timezone.utc)
    )


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM. The key is a secret: it is never printed."""

    name: str
    certificate_pem: str
    key_pem: str

    def __repr__(self) -> str:
        return f"Issued(name={self.name!r})"

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem.encode())

    @property
    def fingerprint(self) -> str:
        """The certificate's SHA-256 fingerprint (of its DER form, hex): public, and what names a
        change of the certificate (never of the key, whose text is a secret)."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()


def _key(secret: str, purpose: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(derive_key(secret, f"audit-trail/{purpose}"))


def _serial(purpose: str, name: str, validity: Validity) -> int:
    """A certificate's serial: its own for each purpose, name and validity, so a certificate issued
    again for a new validity has a new serial (RFC 5280: unique per issuer)."""
    start = validity.not_before.isoformat()
    digest = hashlib.sha256(f"clawstaff/audit-trail/serial\x00{purpose}\x00{name}\x00{start}".encode()).digest()
    return int.from_bytes(digest[:16], "big") >> 1  # positive, at most 127 bits (RFC 5280: 20 octets)


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def _subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-." for c in name):
        raise ValueError(f"{what} {name!r}: a trail certificate's name is 1 to 64 letters, digits, '-' or '.'")


def certificate_authority(secret: str, stack: str, validity: Validity) -> Issued:
    """The stack's trail CA: it signs the sink's and the hosts' certificates, and each side trusts it
    alone (journal-remote's and journal-upload's TrustedCertificateFile)."""
    _check_name(stack, "stack")
    key = _key(secret, f"ca/{stack}")
    name = _subject(f"{stack} audit trail CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial("ca", stack, validity))
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, None)
    )
    return Issued(name=f"{stack}-ca", certificate_pem=cert.public_bytes(Encoding.PEM).decode(), key_pem=_pem(key))


def _ca_key(ca: Issued) -> Ed25519PrivateKey:
    key = load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{ca.name}: a trail CA's key is Ed25519")
    return key


def _leaf(secret: str, ca: Issued, purpose: str, name: str, usage, alt_names: list, validity: Validity) -> Issued:
    _check_name(name, purpose)
    issuer = ca.certificate
    key = _key(secret, f"{purpose}/{ca.name}/{name}")
    builder = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(_serial(purpose, f"{ca.name}/{name}", validity))
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )  # digitalSignature
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    cert = builder.sign(_ca_key(ca), None)
    return Issued(name=name, certificate_pem=cert.public_bytes(Encoding.PEM).decode(), key_pem=_pem(key))


def sink_certificate(secret: str, ca: Issued, sink: str, addresses: list[str], validity: Validity) -> Issued:
    """The sink's server certificate: its name and every address the hosts reach it at (an IP address
    as an IP entry, a name as a DNS entry: journal-upload checks the URL's host against them)."""
    if not addresses:
        raise ValueError(f"sink {sink!r}: its certificate names at least one address the hosts reach it at")
    alt: list[x509.GeneralName] = []
    for address in addresses:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            _check_name(address, f"sink {sink!r} address")
            alt.append(x509.DNSName(address))
    return _leaf(secret, ca, "sink", sink, ExtendedKeyUsageOID.SERVER_AUTH, alt, validity)


def upload_certificate(secret: str, ca: Issued, host: str, validity: Validity) -> Issued:
    """A cage host's client certificate; its common name is the name the sink files its entries under."""
    return _leaf(secret, ca, "upload", host, ExtendedKeyUsageOID.CLIENT_AUTH, [], validity)
