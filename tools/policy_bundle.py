"""A self-contained copy of the policy pack for `pulumi policy publish`.

    python -m tools.policy_bundle [--out build/policy-pack]

In this repository the pack runs in the project's virtualenv (`virtualenv: ../.venv` in
policies/PulumiPolicy.yaml). A published pack is installed elsewhere, so the copy gets a virtualenv of its
own (`venv`, made by the CLI from the pack's requirements.txt) and carries only what the pack is: its
modules, PulumiPolicy.yaml, requirements.txt, the config schema and the stacks' configs. Then:

    cd build/policy-pack && pulumi policy publish <org>
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "policies"
FILES = ("requirements.txt", "config.schema.json")


def bundle(out: Path, pack: Path = PACK) -> Path:
    """Write the copy to `out` (replacing it) and return it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for module in sorted(pack.glob("*.py")):
        shutil.copy2(module, out / module.name)
    for name in FILES:
        shutil.copy2(pack / name, out / name)
    shutil.copytree(pack / "config", out / "config")
    project = yaml.safe_load((pack / "PulumiPolicy.yaml").read_text())
    project["runtime"] = {"name": "python", "options": {"virtualenv": "venv"}}
    (out / "PulumiPolicy.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.policy_bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "policy-pack")
    args = parser.parse_args(argv)
    print(bundle(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
