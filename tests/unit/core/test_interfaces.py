from __future__ import annotations

from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    ip_address,
)

import pytest

from ironlb.core import interfaces

SERVICE_V4 = IPv4Address("198.18.0.241")
SERVICE_V6 = IPv6Address("2001:db8::f1")


@dataclass(frozen=True)
class Nic:
    name: str
    index: int = 2
    ethernet: bool = True
    up: bool = True
    carrier: bool = True
    master: int | None = None
    noarp: bool = False
    addresses: tuple[IPv4Interface | IPv6Interface, ...] = ()


def lan(name: str, index: int) -> Nic:
    return Nic(
        name, index, addresses=(IPv4Interface("198.18.0.11/24"), IPv6Interface("2001:db8::11/64"))
    )


@pytest.mark.parametrize(
    ("nic", "reason"),
    [
        (Nic("eth0", ethernet=False), "not an Ethernet interface"),
        (Nic("eth0", up=False, carrier=False), "administratively down"),
        (Nic("eth0", carrier=False), "no carrier"),
        (Nic("eth0", master=9), "enslaved to interface index 9"),
        (Nic("eth0", noarp=True), "NOARP is set"),
        (Nic("docker0"), "name matches the exclusion pattern '^docker.*'"),
        (Nic("cbr0"), "name matches the exclusion pattern '^cbr.*'"),
        (Nic("dummy0"), "name matches the exclusion pattern '^dummy.*'"),
        (Nic("virbr0"), "name matches the exclusion pattern '^virbr.*'"),
        (Nic("lxcbr0"), "name matches the exclusion pattern '^lxcbr.*'"),
        (Nic("veth1a2b3c"), "name matches the exclusion pattern '^veth.*'"),
        (Nic("lo"), "name matches the exclusion pattern '^lo$'"),
        (Nic("cali12ab34cd"), "name matches the exclusion pattern '^cali.*'"),
        (Nic("tunl0"), "name matches the exclusion pattern '^tunl.*'"),
        (Nic("flannel.1"), "name matches the exclusion pattern '^flannel.*'"),
        (Nic("kube-ipvs0"), "name matches the exclusion pattern '^kube-ipvs.*'"),
        (Nic("cni0"), "name matches the exclusion pattern '^cni.*'"),
        (Nic("nodelocaldns"), "name matches the exclusion pattern '^nodelocaldns.*'"),
        (Nic("lxc_health"), "name matches the exclusion pattern '^lxc.*'"),
    ],
)
def test_an_unusable_interface_is_rejected_with_its_reason(nic: Nic, reason: str) -> None:
    choice = interfaces.choose(SERVICE_V4, [nic])
    assert choice.chosen == ()
    assert choice.rejected == {nic.name: reason}


@pytest.mark.parametrize(
    "name",
    # Anchored patterns: a name merely containing an excluded word is fine (MetalLB's old
    # unanchored "lo" excluded "workload").
    ["eth0", "workload", "bond0", "br-lan", "enp3s0f1", "eth0.100", "myveth0", "vxlan100"],
)
def test_ordinary_names_are_not_excluded(name: str) -> None:
    assert interfaces.choose(SERVICE_V4, [Nic(name)]).chosen == (Nic(name),)


def test_the_first_failing_rule_is_the_reason() -> None:
    nic = Nic("docker0", up=False, master=3, noarp=True)
    assert interfaces.choose(SERVICE_V4, [nic]).rejected == {
        "docker0": "name matches the exclusion pattern '^docker.*'"
    }
    # What the configuration rules out is reported before what the link state does.
    nic = Nic("eth1", up=False, master=3, noarp=True)
    assert interfaces.choose(SERVICE_V4, [nic]).rejected == {
        "eth1": "enslaved to interface index 3"
    }
    nic = Nic("eth1", up=False, carrier=False)
    assert interfaces.choose(SERVICE_V4, [nic]).rejected == {"eth1": "administratively down"}


