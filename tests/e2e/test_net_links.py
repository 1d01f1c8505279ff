"""net.links against a real kernel: a lab node's links, their changes, and route lookups."""

from __future__ import annotations

import asyncio
import errno
import subprocess
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

import pytest

from ironlb.lab import netns, topology
from ironlb.net import links, neighbours

pytestmark = pytest.mark.e2e


@pytest.fixture
def node(lab: topology.Lab) -> topology.Host:
    return lab.add_node(1)


@pytest.fixture
async def monitor(node: topology.Host) -> AsyncIterator[links.Monitor]:
    with netns.entered(node.name):
        monitor = links.Monitor()
        await monitor.__aenter__()
    try:
        yield monitor
    finally:
        await monitor.__aexit__(None, None, None)


async def next_event(
    monitor: links.Monitor, change: links.Change, name: str, *, within: float = 2.0
) -> links.LinkEvent:
    async with asyncio.timeout(within):
        async for event in monitor:
            if event.change is change and event.link.name == name:
                return event
    raise AssertionError("the monitor stopped")


async def test_links_shows_the_lan_interface_with_its_mac_and_addresses(
    node: topology.Host,
) -> None:
    with netns.entered(node.name):
        found = {link.name: link for link in await links.links()}
    assert set(found) == {"lo", "eth0"}
    eth0 = found["eth0"]
    assert eth0.mac == node.mac
    assert eth0.kind == "veth"
    assert eth0.ethernet
    assert (eth0.up, eth0.carrier, eth0.noarp, eth0.master) == (True, True, False, None)
    assert IPv4Interface("198.18.0.11/24") in eth0.addresses
    assert IPv6Interface("2001:db8::11/64") in eth0.addresses
    assert any(a.version == 6 and a.ip.is_link_local for a in eth0.addresses)
    assert not found["lo"].ethernet
    assert IPv4Interface("127.0.0.1/8") in found["lo"].addresses


async def test_losing_carrier_and_going_down_are_reported(
    lab: topology.Lab, node: topology.Host, monitor: links.Monitor
) -> None:
    assert monitor.links[eth0_index(monitor)].carrier
    # The other end of the node's veth is its switch port: unplugging the cable.
    lab.switch.ip("link", "set", "n1", "down")
    event = await next_event(monitor, links.Change.CARRIER_DOWN, "eth0")
    assert event.link.up
    assert not event.link.carrier
    assert not monitor.links[event.link.index].carrier
    lab.switch.ip("link", "set", "n1", "up")
    await next_event(monitor, links.Change.CARRIER_UP, "eth0")

    node.ns.ip("link", "set", "eth0", "down")
    event = await next_event(monitor, links.Change.ADMIN_DOWN, "eth0")
    assert not event.link.up
    node.ns.ip("link", "set", "eth0", "up")
    event = await next_event(monitor, links.Change.ADMIN_UP, "eth0")
    assert event.link.up


async def test_addresses_and_links_coming_and_going_are_reported(
    node: topology.Host, monitor: links.Monitor
) -> None:
    node.ns.ip("addr", "add", "198.18.0.99/24", "dev", "eth0")
    event = await next_event(monitor, links.Change.ADDRESS_ADDED, "eth0")
    assert event.address == IPv4Interface("198.18.0.99/24")
    assert event.address in monitor.links[event.link.index].addresses
    node.ns.ip("addr", "del", "198.18.0.99/24", "dev", "eth0")
    event = await next_event(monitor, links.Change.ADDRESS_REMOVED, "eth0")
    assert event.address == IPv4Interface("198.18.0.99/24")
    assert event.address not in monitor.links[event.link.index].addresses

    node.ns.ip("link", "add", "br9", "type", "bridge")
    event = await next_event(monitor, links.Change.LINK_ADDED, "br9")
    assert event.link.kind == "bridge"
    node.ns.ip("link", "set", "br9", "address", "02:00:00:00:00:99")
    event = await next_event(monitor, links.Change.LINK_CHANGED, "br9")
    assert event.link.mac == "02:00:00:00:00:99"
    node.ns.ip("link", "del", "br9")
    event = await next_event(monitor, links.Change.LINK_REMOVED, "br9")
    assert event.link.index not in monitor.links


