"""The ARP/NDP responder on a real LAN: a node answers for addresses no interface has, Linux
neighbours accept its answers and announcements, and strangers claiming its addresses are seen.

Linux updates an existing neighbour entry from a gratuitous ARP or an unsolicited NA with the
override flag, with default sysctls: that is what failover needs. It creates a new entry from
one only when told to: `net.ipv4.conf.all.arp_accept=1` for ARP; for NDP, RFC 9131 lets only
routers do it, with `net.ipv6.conf.<dev>.forwarding=1` and `accept_untracked_na=1`. The client
gets those settings (and so plays the LAN's router for IPv6) in the test that needs them.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

import prometheus_client
import pytest

from ironlb.l2 import ethernet, frames, ndp, responder
from ironlb.lab import netns, topology
from support import poll

pytestmark = pytest.mark.e2e

Address = IPv4Address | IPv6Address


@dataclass
class Lan:
    node: topology.Host
    client: topology.Host
    stranger: topology.Host
    responder: responder.Responder
    conflicts: list[tuple[Address, ethernet.MacAddress]] = field(default_factory=list)


@pytest.fixture
async def lan(lab: topology.Lab) -> AsyncIterator[Lan]:
    node, client, stranger = lab.add_node(1), lab.add_client(), lab.add_stranger()
    conflicts: list[tuple[Address, ethernet.MacAddress]] = []
    with netns.entered(node.name):
        running = responder.Responder(
            node.dev,
            socket.if_nametoindex(node.dev),
            ethernet.MacAddress.parse(node.mac),
            on_conflict=lambda address, mac: conflicts.append((address, mac)),
        )
        await running.__aenter__()
    try:
        yield Lan(node, client, stranger, running, conflicts)
    finally:
        await running.__aexit__(None, None, None)


# --- probes run from the other hosts, off the event loop the responder runs on -------------------


async def arping(host: topology.Host, address: Address) -> str | None:
    """The MAC that answers an ARP request for `address` (500 ms)."""
    return await asyncio.to_thread(host.ns.arping, str(address), host.dev, timeout=0.5)


async def nobody_answers(host: topology.Host, address: Address) -> bool:
    """No MAC at all answers ARP for `address` over a whole second (not only the first)."""
    found = await asyncio.to_thread(
        host.ns.arping_all, str(address), host.dev, count=2, timeout=1.0
    )
    return found == set()


async def ndisc(host: topology.Host, address: Address) -> str | None:
    """The MAC that answers a Neighbor Solicitation for `address` (one try, 500 ms)."""
    argv = host.ns.argv(["ndisc6", "-1", "-q", "-r", "1", "-w", "500", str(address), host.dev])
    proc = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=5, check=False
    )
    answer = proc.stdout.strip().lower()
    return answer if proc.returncode == 0 and answer else None


async def resolve_by_kernel(host: topology.Host, address: Address) -> str | None:
    """Make `host`'s kernel resolve `address` (a ping nobody answers), then read its entry."""
    await asyncio.to_thread(host.ns.ping, str(address), timeout=1)
    return host.ns.neighbours(host.dev).get(str(address), (None, ""))[0]


def send_raw(host: topology.Host, *raw_frames: bytes) -> None:
    with netns.entered(host.name), socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((host.dev, 0))
        for frame in raw_frames:
            sock.send(frame)


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def multicast_memberships(host: topology.Host) -> str:
    return host.ns.ip("maddr", "show", "dev", host.dev)


# --- tests --------------------------------------------------------------------------------------


