"""The ClawStaff fleet: read and validate the stack config, build the Fleet, export a summary."""

import pulumi

from components import config as stack_config
from components.fleet import Fleet
from components.outputs import fleet_summary

config = stack_config.load()
fleet = Fleet("fleet", config)
for key, value in fleet_summary(config, fleet.placement, fleet.host_configs).items():
    pulumi.export(key, value)