async def test_enslaving_is_a_change_and_leaving_a_bridge_is_no_removal(
    node: topology.Host, monitor: links.Monitor
) -> None:
    node.ns.ip("link", "add", "br9", "type", "bridge")
    bridge = await next_event(monitor, links.Change.LINK_ADDED, "br9")
    node.ns.ip("link", "add", "port9", "type", "veth", "peer", "name", "peer9")
    await next_event(monitor, links.Change.LINK_ADDED, "port9")
    node.ns.ip("link", "set", "port9", "master", "br9")
    event = await next_event(monitor, links.Change.LINK_CHANGED, "port9")
    assert event.link.master == bridge.link.index
    # Leaving the bridge also sends an RTM_DELLINK, for the bridge port (family AF_BRIDGE).
    node.ns.ip("link", "set", "port9", "nomaster")
    event = await next_event(monitor, links.Change.LINK_CHANGED, "port9")
    assert event.link.master is None
    node.ns.ip("link", "del", "port9")
    async with asyncio.timeout(2):
        async for event in monitor:
            if event.link.name == "port9":
                assert event.change is links.Change.LINK_REMOVED
                break


async def test_lost_notifications_are_recovered_by_listing_again(node: topology.Host) -> None:
    added = {IPv4Interface(f"198.18.2.{i}/32") for i in range(1, 201)}
    with netns.entered(node.name):
        # The smallest buffer the kernel allows: a burst of notifications cannot fit.
        monitor = links.Monitor(receive_buffer=1)
        await monitor.__aenter__()
    try:
        # Blocking on purpose: nothing reads the socket while `ip` adds the addresses.
        commands = "".join(f"addr add {address} dev eth0\n" for address in added)
        subprocess.run(  # noqa: ASYNC221
            ["ip", "-n", node.name, "-batch", "-"],
            input=commands,
            text=True,
            check=True,
            timeout=30,
        )
        reported: list[links.Address | None] = []
        async with asyncio.timeout(5):
            while set(reported) != added:
                event = await anext(monitor)
                assert event.change is links.Change.ADDRESS_ADDED
                reported.append(event.address)
        assert monitor.resyncs >= 1
        assert len(reported) == len(added)  # each once: before the loss, or in the difference
        assert added <= set(monitor.links[eth0_index(monitor)].addresses)
    finally:
        await monitor.__aexit__(None, None, None)


async def test_route_source_is_the_interface_and_address_the_kernel_would_use(
    node: topology.Host,
) -> None:
    with netns.entered(node.name):
        assert await links.route_source(IPv4Address("198.18.0.100")) == (
            "eth0",
            IPv4Address("198.18.0.11"),
        )
        assert await links.route_source(IPv6Address("2001:db8::100")) == (
            "eth0",
            IPv6Address("2001:db8::11"),
        )
        node.ns.ip("route", "del", "default")
        with pytest.raises(links.NetlinkFailure) as failure:
            await links.route_source(IPv4Address("198.51.100.7"))
        assert failure.value.errno == errno.ENETUNREACH


def eth0_index(monitor: links.Monitor) -> int:
    return next(link.index for link in monitor.links.values() if link.name == "eth0")


async def test_neighbours_maps_a_peer_node_address_to_its_mac(lab: topology.Lab) -> None:
    """What the speaker asks when another host answers a probe: whose MAC is it? A peer node
    the node has talked to is in the kernel's neighbour table (both families); an address it
    never talked to is not."""
    one, two = lab.add_node(1), lab.add_node(2)
    one.ns.run("ping", "-c", "1", "-W", "2", two.ipv4)
    one.ns.run("ping", "-6", "-c", "1", "-W", "2", two.ipv6)
    never = IPv4Address("198.18.0.99")
    with netns.entered(one.name):
        found = await neighbours.macs([IPv4Address(two.ipv4), IPv6Address(two.ipv6), never])
        assert await neighbours.macs([]) == {}
    assert found == {IPv4Address(two.ipv4): two.mac, IPv6Address(two.ipv6): two.mac}