async def test_arp_is_answered_for_an_announced_address_until_it_is_withdrawn(lan: Lan) -> None:
    address = IPv4Address("198.18.0.241")
    assert str(address) not in lan.node.ns.ip("addr", "show")  # no interface has it
    received = sample("metallb_layer2_requests_received", ip=str(address))
    sent = sample("metallb_layer2_responses_sent", ip=str(address))

    assert await nobody_answers(lan.client, address)
    lan.responder.announce(address)
    assert await arping(lan.client, address) == lan.node.mac
    # The client's own kernel takes the reply too.
    assert await resolve_by_kernel(lan.client, address) == lan.node.mac
    assert sample("metallb_layer2_requests_received", ip=str(address)) >= received + 2
    assert sample("metallb_layer2_responses_sent", ip=str(address)) >= sent + 2

    lan.responder.withdraw(address)
    assert await nobody_answers(lan.client, address)


async def test_neighbor_solicitations_are_answered_and_the_group_is_joined(lan: Lan) -> None:
    address = IPv6Address("2001:db8::f1")
    group = ndp.solicited_node_multicast(address)
    group_mac = str(ndp.multicast_mac(group))

    lan.responder.announce(address)
    memberships = multicast_memberships(lan.node)
    assert group_mac in memberships  # link layer
    assert str(group) in memberships  # IPv6 (MLD)
    assert await ndisc(lan.client, address) == lan.node.mac
    assert await resolve_by_kernel(lan.client, address) == lan.node.mac

    lan.responder.withdraw(address)
    memberships = multicast_memberships(lan.node)
    assert group_mac not in memberships
    assert str(group) not in memberships
    assert await ndisc(lan.client, address) is None


async def test_a_group_shared_by_two_addresses_stays_joined_while_one_needs_it(lan: Lan) -> None:
    first, second = IPv6Address("2001:db8::f1"), IPv6Address("2001:db8:1::f1")
    group_mac = str(ndp.multicast_mac(ndp.solicited_node_multicast(first)))
    lan.responder.announce(first)
    lan.responder.announce(second)
    lan.responder.withdraw(first)
    assert group_mac in multicast_memberships(lan.node)
    lan.responder.withdraw(second)
    assert group_mac not in multicast_memberships(lan.node)


async def test_gratuitous_announcements_update_and_create_neighbour_entries(lan: Lan) -> None:
    client, old_mac, new_mac = lan.client, lan.stranger.mac, lan.node.mac
    v4, v6 = IPv4Address("198.18.0.242"), IPv6Address("2001:db8::f2")
    sent_v4 = sample("metallb_layer2_gratuitous_sent", ip=str(v4))
    sent_v6 = sample("metallb_layer2_gratuitous_sent", ip=str(v6))

    # Failover: the client has the previous owner's MAC, and takes the new one with no sysctl.
    for address in (v4, v6):
        client.ns.ip(
            "neigh",
            "replace",
            str(address),
            "lladdr",
            old_mac,
            "dev",
            client.dev,
            "nud",
            "reachable",
        )
        lan.responder.announce(address)
        lan.responder.send_gratuitous(address)
    await poll.eventually(
        lambda: all(client.ns.neighbours(client.dev)[str(a)][0] == new_mac for a in (v4, v6))
    )
    assert sample("metallb_layer2_gratuitous_sent", ip=str(v4)) == sent_v4 + 2  # request, reply
    assert sample("metallb_layer2_gratuitous_sent", ip=str(v6)) == sent_v6 + 1

    # No entry yet: Linux creates one only when told to (see the module docstring).
    client.ns.sysctl("net.ipv4.conf.all.arp_accept", "1")
    client.ns.sysctl(f"net.ipv6.conf.{client.dev}.forwarding", "1")
    client.ns.sysctl(f"net.ipv6.conf.{client.dev}.accept_untracked_na", "1")
    fresh = (IPv4Address("198.18.0.243"), IPv6Address("2001:db8::f3"))
    for address in fresh:
        lan.responder.announce(address)
        lan.responder.send_gratuitous(address)
    await poll.eventually(
        lambda: all(
            client.ns.neighbours(client.dev).get(str(a), (None, ""))[0] == new_mac for a in fresh
        )
    )

    with pytest.raises(ValueError, match="not announced"):
        lan.responder.send_gratuitous(IPv4Address("198.18.0.250"))


