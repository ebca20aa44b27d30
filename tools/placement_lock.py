"""The placement lock in a stack file (`clawstaff:placementLock`): print it, or write it.

    python -m tools.placement_lock --stack prod [--write]

Prints (or, with --write, writes into Pulumi.<stack>.yaml) the lock of the stack's current placement:
every claw and the host it runs on. Run it on the config you deploy and commit it with it; placement
(components.placement) then keeps each locked claw where it is while it fits. Exit 0, or 2 on a config
or placement error (one paragraph, as the preview prints it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Sequence

import pulumi

from components.config import load_stack_file, parse_stack_config
from components.placement import PlacementError, place_fleet

ROOT = Path(__file__).resolve().parent.parent
LOCK_KEY = "clawstaff:placementLock"


def render_lock(placement: Mapping[str, str], indent: str = "  ") -> str:
    """The stack file's lock block: every claw and the host it runs on, in name order."""
    lines = [f"{indent}{LOCK_KEY}:"] + [f"{indent}  {claw}: {host}" for claw, host in sorted(placement.items())]
    return "\n".join(lines) + "\n"


def write_lock(stack_text: str, placement: Mapping[str, str]) -> str:
    """The stack file's text with its lock block replaced (or added at the end of `config:`), the rest
    of the file, comments included, untouched. `config:` must be the file's last top-level key."""
    lines = stack_text.splitlines(keepends=True)
    config_at = next((i for i, line in enumerate(lines) if line.rstrip() == "config:"), None)
    if config_at is None or any(line[:1] not in ("", " ", "#", "\n") for line in lines[config_at + 1 :]):
        raise ValueError("the stack file's last top-level key must be config:")
    block = render_lock(placement)
    start = next((i for i, line in enumerate(lines) if line.startswith(f"  {LOCK_KEY}:")), None)
    if start is None:
        text = "".join(lines)
        return text + ("" if text.endswith("\n") else "\n") + block
    end = start + 1
    while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
        end += 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.placement_lock", description="Print or write the placement lock of a stack."
    )
    parser.add_argument("--stack", required=True)
    parser.add_argument("--write", action="store_true", help="rewrite the lock block in Pulumi.<stack>.yaml")
    args = parser.parse_args(argv)
    path = ROOT / f"Pulumi.{args.stack}.yaml"
    try:
        raw, secret_keys = load_stack_file(path)
        placement = place_fleet(parse_stack_config(raw, stack=args.stack, secret_keys=secret_keys))
    except (pulumi.RunError, PlacementError) as error:
        print(f"error: {error}")
        return 2
    if args.write:
        path.write_text(write_lock(path.read_text(), placement.claws))
        print(f"{LOCK_KEY}: {len(placement.claws)} claws written to {path.name}")
    else:
        print(render_lock(placement.claws), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
