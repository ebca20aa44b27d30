"""Every rule module of the pack, in the order the pack lists their policies: the one list that the pack
itself (__main__.py), its control map (controls.py) and its config schema (config_schema.py) read."""

from __future__ import annotations

import allowlist_rules
import broker_rules
import command_rules
import container_rules
import hetzner_rules
import network_rules
import runtime_rules
import stack_rules

RULE_MODULES = (
    container_rules,
    network_rules,
    hetzner_rules,
    command_rules,
    stack_rules,
    allowlist_rules,
    broker_rules,
    runtime_rules,
)
POLICIES = [policy for module in RULE_MODULES for policy in module.POLICIES]
