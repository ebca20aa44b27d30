"""The egress allowlist and the Squid config: hostile input refused, rule order that holds."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.egress import (
    ACCESS_LOG_FIELDS,
    BLOCKED_DESTINATIONS,
    access_log_format,
    carve,
    egress_allowlist,
    parse_access_line,
    render_proxy_config,
)


@dataclass(frozen=True)
class Endpoint:  # the shape of components.config.Endpoint
    host: str
    port: int


CONTROL = Endpoint("control.clawstaff.example", 443)


def render(**overrides) -> str:
    args = {
        "claw": "acme-support",
        "org": "acme",
        "allowlist": egress_allowlist([("api.anthropic.com", 443), ("slack.com", 443)], CONTROL),
    }
    return render_proxy_config(**(args | overrides))


def http_access(config: str) -> list[str]:
    return [line.split(None, 1)[1] for line in config.splitlines() if line.startswith("http_access ")]


def acls(config: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^acl (\S+) (.*)$", config, re.M)}


def test_allowlist_adds_control_plane_sorts_and_deduplicates():
    entries = [
        Endpoint("slack.com", 443),
        ("API.Anthropic.com", 443),
        ("api.anthropic.com", 443),
        Endpoint("api.anthropic.com", 8443),
    ]
    assert egress_allowlist(entries, CONTROL) == (
        ("api.anthropic.com", 443),
        ("api.anthropic.com", 8443),
        ("control.clawstaff.example", 443),
        ("slack.com", 443),
    )
    assert egress_allowlist([], ("control.clawstaff.example", 443)) == (("control.clawstaff.example", 443),)


HOSTILE_HOSTS = [
    "",
    "localhost",
    "10.0.0.1",
    "169.254.169.254",
    "2130706433",
    "0x7f000001",
    "[::1]",
    "::1",
    "a.com:443",
    "a.com\nhttp_access allow all",
    "a.com http_access",
    "a.com\tb.com",
    " a.com",
    "a.com.",
    ".a.com",
    "a..com",
    "*.a.com",
    "^a.com$",
    "a.com|b.com",
    "-a.com",
    "a-.com",
    "_srv.a.com",
    "a.com#",
    "a.com;",
    "é.com",
    "a.com\x00",
    "-n",
    "all",
    "a." + "b" * 64 + ".com",
    ".".join(["abcdefgh"] * 32),
    None,
    443,
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_allowlist_refuses_anything_but_a_plain_dns_name(host):
    with pytest.raises(ValueError):
        egress_allowlist([(host, 443)], CONTROL)
    with pytest.raises(ValueError):
        render(allowlist=[(host, 443)])


@pytest.mark.parametrize("port", [0, -1, 65536, "443", 443.0, True, None])
def test_allowlist_refuses_bad_ports(port):
    with pytest.raises(ValueError):
        egress_allowlist([("api.anthropic.com", port)], CONTROL)


@pytest.mark.parametrize(
    "field, value",
    [
        ("claw", "Acme"),
        ("claw", "a b"),
        ("claw", "a\nb"),
        ("claw", ""),
        ("org", "acme org"),
        ("org", "x" * 64),
        ("org", 'a"b'),
        ("listen_port", 0),
        ("allowlist", ()),
        ("bench_allow_cidrs", ["172.18.0.0/16 all"]),
        ("bench_allow_cidrs", ["172.18.0.1/16"]),
        ("client_cidrs", ["not-a-cidr"]),
    ],
)
def test_render_refuses_hostile_parameters(field, value):
    with pytest.raises(ValueError):
        render(**{field: value})


def test_only_connect_to_allowlisted_names_and_ports():
    rules = http_access(render())
    assert rules[0] == "deny !CONNECT why_not_connect"
    assert rules[-1] == "deny all why_wrong_port"
    defined = acls(render())
    allows = [r for r in rules if r.startswith("allow ")]
    pairs = set()
    for rule in allows:
        _, host_acl, port_acl, _ = rule.split()
        host = defined[host_acl].removeprefix("dstdomain -n ")
        pairs.add((host, int(defined[port_acl].removeprefix("port "))))
    assert pairs == {("api.anthropic.com", 443), ("slack.com", 443), ("control.clawstaff.example", 443)}


def test_names_are_refused_before_anything_is_resolved():
    # `dst` ACLs make Squid resolve the name; the name check (`dstdomain -n`: no lookups) comes first.
    config = render()
    defined = acls(config)
    resolving = {name for name, spec in defined.items() if spec.startswith("dst ")}
    rules = http_access(config)
    name_check = rules.index("deny !allowed_names why_not_allowlisted")
    first_resolving = min(i for i, r in enumerate(rules) if set(r.replace("!", "").split()) & resolving)
    assert name_check < first_resolving
    assert all(spec.startswith("dstdomain -n ") for name, spec in defined.items() if name.endswith("_host"))
    assert defined["allowed_names"].startswith("dstdomain -n ")
    assert rules.index("deny ip_literal why_ip_literal") < name_check


def test_private_destinations_are_refused_before_any_allow():
    config = render()
    rules = http_access(config)
    block = rules.index("deny blocked_dst why_blocked_dst")
    assert block < min(i for i, r in enumerate(rules) if r.startswith("allow "))
    blocked = [ipaddress.ip_network(n) for n in acls(config)["blocked_dst"].split()[1:]]
    for address in [
        "169.254.169.254",
        "10.1.2.3",
        "172.20.0.5",
        "192.168.1.1",
        "100.64.0.1",
        "127.0.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
    ]:
        assert any(ipaddress.ip_address(address) in net for net in blocked), address
    assert "bench" not in config


def test_bench_exemption_is_explicit_narrow_and_keeps_the_rest_blocked():
    config = render(bench_allow_cidrs=["172.29.0.0/16"])
    assert acls(config)["bench_allowed_dst"] == "dst 172.29.0.0/16"
    assert "deny blocked_dst !bench_allowed_dst why_blocked_dst" in http_access(config)
    assert "# BENCH ONLY" in config


def test_client_restriction_comes_first():
    config = render(client_cidrs=["172.30.1.0/24"])
    assert http_access(config)[0] == "deny !cage_clients why_not_client"


def test_every_request_is_logged_to_stdout_with_claw_and_org():
    config = render()
    logformat = next(l for l in config.splitlines() if l.startswith("logformat clawcage "))
    assert '"claw":"acme-support"' in logformat and '"org":"acme"' in logformat and "%#{reason}note" in logformat
    assert "access_log stdio:/dev/stdout logformat=clawcage" in config.splitlines()
    # Every http_access rule carries a reason annotation, so every log line says why.
    assert all(rule.split()[-1].startswith("why_") for rule in http_access(config))


# Every line of a rendered config is one of these shapes; nothing an input says can add another.
LINE = re.compile(
    r"(#.*|"
    r"http_port \d+|pid_filename none|cache deny all|cache_mem 0 MB|coredump_dir /tmp|netdb_filename none|"
    r"pinger_enable off|icp_port 0|htcp_port 0|max_filedescriptors \d+|shutdown_lifetime 1 seconds|"
    r"client_ip_max_connections \d+|"
    r"client_persistent_connections off|"
    r"forwarded_for delete|httpd_suppress_version_string on|cache_log stdio:/dev/stderr|"
    r'logformat clawcage \{"log":"clawcage-egress","claw":"[a-z0-9-]+","org":"[a-z0-9-]+",.*\}|'
    r"access_log stdio:/dev/stdout logformat=clawcage|logfile_rotate 0|"
    r"acl [A-Za-z0-9_]+ (method CONNECT|dstdom_regex -n .*|annotate_transaction reason=[a-z-]+|"
    r"dstdomain -n [a-z0-9. -]+|port \d+|dst [0-9a-f:./ ]+|src [0-9a-f:./ ]+)|"
    r"http_access (allow|deny) [!A-Za-z0-9_ ]+|)\Z"
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=40), st.integers(-5, 70000)), max_size=4))
def test_any_input_either_raises_or_renders_only_known_lines(entries):
    try:
        config = render(allowlist=egress_allowlist(entries, CONTROL))
    except ValueError:
        return
    for line in config.splitlines():
        assert LINE.match(line), line


def test_default_config_matches_the_grammar():
    for line in render(client_cidrs=["172.30.1.0/24"], bench_allow_cidrs=["172.29.0.0/16"]).splitlines():
        assert LINE.match(line), line


def test_blocked_destinations_are_valid_networks():
    assert all(ipaddress.ip_network(n, strict=True) for n in BLOCKED_DESTINATIONS)


# --- attack-findings: the exact bench exemption (finding 13) and the JSON access log (finding 12) ------


def _in(address: str, cidrs: list[str]) -> bool:
    return any(ipaddress.ip_address(address) in ipaddress.ip_network(c) for c in cidrs)


def test_the_bench_exemption_cuts_exactly_the_exempt_address_out_of_the_block():
    config = render(bench_allow_cidrs=["198.51.100.10/32"])
    unexempted = acls(config)["blocked_dst_unexempted"].split()[1:]
    assert not _in("198.51.100.10", unexempted) and not _in("::ffff:198.51.100.10", unexempted)
    for neighbour in ("198.51.100.9", "198.51.100.11", "10.0.0.1", "169.254.169.254", "127.0.0.1", "::1"):
        assert _in(neighbour, unexempted), neighbour
    # The carved rule comes first: an answer holding the exempt address and a private one is refused.
    rules = http_access(config)
    assert rules.index("deny blocked_dst_unexempted why_blocked_dst") < rules.index(
        "deny blocked_dst !bench_allowed_dst why_blocked_dst"
    )


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4), st.integers(min_value=8, max_value=32), st.ip_addresses(v=4))
def test_carve_removes_the_hole_and_nothing_else(hole_address, prefix, probe):
    hole = ipaddress.ip_network(f"{hole_address}/{prefix}", strict=False)
    carved = carve(BLOCKED_DESTINATIONS, [str(hole)])
    blocked = any(probe in ipaddress.ip_network(b) for b in BLOCKED_DESTINATIONS)
    assert _in(str(probe), carved) == (blocked and probe not in hole)


@pytest.mark.parametrize(
    "request_",
    ['a"b\\c.example:443', "x%22y:443", "caf%C3%A9.example:443", "h:443 status=200 reason=allowlisted"],
)
def test_every_access_log_value_survives_the_round_trip(request_):
    # What Squid prints for %#ru: the URL-encoded request; the parser gives back what the client sent.
    from urllib.parse import quote

    line = access_log_format("acme-support", "acme")
    codes = dict(ACCESS_LOG_FIELDS)
    for field, value in (("method", "CONNECT"), ("request", quote(request_, safe=":")), ("reason", "not-allowlisted")):
        line = line.replace(f'"{codes[field]}"', f'"{value}"')
    entry = parse_access_line(line)
    assert entry["request"] == request_ and entry["claw"] == "acme-support" and entry["org"] == "acme"
    assert entry["reason"] == "not-allowlisted"


def test_an_unreadable_access_line_is_an_error_not_a_skip():
    assert parse_access_line("2026/12/01 squid cache.log message") is None
    with pytest.raises(ValueError, match="unreadable access log line"):
        parse_access_line('{"log":"clawcage-egress","request":"a\\"b"')


# --- attack-findings finding 4: one request per connection, bounded log lines ----------------------------


def test_one_request_per_client_connection_and_client_fields_cut_in_the_log():
    from components.egress import LOGGED_WIDTH

    config = render()
    assert "client_persistent_connections off" in config.splitlines()
    logformat = next(l for l in config.splitlines() if l.startswith("logformat clawcage "))
    assert f'"method":"%#.{LOGGED_WIDTH["method"]}rm"' in logformat
    assert f'"request":"%#.{LOGGED_WIDTH["request"]}ru"' in logformat


def test_the_longest_access_line_stays_under_its_bound():
    from components.egress import ACCESS_LINE_MAX, LOGGED_WIDTH

    line = access_log_format("a" * 63, "b" * 63)
    widest = {"%>a": "ffff:" * 7 + "ffff", "%>Hs": "999", "%Ss": "TCP_MISS_ABORTED", "%#{reason}note": "x" * 32,
              "%<a:%<p": "f" * 39 + ":65535", "%st": "9" * 20, "%tr": "9" * 20}  # fmt: skip
    for code, value in widest.items():
        line = line.replace(f'"{code}"', f'"{value}"')
    for field, width in LOGGED_WIDTH.items():
        code = next(c for f, c in ACCESS_LOG_FIELDS if f == field)
        line = line.replace(f'"{code}"', '"' + "%22" * (width // 3) + '"')
    assert len(line.encode()) <= ACCESS_LINE_MAX, len(line)


@pytest.mark.parametrize(
    "sent, shown",
    [("a" * 600, "a" * 512), ("é" * 200, "é" * 85), ('"' * 200, '"' * 170), ("x" + "%" * 300, "x" + "%" * 170)],
)
def test_a_value_squid_cut_reads_back_as_its_prefix_marked_truncated(sent, shown):
    from urllib.parse import quote

    from components.egress import LOGGED_WIDTH

    width = LOGGED_WIDTH["request"]
    printed = quote(sent, safe="")[:width]  # what Squid writes: encoded, then cut at the width
    line = access_log_format("acme-support", "acme").replace('"%#.512ru"', f'"{printed}"')
    entry = parse_access_line(line)
    assert entry["request"] == shown and sent.startswith(entry["request"])
    assert entry["truncated"] == "request"


def test_a_value_within_its_width_is_not_marked():
    line = access_log_format("acme-support", "acme").replace('"%#.512ru"', '"x.example:443"')
    assert "truncated" not in parse_access_line(line)
