"""The stack config (`clawstaff:*` in Pulumi.<stack>.yaml), checked before any resource exists and
returned as the typed objects of components.model.

Every user mistake becomes one ConfigError whose text names the stack file, the key path, the value as
written and what is allowed; `pulumi up` prints it without a traceback and the offline preview exits 2.
Secret values (sealingKey, clawSecrets) are never echoed.

The parts, each one idea:
- fields: one value at a time: limits, patterns, parsers and the allowed-values text of each;
- schema: the file's shape as pydantic models, and beside each model what its keys allow (ALLOWED);
- report: ConfigError and the reporter that turns a pydantic error or a check into one;
- checks: what spans keys (unique names, pools, pins, capacity, secrets that match the claws);
- load: the whole map to a StackConfig, and reading it from a stack file or from the engine.

This module re-exports their entry points, so callers keep `from components.config import ...`.
"""

from __future__ import annotations

import pulumi

from components.config.checks import (
    check_admin_can_reach_servers,
    check_claw_secrets_match_claws,
    check_claws_fit_a_host,
    check_local_host_stands_alone,
    check_no_repeats_in_lists,
    check_pins,
    check_placement_lock_names_claws,
    check_pools,
    check_secrets_are_secret,
    check_server_type_offered_in_location,
    check_tmpfs_within_memory,
    check_unique_claw_names,
    check_unique_host_names_and_addresses,
)
from components.config.fields import (
    DNS_LABEL_TEXT,
    ENDPOINT_TEXT,
    HOST_CPUS_TEXT,
    HOST_IMAGES,
    HOST_KINDS,
    IMAGE_TEXT,
    LOCAL_DEFAULT_CAPACITY,
    LOCAL_NAME_SUFFIXES,
    MAX_CAGES_PER_HOST,
    MAX_OVERCOMMIT,
    MAX_PIDS,
    MIN_CLAW_MEMORY,
    MIN_PIDS,
    MIN_SEALING_KEY_CHARS,
    MIN_TMPFS,
    MIN_VOLUME,
    NAMESPACE,
    NON_PUBLIC_NETWORKS,
    POOL_MAX_HOSTS,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIX,
    SECRET_KEYS,
    SECRET_VALUE_TEXT,
    SIZE_TEXT,
    STRUCTURED_KEYS,
    Invalid,
    is_secret_placeholder,
    parse_bool,
    parse_cidr,
    parse_command_word,
    parse_dns_label,
    parse_endpoint,
    parse_env_name,
    parse_host_image,
    parse_image,
    parse_location,
    parse_max_cages,
    parse_overcommit,
    parse_pids,
    parse_pool_max,
    parse_public_ip,
    parse_sealing_key,
    parse_secret_value,
    parse_server_type,
    parse_ssh_public_key,
    secret_placeholder,
    size_at_least,
)
from components.config.load import load_stack_file, parse_stack_config, read_runtime_config
from components.config.report import ConfigError, Loc, Reporter, key_path, show_value
from components.config.schema import (
    ALLOWED,
    AdminModel,
    ClawModel,
    CloudHostModel,
    Cpus,
    DedicatedHostModel,
    DnsLabel,
    Drain,
    EndpointField,
    HostModel,
    HOST_MODELS,
    LocalHostModel,
    MaxCages,
    OvercommitModel,
    PlacementModel,
    PoolModel,
    Size,
    StackModel,
)
from components.model import (
    DEFAULT_MAX_CAGES_PER_HOST,
    POOL_INDEX_WIDTH,
    Admin,
    Capacity,
    Claw,
    Endpoint,
    Host,
    HostPool,
    PlacementPolicy,
    StackConfig,
    pool_host_name,
)


def load() -> StackConfig:
    """Inside `pulumi up`: the engine's config for this stack, checked and typed."""
    raw, secret_keys = read_runtime_config()
    return parse_stack_config(raw, stack=pulumi.get_stack(), secret_keys=secret_keys)


__all__ = [
    "ALLOWED", "Admin", "AdminModel", "Capacity", "Claw", "ClawModel", "CloudHostModel", "ConfigError", "Cpus",
    "DEFAULT_MAX_CAGES_PER_HOST", "DNS_LABEL_TEXT", "DedicatedHostModel", "DnsLabel", "Drain", "ENDPOINT_TEXT",
    "Endpoint", "EndpointField", "HOST_CPUS_TEXT", "HOST_IMAGES", "HOST_KINDS", "HOST_MODELS", "Host", "HostModel",
    "HostPool", "IMAGE_TEXT", "Invalid", "LOCAL_DEFAULT_CAPACITY", "LOCAL_NAME_SUFFIXES", "Loc", "LocalHostModel",
    "MAX_CAGES_PER_HOST", "MAX_OVERCOMMIT", "MAX_PIDS", "MIN_PIDS", "MIN_CLAW_MEMORY", "MIN_SEALING_KEY_CHARS", "MIN_TMPFS", "MIN_VOLUME",
    "MaxCages", "NAMESPACE", "NON_PUBLIC_NETWORKS", "OvercommitModel", "POOL_INDEX_WIDTH", "POOL_MAX_HOSTS",
    "PlacementModel", "PlacementPolicy", "PoolModel", "RESERVED_ENV_NAMES", "RESERVED_ENV_PREFIX", "Reporter",
    "SECRET_KEYS", "SECRET_VALUE_TEXT", "SIZE_TEXT", "STRUCTURED_KEYS", "Size", "StackConfig", "StackModel",
    "check_admin_can_reach_servers", "check_claw_secrets_match_claws", "check_claws_fit_a_host",
    "check_local_host_stands_alone", "check_no_repeats_in_lists", "check_pins", "check_placement_lock_names_claws",
    "check_pools", "check_secrets_are_secret", "check_server_type_offered_in_location", "check_tmpfs_within_memory",
    "check_unique_claw_names", "check_unique_host_names_and_addresses", "is_secret_placeholder", "key_path", "load",
    "load_stack_file", "parse_bool", "parse_cidr", "parse_command_word", "parse_dns_label", "parse_endpoint",
    "parse_env_name", "parse_host_image", "parse_image", "parse_location", "parse_max_cages", "parse_overcommit",
    "parse_pids", "parse_pool_max", "parse_public_ip", "parse_sealing_key", "parse_secret_value", "parse_server_type",
    "parse_ssh_public_key", "parse_stack_config", "pool_host_name", "read_runtime_config", "secret_placeholder",
    "show_value", "size_at_least",
]