def test_the_master_is_named_when_known() -> None:
    bridge = Nic("br0", index=5, noarp=False)
    port = Nic("eth0", index=2, master=5)
    choice = interfaces.choose(SERVICE_V4, [port, bridge])
    assert choice.chosen == (bridge,)
    assert choice.rejected == {"eth0": "enslaved to br0"}


def test_listed_interfaces_restrict_the_choice_and_names_are_exact() -> None:
    nics = [Nic("eth0", 2), Nic("eth1", 3), Nic("eth10", 4)]
    choice = interfaces.choose(SERVICE_V4, nics, listed={"eth1"})
    assert [nic.name for nic in choice.chosen] == ["eth1"]
    assert choice.rejected == {
        "eth0": "not listed in the interfaces of the matching L2Advertisements",
        "eth10": "not listed in the interfaces of the matching L2Advertisements",
    }
    assert choice.missing == ()


def test_listing_does_not_override_the_exclusions_or_the_state() -> None:
    nics = [Nic("veth0", 2), Nic("eth1", 3, carrier=False)]
    choice = interfaces.choose(SERVICE_V4, nics, listed={"veth0", "eth1"})
    assert choice.chosen == ()
    assert choice.rejected == {
        "veth0": "name matches the exclusion pattern '^veth.*'",
        "eth1": "no carrier",
    }


def test_listed_names_the_node_does_not_have_are_reported() -> None:
    choice = interfaces.choose(SERVICE_V4, [Nic("eth0")], listed={"eth0", "ens5", "bond0"})
    assert choice.missing == ("bond0", "ens5")
    assert [nic.name for nic in choice.chosen] == ["eth0"]


@pytest.mark.parametrize("service", [SERVICE_V4, SERVICE_V6])
def test_interfaces_on_the_address_subnet_win_when_none_are_listed(
    service: IPv4Address | IPv6Address,
) -> None:
    storage = Nic(
        "eth1", 3, addresses=(IPv4Interface("192.0.2.5/24"), IPv6Interface("2001:db8:5::5/64"))
    )
    choice = interfaces.choose(service, [storage, lan("eth0", 2)])
    assert [nic.name for nic in choice.chosen] == ["eth0"]
    assert choice.rejected == {
        "eth1": f"no address in a subnet of {service} (its subnet is on eth0)"
    }


def test_every_usable_interface_announces_when_none_is_on_the_subnet() -> None:
    # MetalLB's behaviour: a pool may be a subnet no node has an address in.
    nics = [lan("eth0", 2), Nic("eth1", 3, addresses=(IPv4Interface("192.0.2.5/24"),))]
    choice = interfaces.choose(IPv4Address("203.0.113.7"), nics)
    assert [nic.name for nic in choice.chosen] == ["eth0", "eth1"]
    assert choice.rejected == {}


def test_listed_interfaces_are_taken_as_listed_whatever_their_subnets() -> None:
    nics = [lan("eth0", 2), Nic("eth1", 3, addresses=(IPv4Interface("192.0.2.5/24"),))]
    choice = interfaces.choose(SERVICE_V4, nics, listed={"eth0", "eth1"})
    assert [nic.name for nic in choice.chosen] == ["eth0", "eth1"]


@pytest.mark.parametrize(
    ("own", "service", "on_subnet"),
    [
        ("198.18.0.11/24", "198.18.0.241", True),
        ("198.18.0.11/25", "198.18.0.241", False),
        ("198.18.0.241/32", "198.18.0.241", False),  # a host route is not a subnet
        ("2001:db8::11/64", "2001:db8::f1", True),
        ("2001:db8::f1/128", "2001:db8::f1", False),
        ("fe80::1/64", "2001:db8::f1", False),
        ("198.18.0.11/24", "2001:db8::f1", False),  # families never mix
        ("::/0", "198.18.0.241", False),
    ],
)
def test_subnet_membership(own: str, service: str, on_subnet: bool) -> None:
    address = IPv6Interface(own) if ":" in own else IPv4Interface(own)
    nics = [Nic("eth0", 2, addresses=(address,)), Nic("eth1", 3)]
    choice = interfaces.choose(ip_address(service), nics)
    expected = ["eth0"] if on_subnet else ["eth0", "eth1"]
    assert [nic.name for nic in choice.chosen] == expected


