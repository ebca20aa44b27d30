"""Brokered credentials, pure: bindings, placeholders, the broker key, the audit line and the format
broker-init shares; the config's broker keys and their one-paragraph errors; the cage's wiring under
mocks (what is sealed for whom, and what each container declares)."""

from __future__ import annotations

import base64
import importlib.machinery
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from components import broker
from components.broker import (
    AUDIT_FIELDS,
    BROKER_ENV,
    ENV_SECRETS_ENV,
    PLACEHOLDERS_ENV,
    binding,
    derive_broker_key,
    parse_audit_line,
    parse_header_format,
    path_without_query_values,
    placeholder,
    presented,
)
from components.sealing import derive_cage_key, open_credentials
from tests.unit.test_config import SECRET_KEYS, assert_names, config_error, edited, local_raw

BROKER_INIT = Path(__file__).resolve().parents[2] / "images" / "egress-broker" / "broker-init"
SEALING_KEY = "a sealing secret of at least thirty-two characters"
VALUE = "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "-_09"


def load_broker_init():
    loader = importlib.machinery.SourceFileLoader("broker_init", str(BROKER_INIT))
    spec = importlib.util.spec_from_loader("broker_init", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# --- presentation forms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Authorization: Bearer {value}", ("Authorization", "Bearer {value}")),
        ("x-api-key: {value}", ("x-api-key", "{value}")),
        ("X-Token:   tok-{value}-v1", ("X-Token", "tok-{value}-v1")),
    ],
)
def test_a_header_with_a_format_parses(text: str, expected: tuple[str, str]) -> None:
    assert parse_header_format(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "x-api-key {value}",  # no colon
        "x-api-key: value",  # no slot
        "x-api-key: {value}{value}",  # twice
        "Host: {value}",  # routing
        "Content-Length: {value}",  # framing
        "Proxy-Authorization: Basic {value}",  # hop-by-hop
        "x api: {value}",  # not a token
        "x-api-key: {value}\r\nInjected: 1",
        "x-api-key: {val}{value}",
    ],
)
def test_a_header_format_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="a header with a format"):
        parse_header_format(text)


def test_basic_auth_presents_user_and_secret_in_base64() -> None:
    b = binding("JIRA_API_TOKEN", [("globex.atlassian.net", 443)], header=None, basic="password")
    assert (b.form, b.header) == ("basic", "Authorization")
    assert (
        presented(b, "s3cret", user="bot@globex.example")
        == "Basic " + base64.b64encode(b"bot@globex.example:s3cret").decode()
    )


def test_a_binding_has_one_form_and_an_endpoint() -> None:
    with pytest.raises(ValueError):
        binding("A", [("a.example", 443)], header="x: {value}", basic="password")
    with pytest.raises(ValueError):
        binding("A", [("a.example", 443)], header=None, basic=None)
    with pytest.raises(ValueError):
        binding("A", [], header="x: {value}", basic=None)


# --- placeholders and keys --------------------------------------------------------------------------


def test_a_placeholder_has_the_values_shape_and_is_not_the_value() -> None:
    ph = placeholder(SEALING_KEY, "acme-support", "ANTHROPIC_API_KEY", VALUE)
    assert ph != VALUE and len(ph) == len(VALUE)
    assert ph.startswith("sk-ant-api03-")  # the format prefix an SDK may check
    assert ph.endswith("-_" + ph[-2:]) and ph[-4:-2] == "-_"  # separators stay in place
    assert set(ph[13:]) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
    # Deterministic, and different in another cage or for another name.
    assert ph == placeholder(SEALING_KEY, "acme-support", "ANTHROPIC_API_KEY", VALUE)
    assert ph != placeholder(SEALING_KEY, "acme-reports", "ANTHROPIC_API_KEY", VALUE)
    assert ph != placeholder(SEALING_KEY, "acme-support", "OTHER", VALUE)


def test_a_short_value_gets_a_long_enough_placeholder_without_its_prefix() -> None:
    ph = placeholder(SEALING_KEY, "acme-support", "PIN", "1234")
    assert len(ph) >= broker.MIN_PLACEHOLDER_TAIL and "1234" not in ph


def test_the_broker_key_is_not_the_cage_key() -> None:
    assert derive_broker_key(SEALING_KEY, "acme-support") != derive_cage_key(SEALING_KEY, "acme-support")
    assert derive_broker_key(SEALING_KEY, "acme-support") != derive_broker_key(SEALING_KEY, "acme-reports")
    assert len(derive_broker_key(SEALING_KEY, "acme-support")) == 64


