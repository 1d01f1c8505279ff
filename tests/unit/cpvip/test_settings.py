"""cpvip settings: one clear problem per bad value, and the start-up resolution."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ironlb.core import settings as core_settings
from ironlb.cpvip import settings


@pytest.fixture
def key(tmp_path: Path) -> str:
    path = tmp_path / "key"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return str(path)


def make(key: str, **values: object) -> settings.Settings:
    return settings.Settings(**{"address": "192.0.2.10", "key_file": key, **values})  # type: ignore[arg-type]


def problem(key: str, **values: object) -> tuple[str, str]:
    with pytest.raises(core_settings.SettingError) as caught:
        make(key, **values)
    return caught.value.field, caught.value.problem


def test_defaults(key: str) -> None:
    s = make(key)
    assert s.vip == ipaddress.ip_address("192.0.2.10")
    assert s.health_url == "https://127.0.0.1:6443/readyz"
    assert s.mode == "arp"
    assert s.membership_port == 7947


def test_cidr_is_refused_naming_the_address_form(key: str) -> None:
    field, text = problem(key, address="192.0.2.10/24")
    assert field == "address"
    assert "CIDR" in text
    assert "'192.0.2.10'" in text


def test_hostname_is_refused_naming_the_address_form(key: str) -> None:
    field, text = problem(key, address="api.example.com")
    assert field == "address"
    assert "hostname" in text
    assert "IP address" in text


def test_garbage_address(key: str) -> None:
    assert problem(key, address="300.1.1.1")[0] == "address"
    assert problem(key, address="")[0] == "address"


def test_address_and_key_are_required(key: str) -> None:
    with pytest.raises(core_settings.SettingError) as caught:
        settings.Settings(key_file=key)
    assert caught.value.field == "address"
    with pytest.raises(core_settings.SettingError) as caught:
        settings.Settings(address="192.0.2.10")
    assert caught.value.field == "key_file"
    assert problem(key, key_file="/nonexistent/key")[0] == "key_file"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.51.100.3", ("198.51.100.3", None)),
        ("198.51.100.3:7000", ("198.51.100.3", 7000)),
        ("2001:db8::3", ("2001:db8::3", None)),
        ("[2001:db8::3]:7000", ("2001:db8::3", 7000)),
    ],
)
def test_peer_forms(text: str, expected: tuple[str, int | None]) -> None:
    ip, port = settings.parse_peer(text)
    assert (str(ip), port) == expected


@pytest.mark.parametrize(
    "bad", ["node-2", "198.51.100.3:0", "198.51.100.3:x", "[2001:db8::3", "1.2.3"]
)
def test_bad_peers(key: str, bad: str) -> None:
    assert problem(key, peers=(bad,))[0] == "peers"


def test_peer_endpoints_default_port(key: str) -> None:
    s = make(key, peers=("198.51.100.3", "198.51.100.4:9000"), membership_port=7000)
    assert [(str(ip), port) for ip, port in s.peer_endpoints()] == [
        ("198.51.100.3", 7000),
        ("198.51.100.4", 9000),
    ]


def test_unknown_mode(key: str) -> None:
    assert problem(key, mode="vrrp")[0] == "mode"


BGP = {
    "address": "192.0.2.30",
    "mode": "bgp",
    "bgp_peers": ("198.51.100.1", "198.51.100.2"),
    "bgp_peer_asn": 64500,
    "bgp_local_asn": 64520,
}


def bgp_problem(**values: object) -> tuple[str, str]:
    with pytest.raises(core_settings.SettingError) as caught:
        settings.Settings(**{**BGP, **values})  # type: ignore[arg-type]
    return caught.value.field, caught.value.problem


def test_bgp_mode_needs_no_key_but_peers_and_asns() -> None:
    s = settings.Settings(**BGP)  # type: ignore[arg-type]
    assert (s.bgp_peer_port, s.bgp_hold_time, s.bgp_bfd) == (179, 9, False)
    for name in ("bgp_peers", "bgp_peer_asn", "bgp_local_asn"):
        field, text = bgp_problem(**{name: () if name == "bgp_peers" else None})
        assert (field, "required with --mode bgp" in text) == (name, True)


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({"bgp_peers": ("router-1",)}, "bgp_peers", "not an IP address"),
        ({"bgp_peers": ("2001:db8::1",)}, "bgp_peers", "not of the VIP's family (IPv4)"),
        ({"bgp_peer_asn": 0}, "bgp_peer_asn", "not an AS number"),
        ({"bgp_local_asn": 2**32}, "bgp_local_asn", "not an AS number"),
        ({"bgp_hold_time": 2}, "bgp_hold_time", "0 or 3-65535"),
        ({"bgp_router_id": "2001:db8::1"}, "bgp_router_id", "not an IPv4 address"),
        ({"bgp_source_address": "2001:db8::1"}, "bgp_source_address", "VIP's family"),
        ({"bgp_password_file": "/nonexistent"}, "bgp_password_file", "no such file"),
        ({"bgp_bfd_interval": 5}, "bgp_bfd_interval", "from 10 to 60000"),
        ({"bgp_bfd_multiplier": 1}, "bgp_bfd_multiplier", "from 2 to 255"),
        ({"peers": ("198.51.100.3",)}, "peers", "only for --mode arp"),
        ({"interface": "eth0"}, "interface", "only for --mode arp"),
        ({"gratuitous_interval": 2.0}, "gratuitous_interval", "only for --mode arp"),
    ],
)
def test_bad_bgp_settings(values: dict[str, object], field: str, text: str) -> None:
    got = bgp_problem(**values)
    assert got[0] == field
    assert text in got[1]


def test_bgp_settings_are_refused_in_arp_mode(key: str) -> None:
    assert problem(key, bgp_peers=("198.51.100.1",)) == (
        "bgp_peers",
        "only for --mode bgp (this is --mode arp)",
    )
    assert problem(key, bgp_bfd=True)[0] == "bgp_bfd"


BGP_IFACES = [
    ("lo", [ipaddress.ip_interface("127.0.0.1/8")]),
    ("eth0", [ipaddress.ip_interface("198.18.5.2/24")]),
    ("eth1", [ipaddress.ip_interface("198.51.100.7/24"), ipaddress.ip_interface("2001:db8::7/64")]),
]


def test_resolve_bgp_router_id_faces_a_router() -> None:
    s = settings.Settings(**BGP)  # type: ignore[arg-type]
    r = settings.resolve_bgp(s, BGP_IFACES)
    assert (str(r.router_id), r.prefix_length) == ("198.51.100.7", 32)
    alone = settings.Settings(**{**BGP, "bgp_peers": ("203.0.113.1",)})  # type: ignore[arg-type]
    assert str(settings.resolve_bgp(alone, BGP_IFACES).router_id) == "198.18.5.2"
    given = settings.Settings(**{**BGP, "bgp_router_id": "192.0.2.99"})  # type: ignore[arg-type]
    assert str(settings.resolve_bgp(given, BGP_IFACES).router_id) == "192.0.2.99"
    v6 = settings.Settings(
        **{**BGP, "address": "2001:db8:200::30", "bgp_peers": ("2001:db8::1",)}  # type: ignore[arg-type]
    )
    assert settings.resolve_bgp(v6, BGP_IFACES).prefix_length == 128
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve_bgp(v6, [("lo", []), ("eth1", [ipaddress.ip_interface("2001:db8::7/64")])])
    assert caught.value.field == "bgp_router_id"


def test_resolve_bgp_refuses_a_vip_in_a_node_subnet() -> None:
    s = settings.Settings(**{**BGP, "address": "198.51.100.30"})  # type: ignore[arg-type]
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve_bgp(s, BGP_IFACES)
    assert caught.value.field == "address"
    assert "outside the nodes' subnets" in caught.value.problem


def test_health_url_and_timings(key: str) -> None:
    assert problem(key, health_url="127.0.0.1:6443/readyz")[0] == "health_url"
    assert problem(key, health_interval=0.0)[0] == "health_interval"
    assert problem(key, health_fall=0)[0] == "health_fall"
    assert problem(key, membership_port=0)[0] == "membership_port"


IFACES = [
    ("lo", [ipaddress.ip_interface("127.0.0.1/8")]),
    ("eth0", [ipaddress.ip_interface("192.0.2.2/24"), ipaddress.ip_interface("2001:db8::2/64")]),
    ("eth1", [ipaddress.ip_interface("198.51.100.2/24")]),
]


def test_resolve_default_interface(key: str) -> None:
    r = settings.resolve(make(key), IFACES)
    assert (r.interface, r.prefix_length, str(r.bind)) == ("eth0", 24, "192.0.2.2")
    r6 = settings.resolve(make(key, address="2001:db8::10"), IFACES)
    assert (r6.interface, r6.prefix_length, str(r6.bind)) == ("eth0", 64, "2001:db8::2")


def test_resolve_refuses_an_address_in_no_subnet_listing_interfaces(key: str) -> None:
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve(make(key, address="203.0.113.10"), IFACES)
    assert caught.value.field == "address"
    assert "must be in a subnet" in caught.value.problem
    assert "eth0 (192.0.2.0/24 2001:db8::/64)" in caught.value.problem
    assert "eth1 (198.51.100.0/24)" in caught.value.problem


def test_resolve_explicit_interface(key: str) -> None:
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve(make(key, interface="eth1"), IFACES)
    assert caught.value.field == "interface"
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve(make(key, interface="eth9"), IFACES)
    assert "no interface 'eth9'" in caught.value.problem
    r = settings.resolve(make(key, interface="eth0", bind_address="198.51.100.2"), IFACES)
    assert (r.interface, str(r.bind)) == ("eth0", "198.51.100.2")


def test_resolve_refuses_own_address_or_vip_as_peer(key: str) -> None:
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve(make(key, peers=("192.0.2.2",)), IFACES)
    assert caught.value.field == "peers"
    with pytest.raises(settings.ResolveError) as caught:
        settings.resolve(make(key, peers=("192.0.2.10",)), IFACES)
    assert "VIP" in caught.value.problem
