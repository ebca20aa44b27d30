"""The `clawcage-isolation` CrossGuard policy pack.

Run by `pulumi preview --policy-pack policies` (the CLI starts `python -u -m pulumi.policy <engine> .` in
this directory, which runs this file) and by tools/policyrun.py the same way. Building `PolicyPack` starts
the analyzer gRPC server and prints its port, so it stays the last statement. Every policy is mandatory;
`pulumi policy` config can lower one (`enforcementLevel`) or set its limits.
"""

from __future__ import annotations

import rules
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="clawcage-isolation",
    description="Refuses any resource graph in which a ClawCage breaks an isolation rule.",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=rules.POLICIES,
)