# --- the format broker-init shares --------------------------------------------------------------------


def test_broker_init_keeps_the_same_audit_fields_and_path_rule() -> None:
    init = load_broker_init()
    assert init.AUDIT_FIELDS == AUDIT_FIELDS and init.AUDIT_TAG == broker.AUDIT_TAG
    for path in ["/v1/messages", "/v1/x?key=abc&b", "/a?x=1&y=&z", "/?=v", "/p?token=s3cr%3Det"]:
        assert init.path_without_query_values(path) == path_without_query_values(path)
    assert path_without_query_values("/v1/x?key=abc&b") == "/v1/x?key=&b"
    assert (init.SEALED_ENV, init.CLAW_ENV, init.BROKER_ENV) == ("CLAWCAGE_SEALED", "CLAWCAGE_CLAW", BROKER_ENV)
    assert init.UPSTREAM_ENV == broker.UPSTREAM_ENV and init.BENCH_CA_ENV == broker.BENCH_CA_ENV
    assert init.LISTEN_PORT == broker.BROKER_PORT and init.CA_DIR == broker.CA_MOUNT


def test_broker_init_opens_what_the_components_seal_for_the_broker() -> None:
    from components.sealing import seal_credentials

    init = load_broker_init()
    key = derive_broker_key(SEALING_KEY, "acme-support")
    sealed = seal_credentials(key, "acme-support", {"ANTHROPIC_API_KEY": VALUE})
    assert init.open_sealed(key, "acme-support", sealed) == {"ANTHROPIC_API_KEY": VALUE}
    with pytest.raises(init.Refused):
        init.open_sealed(derive_cage_key(SEALING_KEY, "acme-support"), "acme-support", sealed)  # the claw's key
    with pytest.raises(init.Refused):
        init.open_sealed(key, "acme-reports", sealed)