async def test_probing_finds_a_host_that_has_the_address(lan: Lan) -> None:
    stranger = lan.stranger
    stranger.ns.ip("addr", "add", "198.18.0.244/24", "dev", stranger.dev)
    stranger.ns.ip("addr", "add", "2001:db8::f4/64", "dev", stranger.dev, "nodad")
    found = await asyncio.gather(
        lan.responder.probe(IPv4Address("198.18.0.244"), duration=1.0),
        lan.responder.probe(IPv6Address("2001:db8::f4"), duration=1.0),
        lan.responder.probe(IPv4Address("198.18.0.245"), duration=0.3, probes=2),
        lan.responder.probe(IPv6Address("2001:db8::f5"), duration=0.3, probes=2),
    )
    stranger_mac = ethernet.MacAddress.parse(stranger.mac)
    assert list(found) == [stranger_mac, stranger_mac, None, None]
    assert lan.conflicts == []  # probing is not announcing


async def test_another_host_claiming_an_announced_address_is_a_conflict(lan: Lan) -> None:
    stranger, stranger_mac = lan.stranger, ethernet.MacAddress.parse(lan.stranger.mac)
    v4, v6, not_ours = (
        IPv4Address("198.18.0.246"),
        IPv6Address("2001:db8::f6"),
        IPv4Address("198.18.0.247"),
    )
    conflicts = sample("ironlb_layer2_conflicts_total")
    lan.responder.announce(v4)
    lan.responder.announce(v6)
    lan.responder.send_gratuitous(v4)  # our own announcements are no conflict

    for address, reply in ((v4, False), (v4, True), (not_ours, False)):
        argv = ["arping", "-q", "-U", "-c", "1", "-w", "0.2", "-i", stranger.dev]
        argv += ["-P"] if reply else []
        argv += ["-S", str(address), str(address)]
        await asyncio.to_thread(stranger.ns.run, *argv, check=False)
    send_raw(stranger, frames.unsolicited_neighbor_advertisement(stranger_mac, v6))

    await poll.eventually(lambda: len(lan.conflicts) >= 3)
    assert lan.conflicts == [(v4, stranger_mac), (v4, stranger_mac), (v6, stranger_mac)]
    assert sample("ironlb_layer2_conflicts_total") == conflicts + 3


async def test_malformed_frames_are_counted_dropped_and_answering_goes_on(lan: Lan) -> None:
    client_mac = ethernet.MacAddress.parse(lan.client.mac)
    request = frames.arp_request(client_mac, IPv4Address("198.18.0.100"), IPv4Address("198.18.0.1"))
    solicitation = frames.duplicate_address_probe(client_mac, IPv6Address("2001:db8::f7"))
    ipv6 = ethernet.HEADER_SIZE
    checksum = ipv6 + ndp.HEADER_SIZE + 2
    malformed = {
        # (The lab's bridge does not forward frames shorter than 24 bytes.)
        "truncated": request[:30],
        "arp_hardware": request[:14] + b"\x00\x06" + request[16:],
        "arp_operation": request[:20] + b"\x00\x07" + request[22:],
        "checksum": solicitation[:checksum] + b"\xde\xad" + solicitation[checksum + 2 :],
        # The hop limit is outside the checksum: only the RFC 4861 rule catches this one.
        "hop_limit": solicitation[: ipv6 + 7] + b"\x40" + solicitation[ipv6 + 8 :],
    }
    before = {
        reason: sample("ironlb_layer2_malformed_frames_total", reason=reason)
        for reason in malformed
    }
    send_raw(lan.client, *malformed.values())
    await poll.eventually(
        lambda: all(
            sample("ironlb_layer2_malformed_frames_total", reason=reason) == before[reason] + 1
            for reason in malformed
        )
    )

    address = IPv4Address("198.18.0.248")
    lan.responder.announce(address)
    assert await arping(lan.client, address) == lan.node.mac
