"""cpvip peer discovery from control-plane Nodes: the pure part."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from ironlb.core import election, model
from ironlb.core import settings as core_settings
from ironlb.cpvip import discovery, settings
from ironlb.membership import model as member_model

OWN = ipaddress.ip_address("198.51.100.11")


def node(name: str, *addresses: tuple[str, str], control_plane: bool = True) -> model.Node:
    labels = {discovery.CONTROL_PLANE_LABEL: ""} if control_plane else {}
    raw: dict[str, Any] = {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]},
    }
    return model.parse_node(raw)


def test_control_plane_nodes_at_their_internal_ip_in_the_vips_family_without_self() -> None:
    nodes = [
        node("cp-1", ("InternalIP", "198.51.100.11")),  # this node
        node("cp-2", ("ExternalIP", "203.0.113.12"), ("InternalIP", "198.51.100.12")),
        node("cp-3", ("InternalIP", "2001:db8::13"), ("InternalIP", "198.51.100.13")),
        node("worker-1", ("InternalIP", "198.51.100.21"), control_plane=False),
        node("cp-v6-only", ("InternalIP", "2001:db8::14")),
        node("cp-no-address"),
    ]
    found = discovery.peers_from_nodes(nodes, OWN, 7947)
    assert found == {
        "198.51.100.12": member_model.Endpoint(ipaddress.ip_address("198.51.100.12"), 7947),
        "198.51.100.13": member_model.Endpoint(ipaddress.ip_address("198.51.100.13"), 7947),
    }


def test_ipv6_vip_takes_the_ipv6_addresses() -> None:
    nodes = [node("cp-2", ("InternalIP", "198.51.100.12"), ("InternalIP", "2001:db8::12"))]
    found = discovery.peers_from_nodes(nodes, ipaddress.ip_address("2001:db8::11"), 7000)
    assert list(found.values()) == [
        member_model.Endpoint(ipaddress.ip_address("2001:db8::12"), 7000)
    ]


def test_static_peers_stay_and_name_the_port() -> None:
    ip = ipaddress.ip_address("198.51.100.12")
    static = {election.NodeName("198.51.100.12"): member_model.Endpoint(ip, 9000)}
    found = discovery.peers_from_nodes(
        [
            node("cp-2", ("InternalIP", "198.51.100.12")),
            node("cp-3", ("InternalIP", "198.51.100.13")),
        ],
        OWN,
        7947,
    )
    peers = discovery.merged(static, found)
    assert peers["198.51.100.12"].port == 9000
    assert peers["198.51.100.13"].port == 7947
    assert discovery.merged(static, {}) == static  # a Node deleted: --peers still stand


@pytest.fixture
def key(tmp_path: Path) -> str:
    path = tmp_path / "key"
    path.write_text("0123456789abcdef0123456789abcdef\n")
    return str(path)


def test_settings_kubeconfig_and_interval(key: str, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\n")
    s = settings.Settings(address="192.0.2.10", key_file=key, kubeconfig=str(config))
    assert s.kubeconfig == str(config)
    assert s.discovery_interval == 10.0
    for field, values in (
        ("kubeconfig", {"kubeconfig": str(tmp_path / "missing")}),
        ("discovery_interval", {"discovery_interval": 0.5}),
    ):
        with pytest.raises(core_settings.SettingError) as caught:
            settings.Settings(address="192.0.2.10", key_file=key, **values)  # type: ignore[arg-type]
        assert caught.value.field == field
    with pytest.raises(core_settings.SettingError) as caught:
        settings.Settings(
            address="192.0.2.30",
            mode="bgp",
            kubeconfig=str(config),
            bgp_peers=("198.51.100.1",),
            bgp_peer_asn=64512,
            bgp_local_asn=64513,
        )
    assert caught.value.field == "kubeconfig"
    assert "only for --mode arp" in caught.value.problem
