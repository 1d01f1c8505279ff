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


def test_mode_bgp_not_yet_and_unknown(key: str) -> None:
    assert "not implemented yet" in problem(key, mode="bgp")[1]
    assert problem(key, mode="vrrp")[0] == "mode"


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
