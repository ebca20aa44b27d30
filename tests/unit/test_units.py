"""Sizes and CPU amounts as written in a stack file."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.units import GiB, MiB, format_cpus, format_size, parse_cpus, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * MiB),
        ("2GiB", 2 * GiB),
        ("10GB", 10 * 1000**3),
        ("1.5GiB", 1536 * MiB),
        ("900GB", 900 * 1000**3),
        ("1TiB", 1024 * GiB),
        ("64kB", 64_000),
        ("4KiB", 4096),
        ("2 GiB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("1048576", MiB),
        ("100B", 100),
        (4096, 4096),
    ],
)
def test_parse_size_accepts_the_usual_suffixes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1 GB x", "not a size"),
        ("", "not a size"),
        ("GiB", "not a size"),
        ("-1GiB", "not a size"),
        ("512m", 'unknown unit "m"'),
        ("2 gigs", 'unknown unit "gigs"'),
        ("0.3B", "not a whole number of bytes"),
        ("0MiB", "must be greater than zero"),
        (0, "must be greater than zero"),
        (-5, "must be greater than zero"),
        (1.5, "a number without a unit must be a whole number of bytes"),
        (True, "true/false"),
        (None, "not a size"),
        ([1], "not a size"),
        ("9000000TiB", "too large"),
    ],
)
def test_parse_size_rejects_with_a_reason(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "cpus"),
    [
        (1, Decimal(1)),
        (0.5, Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("2.00", Decimal(2)),
        (0.25, Decimal("0.25")),
        (16, Decimal(16)),
    ],
)
def test_parse_cpus_accepts_decimals(value, cpus):
    assert parse_cpus(value) == cpus


def test_parse_cpus_gives_plain_decimals_without_exponents():
    assert str(parse_cpus("10")) == "10"
    assert str(parse_cpus("1.50")) == "1.5"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (0, "greater than zero"),
        ("-1", "greater than zero"),
        ("0.001", "more than two decimals"),
        (0.125, "more than two decimals"),
        ("one", "not a number"),
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
        (True, "not a number"),
        (None, "not a number"),
        (1e26, "more than 4096"),
    ],
)
def test_parse_cpus_rejects_with_a_reason(value, reason):
    with pytest.raises(ValueError, match=reason):
        parse_cpus(value)


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (GiB, "1GiB"),
        (512 * MiB, "512MiB"),
        (1536 * MiB, "1536MiB"),
        (900 * 1000**3, "900GB"),
        (10**12, "1TB"),
        (100, "100B"),
    ],
)
def test_format_size_is_exact_and_short(size, text):
    assert format_size(size) == text


def test_format_cpus():
    assert format_cpus(Decimal("2.00")) == "2"
    assert format_cpus(Decimal("1.50")) == "1.5"


@given(st.integers(min_value=1, max_value=2**50))
def test_format_size_round_trips(size):
    assert parse_size(format_size(size)) == size


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_size_returns_a_positive_int_or_raises_value_error(value):
    try:
        size = parse_size(value)
    except ValueError:
        return
    assert isinstance(size, int) and size > 0


@given(st.one_of(st.text(max_size=20), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_cpus_returns_a_positive_cent_amount_or_raises_value_error(value):
    try:
        cpus = parse_cpus(value)
    except ValueError:
        return
    assert cpus > 0 and cpus == cpus.quantize(Decimal("0.01"))
