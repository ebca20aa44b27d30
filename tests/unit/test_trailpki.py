"""The audit trail's certificates (components/trailpki.py): derived, deterministic, each for its one use."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components import trailpki

VALID = trailpki.Validity(datetime(2026, 12, 1, tzinfo=timezone.utc), datetime(2027, 12, 1, tzinfo=timezone.utc))


def issued(secret: str = "stack secret"):
    ca = trailpki.certificate_authority(secret, "prod", VALID)
    sink = trailpki.sink_certificate(secret, ca, "audit-sink", ["203.0.113.7", "sink.example.net"], VALID)
    host = trailpki.upload_certificate(secret, ca, "cage-host-1", VALID)
    return ca, sink, host


def test_the_same_stack_renders_the_same_certificates_and_another_secret_other_keys() -> None:
    # Ed25519 signs deterministically and every key is derived: nothing changes between runs.
    assert issued() == issued()
    assert {i.key_pem for i in issued()}.isdisjoint({i.key_pem for i in issued("another secret")})


def test_the_ca_signs_the_sinks_and_the_hosts_certificates_and_only_the_ca_may_sign() -> None:
    ca, sink, host = issued()
    for leaf in (sink, host):
        leaf.certificate.verify_directly_issued_by(ca.certificate)
        assert leaf.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (constraints.ca, constraints.path_length) == (True, 0)
    other_ca, _, _ = issued("another secret")
    with pytest.raises(InvalidSignature):
        host.certificate.verify_directly_issued_by(other_ca.certificate)


def test_each_leaf_is_for_its_one_use_and_names_what_it_serves() -> None:
    _, sink, host = issued()
    usage = lambda c: list(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # noqa: E731
    assert usage(sink.certificate) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert usage(host.certificate) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    names = sink.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.7"]
    assert names.get_values_for_type(x509.DNSName) == ["sink.example.net"]
    # The sink files a host's entries under its certificate's common name.
    assert host.certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cage-host-1"
    assert (host.certificate.not_valid_before_utc, host.certificate.not_valid_after_utc) == (
        VALID.not_before,
        VALID.not_after,
    )


def test_a_key_is_never_printed() -> None:
    ca, sink, host = issued()
    for one in (ca, sink, host):
        assert "PRIVATE" not in repr(one) and "PRIVATE" in one.key_pem


@pytest.mark.parametrize(
    ("call", "said"),
    [
        (lambda ca: trailpki.upload_certificate("s", ca, "host\nCN=other", VALID), "upload 'host\\\\nCN=other'"),
        (lambda ca: trailpki.upload_certificate("s", ca, "", VALID), "1 to 64 letters"),
        (lambda ca: trailpki.sink_certificate("s", ca, "sink", [], VALID), "at least one address"),
        (lambda ca: trailpki.sink_certificate("s", ca, "sink", ["bad host"], VALID), "address 'bad host'"),
    ],
)
def test_a_name_that_is_not_a_plain_host_name_is_refused(call, said) -> None:
    ca = trailpki.certificate_authority("s", "prod", VALID)
    with pytest.raises(ValueError, match=said):
        call(ca)


def test_a_validity_is_aware_and_ends_after_it_starts() -> None:
    with pytest.raises(ValueError, match="aware"):
        trailpki.Validity(datetime(2026, 12, 1), datetime(2027, 12, 1))
    with pytest.raises(ValueError, match="ends"):
        trailpki.Validity(VALID.not_after, VALID.not_before)


# --- the validity of a run's certificates ---------------------------------------------------------------


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        datetime(2026, 7, 14, 12, 30, tzinfo=timezone.utc),
        datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
    ],
)
def test_every_run_in_a_year_renders_the_certificates_of_that_year(now: datetime) -> None:
    validity = trailpki.yearly_validity(now)
    assert validity == trailpki.Validity(
        datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2028, 1, 1, tzinfo=timezone.utc)
    )
    # The same validity, so the same certificates: no run in the year touches the hosts for them.
    ca = trailpki.certificate_authority("s", "prod", validity)
    assert ca == trailpki.certificate_authority(
        "s", "prod", trailpki.yearly_validity(datetime(2026, 3, 1, tzinfo=timezone.utc))
    )


def test_the_validity_is_the_utc_year() -> None:
    # 1 January 00:30 in UTC+1 is still 31 December in UTC: the earlier year's certificates.
    plus_one = timezone(timedelta(hours=1))
    assert trailpki.yearly_validity(datetime(2027, 1, 1, 0, 30, tzinfo=plus_one)).not_before == datetime(
        2026, 1, 1, tzinfo=timezone.utc
    )
    with pytest.raises(ValueError, match="aware datetime"):
        trailpki.yearly_validity(datetime(2026, 7, 1))


def test_next_years_certificates_overlap_this_years_by_a_year_and_chain_to_either_ca() -> None:
    this = trailpki.yearly_validity(datetime(2026, 6, 1, tzinfo=timezone.utc))
    following = trailpki.yearly_validity(datetime(2027, 2, 1, tzinfo=timezone.utc))
    assert following.not_before == datetime(2027, 1, 1, tzinfo=timezone.utc) < this.not_after
    assert this.not_after - following.not_before == timedelta(days=365)
    old_ca, new_ca = (trailpki.certificate_authority("s", "prod", v) for v in (this, following))
    old_host = trailpki.upload_certificate("s", old_ca, "cage-host-1", this)
    new_sink = trailpki.sink_certificate("s", new_ca, "audit-sink", ["10.0.2.10"], following)
    # The CA's key is the secret's, not the year's: a host still holding last year's certificate is
    # verified by this year's CA, and the other way round.
    old_host.certificate.verify_directly_issued_by(new_ca.certificate)
    new_sink.certificate.verify_directly_issued_by(old_ca.certificate)
    # Each certificate issued again has a serial of its own (RFC 5280: unique per issuer).
    assert old_ca.certificate.serial_number != new_ca.certificate.serial_number
    again = trailpki.sink_certificate("s", new_ca, "audit-sink", ["10.0.2.10"], this)
    assert again.certificate.serial_number != new_sink.certificate.serial_number
    assert again.key_pem == new_sink.key_pem


def test_a_fingerprint_names_the_certificate_and_never_the_key() -> None:
    ca, sink, host = issued()
    assert len({ca.fingerprint, sink.fingerprint, host.fingerprint}) == 3
    assert sink.fingerprint == hashlib.sha256(sink.certificate.public_bytes(Encoding.DER)).hexdigest()
    other = trailpki.sink_certificate("stack secret", ca, "audit-sink", ["203.0.113.8"], VALID)
    assert other.fingerprint != sink.fingerprint and other.key_pem == sink.key_pem
