"""The ClawStaff fleet: read and validate the stack config, build the Fleet, export a summary."""

import pulumi

from components import config as stack_config
from components.fleet import Fleet
from components.outputs import fleet_summary

config = stack_config.load()
fleet = Fleet("fleet", config)
sink_url = fleet.audit_sink.url if fleet.audit_sink is not None else None
for key, value in fleet_summary(config, fleet.placement, fleet.host_configs, sink_url).items():
    pulumi.export(key, value)