def _flow(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> Any:
    from types import SimpleNamespace

    class Headers:
        def __init__(self, fields):
            self.fields = tuple((k.encode(), v.encode()) for k, v in fields)

    request = SimpleNamespace(
        host=host, port=port, path=path, method="GET", headers=Headers(headers), raw_content=b"", timestamp_start=0.0
    )
    return SimpleNamespace(request=request, response=None, metadata={})


def _addon():
    init = load_broker_init()
    ph = placeholder(SEALING_KEY, "acme-support", "ANTHROPIC_API_KEY", VALUE)
    spec = json.loads(
        broker.broker_spec(
            "acme-support",
            "acme",
            [binding("ANTHROPIC_API_KEY", [("api.anthropic.com", 443)], header="x-api-key: {value}", basic=None)],
            {"ANTHROPIC_API_KEY": ph},
        )
    )
    return init.Broker("acme-support", "acme", spec["bindings"], {"ANTHROPIC_API_KEY": VALUE}), ph


def test_the_addon_swaps_the_bound_header_only() -> None:
    addon, ph = _addon()
    flow = _flow("api.anthropic.com", 443, "/v1/messages", [("x-api-key", ph), ("accept", "*/*")])
    addon.request(flow)
    assert flow.response is None
    assert dict(flow.request.headers.fields)[b"x-api-key"] == VALUE.encode()
    assert flow.metadata["clawcage-secret"] == "ANTHROPIC_API_KEY"


@pytest.mark.parametrize(
    "host, port, path, headers",
    [
        ("api.anthropic.com", 443, "/v1?leak=PH", []),  # in the query
        ("api.anthropic.com", 443, "/v1", [("authorization", "Bearer PH")]),  # in another header
        ("api.anthropic.com", 8443, "/v1", [("x-api-key", "PH")]),  # on another port of the bound host
        ("api.anthropic.com", 443, "/v1", [("x-api-key", "Bearer PH")]),  # not the bound form
    ],
)
def test_the_addon_refuses_a_misplaced_placeholder(host: str, port: int, path: str, headers: list, monkeypatch) -> None:
    import contextlib
    import io
    import sys
    from types import ModuleType, SimpleNamespace

    # mitmproxy is in the broker image, not in this virtualenv: its one object the refusal builds.
    fake = ModuleType("mitmproxy")
    fake.http = SimpleNamespace(
        Response=SimpleNamespace(
            make=lambda status, body, headers: SimpleNamespace(status_code=status, raw_content=body, timestamp_end=None)
        )
    )
    monkeypatch.setitem(sys.modules, "mitmproxy", fake)

    addon, ph = _addon()
    flow = _flow(host, port, path.replace("PH", ph), [(k, v.replace("PH", ph)) for k, v in headers])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        addon.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    line = parse_audit_line(printed.getvalue())
    assert line["verdict"] == "exfiltration-attempt" and line["secret"] == "ANTHROPIC_API_KEY"
    assert VALUE not in printed.getvalue() and "leak=" + ph not in line["path"]
    assert all(VALUE.encode() not in v for _, v in flow.request.headers.fields)


def test_an_audit_line_that_claims_to_be_one_must_parse() -> None:
    assert parse_audit_line("mitmproxy: some message") is None
    with pytest.raises(ValueError):
        parse_audit_line('{"log":"clawcage-broker","time":"x"}')
    with pytest.raises(ValueError):
        parse_audit_line("clawcage-broker {not json")


# --- the config ----------------------------------------------------------------------------------------

BROKER_KEY = "claws[0].broker"
GOOD = {"ANTHROPIC_API_KEY": {"endpoints": ["api.anthropic.com:443"], "header": "x-api-key: {value}"}}


def broker_raw(entry: dict[str, Any]) -> dict[str, Any]:
    return edited(
        local_raw(),
        ("claws[0].egress", ["api.anthropic.com:443", "slack.com:443"]),
        ("clawstaff:brokerImage", "ghcr.io/clawstaff/egress-broker@sha256:" + "b" * 64),
        (BROKER_KEY, entry),
    )


def test_a_brokered_secret_loads_into_the_model() -> None:
    from components.config import parse_stack_config

    config = parse_stack_config(broker_raw(GOOD), stack="local", secret_keys=SECRET_KEYS)
    (b,) = config.claws[0].broker
    assert (b.name, b.endpoints, b.form, b.header, b.template) == (
        "ANTHROPIC_API_KEY",
        (("api.anthropic.com", 443),),
        "header",
        "x-api-key",
        "{value}",
    )


BROKER_MISTAKES = {
    "endpoint not in the egress list": (
        {"ANTHROPIC_API_KEY": {"endpoints": ["api.openai.com:443"], "header": "x-api-key: {value}"}},
        "clawstaff:claws[0].broker.ANTHROPIC_API_KEY.endpoints[0]",
        "not in this claw's egress",
        "api.anthropic.com:443, slack.com:443",
    ),
    "unknown form": (
        {"ANTHROPIC_API_KEY": {"endpoints": ["api.anthropic.com:443"], "cookie": "k={value}"}},
        "clawstaff:claws[0].broker.ANTHROPIC_API_KEY.cookie",
        "unknown key",
        "endpoints",
    ),
    "a header without a format": (
        {"ANTHROPIC_API_KEY": {"endpoints": ["api.anthropic.com:443"], "header": "x-api-key"}},
        "clawstaff:claws[0].broker.ANTHROPIC_API_KEY.header",
        "not a header with a format",
        "Authorization: Bearer {value}",
    ),
    "a basic part that is not one": (
        {"ANTHROPIC_API_KEY": {"endpoints": ["api.anthropic.com:443"], "basic": "username"}},
        "clawstaff:claws[0].broker.ANTHROPIC_API_KEY.basic",
        "not a part of Basic auth",
        "password",
    ),
    "both forms": (
        {"ANTHROPIC_API_KEY": {"endpoints": ["api.anthropic.com:443"], "header": "x: {value}", "basic": "password"}},
        "clawstaff:claws[0].broker.ANTHROPIC_API_KEY",
        "both header and basic",
        "exactly one presentation form",
    ),
    "not one of the claw's secrets": (
        {"OPENAI_API_KEY": {"endpoints": ["api.anthropic.com:443"], "header": "x-api-key: {value}"}},
        "clawstaff:claws[0].broker.OPENAI_API_KEY",
        "not one of this claw's secrets",
        "ANTHROPIC_API_KEY",
    ),
    "an endpoint listed twice": (
        {"ANTHROPIC_API_KEY": {"endpoints": ["api.anthropic.com:443"] * 2, "header": "x-api-key: {value}"}},
        "clawstaff:claws[0].broker.ANTHROPIC_API_KEY.endpoints[1]",
        "listed twice",
        "one of this claw's egress entries",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKER_MISTAKES))
def test_a_broker_mistake_is_one_paragraph_naming_key_value_and_allowed(case: str) -> None:
    entry, key, reason, allowed = BROKER_MISTAKES[case]
    error = config_error(broker_raw(entry), stack="local")
    assert error.key == key, str(error)
    assert reason in str(error) and allowed in str(error).split("; allowed: ", 1)[1], str(error)


def test_a_secret_bound_twice_to_one_header_and_endpoint_is_refused() -> None:
    raw = broker_raw(
        GOOD | {"SLACK_BOT_TOKEN": {"endpoints": ["api.anthropic.com:443"], "header": "X-API-Key: t-{value}"}}
    )
    raw = edited(
        raw,
        ("claws[0].secrets", ["ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN"]),
        (
            "clawSecrets",
            {"acme-support": {"ANTHROPIC_API_KEY": "sk-ant-TOPSECRET-1", "SLACK_BOT_TOKEN": "xoxb-TOPSECRET-2"}},
        ),
    )
    error = config_error(raw, stack="local")
    assert error.key == "clawstaff:claws[0].broker.SLACK_BOT_TOKEN.endpoints[0]", str(error)
    assert "bound twice: ANTHROPIC_API_KEY" in str(error)


def test_a_broker_entry_needs_a_broker_image() -> None:
    raw = edited(broker_raw(GOOD), ("clawstaff:brokerImage", None))
    del raw["clawstaff:brokerImage"]
    error = config_error(raw, stack="local")
    assert_names(error, "clawstaff:brokerImage", None, "missing", "the credential broker")


def test_a_secret_may_not_take_a_name_the_cages_trust_uses() -> None:
    raw = edited(local_raw(), ("claws[0].secrets", ["SSL_CERT_FILE"]))
    error = config_error(raw, stack="local")
    assert "reserved by the cage runtime" in str(error)


# --- the cage under mocks: what is sealed for whom -----------------------------------------------------


@pytest.fixture(scope="module")
def local_config():
    from components.config import load_stack_file, parse_stack_config
    from tests.conftest import ROOT, fixture_images_record

    with fixture_images_record():
        raw, secret_keys = load_stack_file(ROOT / "Pulumi.local.yaml")
        return parse_stack_config(raw, stack="local", secret_keys=secret_keys)


def test_the_local_stack_seals_the_brokered_value_for_the_broker_only(local_eval, local_config) -> None:
    """The claw's blob opens (cage key) to its env secrets and the placeholders, as it declares; the
    broker's (broker key) to the brokered value; no real brokered value is in the claw's inputs."""
    claw = "acme-support"
    inputs = {r.name: r.inputs for r in local_eval.resources}
    claw_env = dict(e.split("=", 1) for e in inputs[f"{claw}-claw"]["envs"])
    broker_env = dict(e.split("=", 1) for e in inputs[f"{claw}-broker"]["envs"])
    values = local_config.claw_secrets[claw]
    opened = open_credentials(derive_cage_key(local_config.sealing_key, claw), claw, claw_env["CLAWCAGE_SEALED"])
    ph = placeholder(local_config.sealing_key, claw, "ANTHROPIC_API_KEY", values["ANTHROPIC_API_KEY"])
    assert opened == {"SLACK_BOT_TOKEN": values["SLACK_BOT_TOKEN"], "ANTHROPIC_API_KEY": ph}
    assert claw_env[ENV_SECRETS_ENV] == "SLACK_BOT_TOKEN" and claw_env[PLACEHOLDERS_ENV] == "ANTHROPIC_API_KEY"
    held = open_credentials(derive_broker_key(local_config.sealing_key, claw), claw, broker_env["CLAWCAGE_SEALED"])
    assert held == {"ANTHROPIC_API_KEY": values["ANTHROPIC_API_KEY"]}
    assert values["ANTHROPIC_API_KEY"] not in json.dumps(inputs[f"{claw}-claw"])
    assert json.loads(broker_env[BROKER_ENV])["bindings"][0]["placeholder"] == ph
    assert claw_env["HTTPS_PROXY"] == "http://egress-broker:3128"
    # a cage without brokered secrets has no broker and keeps Squid as its proxy
    assert "acme-reports-broker" not in inputs
    assert "http://egress-proxy:3128" in inputs["acme-reports-claw"]["envs"][3]
