"""Sizes and CPU amounts as users write them in a stack file.

Pure functions: each raises ValueError with a short reason, which components.config turns into a
ConfigError naming the stack file, the key path and the value.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4

# Unit suffixes, matched case-insensitively ("gib" == "GiB"). Docker's one-letter "m"/"g" are left out
# on purpose: "512m" means MiB to Docker but MB to most people, so we make the user say which.
SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": KB,
    "mb": MB,
    "gb": GB,
    "tb": TB,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
}
SIZE_EXAMPLES = "512MiB, 2GiB or 10GB"
# Docker stores limits as int64 bytes.
MAX_SIZE = 2**63 - 1
# Far beyond any server; keeps Decimal arithmetic within its precision.
MAX_CPUS = 4096

_SIZE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)\s*$")

# format_size tries these in order and uses the first that divides exactly: binary units first
# (what memory is measured in), then decimal ones (what disks are sold in).
_FORMAT_UNITS = (("TiB", TiB), ("TB", TB), ("GiB", GiB), ("GB", GB), ("MiB", MiB), ("MB", MB), ("KiB", KiB), ("kB", KB))


def parse_size(value: object) -> int:
    """A size in bytes from an int (bytes) or a string with a unit: "512MiB", "1.5GiB", "10GB".

    Only positive, whole numbers of bytes: every size in the stack file is a limit or a capacity.
    """
    if isinstance(value, bool):
        raise ValueError("not a size (a true/false value)")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        size = _parse_size_text(value)
    elif isinstance(value, float):
        raise ValueError("not a size (a number without a unit must be a whole number of bytes)")
    else:
        raise ValueError("not a size")
    if size <= 0:
        raise ValueError("must be greater than zero")
    if size > MAX_SIZE:
        raise ValueError("too large")
    return size


def _parse_size_text(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ValueError("not a size")
    unit = match["unit"].lower() or "b"
    if unit not in SIZE_UNITS:
        raise ValueError(f'unknown unit "{match["unit"]}"')
    size = Decimal(match["number"]) * SIZE_UNITS[unit]
    if size != size.to_integral_value():
        raise ValueError("not a whole number of bytes")
    return int(size)


def parse_cpus(value: object) -> Decimal:
    """A CPU amount from 1, 0.5 or "1.5": positive, at most two decimals (Docker counts in 1e-9 CPUs,
    but finer than 0.01 is noise and usually a typo)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("not a number")
    try:
        cpus = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("not a number") from None
    if not cpus.is_finite():
        raise ValueError("not a finite number")
    if cpus <= 0:
        raise ValueError("must be greater than zero")
    if cpus > MAX_CPUS:
        raise ValueError(f"more than {MAX_CPUS}")
    if cpus != cpus.quantize(Decimal("0.01")):
        raise ValueError("more than two decimals")
    return _plain(cpus)


def _plain(number: Decimal) -> Decimal:
    """1.50 -> 1.5 and 2.00 -> 2, without Decimal's exponent notation (normalize() gives 1E+1)."""
    if number == number.to_integral_value():
        return number.quantize(Decimal(1))
    return number.normalize()


def format_size(size: int) -> str:
    """The shortest exact spelling of a size: 1073741824 -> "1GiB", 900 * 10**9 -> "900GB"."""
    for suffix, factor in _FORMAT_UNITS:
        if size != 0 and size % factor == 0:
            return f"{size // factor}{suffix}"
    return f"{size}B"


def format_cpus(cpus: Decimal) -> str:
    """2 -> "2", 1.5 -> "1.5": how a user would write it."""
    return str(_plain(cpus))