def test_rejections_by_state_are_kept_when_the_subnet_narrows() -> None:
    nics = [lan("eth0", 2), Nic("eth1", 3), Nic("eth2", 4, up=False)]
    choice = interfaces.choose(SERVICE_V4, nics)
    assert [nic.name for nic in choice.chosen] == ["eth0"]
    assert choice.rejected == {
        "eth1": "no address in a subnet of 198.18.0.241 (its subnet is on eth0)",
        "eth2": "administratively down",
    }


def test_custom_exclusions_replace_the_defaults() -> None:
    nics = [Nic("veth0", 2), Nic("storage0", 3)]
    choice = interfaces.choose(SERVICE_V4, nics, excluded=("^storage",))
    assert [nic.name for nic in choice.chosen] == ["veth0"]
    assert choice.rejected == {"storage0": "name matches the exclusion pattern '^storage'"}


def test_no_interfaces_no_choice() -> None:
    choice: interfaces.Choice[Nic] = interfaces.choose(SERVICE_V6, [])
    assert choice == interfaces.Choice((), {}, ())


def test_a_node_whose_subnet_nic_lost_carrier_cannot_announce_that_subnet() -> None:
    # eth0 is on the service's LAN but has no carrier; eth1 is elsewhere and fine. Answering on
    # eth1 would be the wrong NIC: the node announces nothing, and says so.
    eth0 = Nic("eth0", 2, carrier=False, addresses=(IPv4Interface("198.18.0.11/24"),))
    eth1 = Nic("eth1", 3, addresses=(IPv4Interface("192.0.2.11/24"),))
    choice = interfaces.choose(SERVICE_V4, [eth0, eth1])
    assert choice.chosen == ()
    assert choice.rejected == {
        "eth0": "no carrier",
        "eth1": "no address in a subnet of 198.18.0.241 (its subnet is on eth0)",
    }
    blocked = interfaces.blocked_subnets([eth0, eth1])
    assert blocked == (IPv4Network("198.18.0.0/24"),)
    assert not interfaces.blind([eth0, eth1])
    # What peers conclude from the published facts matches the node's own choice.
    assert not interfaces.can_announce(SERVICE_V4, blocked, False)
    assert interfaces.can_announce(IPv4Address("192.0.2.200"), blocked, False)
    assert interfaces.can_announce(IPv4Address("203.0.113.7"), blocked, False)


def test_a_subnet_stays_announceable_while_one_of_its_nics_is_usable() -> None:
    a = Nic("eth0", 2, carrier=False, addresses=(IPv4Interface("198.18.0.11/24"),))
    b = Nic("eth1", 3, addresses=(IPv4Interface("198.18.0.21/24"),))
    assert interfaces.blocked_subnets([a, b]) == ()
    assert interfaces.choose(SERVICE_V4, [a, b]).chosen == (b,)


def test_a_node_with_no_usable_nic_is_blind() -> None:
    nics = [Nic("eth0", 2, up=False), Nic("docker0", 3), Nic("lo", 1)]
    assert interfaces.blind(nics)
    assert not interfaces.can_announce(IPv4Address("203.0.113.7"), (), True)
    assert not interfaces.blind([Nic("eth0", 2)])


def test_host_routes_and_excluded_nics_do_not_block_subnets() -> None:
    nics = [
        Nic("eth0", 2, addresses=(IPv4Interface("198.18.0.11/24"),)),
        Nic("docker0", 3, carrier=False, addresses=(IPv4Interface("192.0.2.1/24"),)),
        Nic("eth1", 4, carrier=False, addresses=(IPv4Interface("198.51.100.9/32"),)),
    ]
    assert interfaces.blocked_subnets(nics) == ()
