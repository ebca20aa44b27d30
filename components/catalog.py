"""Hetzner Cloud server types and locations that a `cloud` host may name.

A cloud host's capacity comes from here, so config can tell before anything is created whether a claw
fits. Hetzner quotes RAM in "GB" that are GiB, and disks in GB; the numbers below follow that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from components.units import GB, GiB

# Location code -> where it is.
LOCATIONS: dict[str, str] = {
    "fsn1": "Falkenstein, DE",
    "nbg1": "Nuremberg, DE",
    "hel1": "Helsinki, FI",
    "ash": "Ashburn, VA, US",
    "hil": "Hillsboro, OR, US",
    "sin": "Singapore, SG",
}
EU_LOCATIONS = frozenset({"fsn1", "nbg1", "hel1"})
ALL_LOCATIONS = frozenset(LOCATIONS)


@dataclass(frozen=True)
class ServerType:
    name: str
    cpus: int  # vCPUs
    memory: int  # bytes
    disk: int  # bytes (local NVMe)
    architecture: Literal["x86", "arm"]
    locations: frozenset[str]  # where Hetzner offers it


def _family(
    names_and_sizes: list[tuple[str, int, int, int]], architecture: Literal["x86", "arm"], locations: frozenset[str]
) -> dict[str, ServerType]:
    return {
        name: ServerType(name, cpus, memory_gib * GiB, disk_gb * GB, architecture, locations)
        for name, cpus, memory_gib, disk_gb in names_and_sizes
    }


SERVER_TYPES: dict[str, ServerType] = {
    # Shared vCPU, Intel/AMD (EU only).
    **_family(
        [
            ("cx22", 2, 4, 40),
            ("cx32", 4, 8, 80),
            ("cx42", 8, 16, 160),
            ("cx52", 16, 32, 320),
            ("cx23", 2, 4, 40),
            ("cx33", 4, 8, 80),
            ("cx43", 8, 16, 160),
            ("cx53", 16, 32, 320),
        ],
        "x86",
        EU_LOCATIONS,
    ),
    # Shared vCPU, AMD (all locations).
    **_family(
        [
            ("cpx11", 2, 2, 40),
            ("cpx21", 3, 4, 80),
            ("cpx31", 4, 8, 160),
            ("cpx41", 8, 16, 240),
            ("cpx51", 16, 32, 360),
        ],
        "x86",
        ALL_LOCATIONS,
    ),
    # Dedicated vCPU, AMD (all locations).
    **_family(
        [
            ("ccx13", 2, 8, 80),
            ("ccx23", 4, 16, 160),
            ("ccx33", 8, 32, 240),
            ("ccx43", 16, 64, 360),
            ("ccx53", 32, 128, 600),
            ("ccx63", 48, 192, 960),
        ],
        "x86",
        ALL_LOCATIONS,
    ),
    # Shared vCPU, Ampere Arm64 (EU only).
    **_family(
        [
            ("cax11", 2, 4, 40),
            ("cax21", 4, 8, 80),
            ("cax31", 8, 16, 160),
            ("cax41", 16, 32, 320),
        ],
        "arm",
        EU_LOCATIONS,
    ),
}
