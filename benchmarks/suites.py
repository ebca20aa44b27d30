"""Per-cage overhead of the images built on two Debian suites, measured in one run.

    python -m benchmarks.suites [--samples N] [--version V]   (root, after `make images` and
                                                           `python3 images/build.py --suite bookworm`)

Runs benchmarks.engine.overhead() against the trixie images (clawstaff/*:<version>) and the
bookworm comparison build (clawstaff/*:<version>-bookworm), one after the other in the same process on
the same engine, and prints both with their ratio. Writes benchmarks/suites.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import engine

ROOT = Path(__file__).resolve().parent.parent
VERSION = engine.VERSION
FIGURES = (
    "overhead_per_cage_mib",
    "proxy_rss_mib",
    "cage_init_rss_mib",
    "claw_rss_mib",
    "bare_rss_mib",
    "cage_create_to_healthy_s",
    "ratio",
)


def measure(version: str, suffix: str, samples: int) -> dict:
    engine.CLAW_IMAGE = f"clawstaff/claw-runtime:{version}{suffix}"
    engine.PROXY_IMAGE = f"clawstaff/egress-proxy:{version}{suffix}"
    return engine.overhead(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suites", description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "suites.json")
    parser.add_argument("--version", default=VERSION, help="the image version both builds carry")
    args = parser.parse_args(argv)
    results = {"trixie": measure(args.version, "", args.samples),
               "bookworm": measure(args.version, "-bookworm", args.samples)}  # fmt: skip
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print("| figure | trixie | bookworm | trixie / bookworm |\n|---|---|---|---|")
    for name in FIGURES:
        t, b = results["trixie"][name], results["bookworm"][name]
        print(f"| {name} | {t:.2f} | {b:.2f} | {t / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
