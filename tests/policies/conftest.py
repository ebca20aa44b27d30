"""The pack's modules import each other as top-level modules (the CLI runs the pack with its own
directory on sys.path, and a published pack is not called `policies`), so the tests put that directory on
sys.path before any test module imports a rule module."""

from __future__ import annotations

import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2] / "policies"
if str(PACK_DIR) not in sys.path:
    sys.path.insert(0, str(PACK_DIR))
