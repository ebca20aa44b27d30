"""The audit trail's certificates (components/trailpki.py): derived, deterministic, each for its one use."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
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
