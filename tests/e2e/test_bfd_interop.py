"""ironlb's BFD against FRR's bfdd, in the lab.

Three nodes peer with FRR over BGP with BFD (single hop). BFD sessions come Up on both sides;
then one node falls silent (every packet to and from it dropped, its link still up): FRR must
drop the route's next hop through it within the BFD detection time, long before the BGP hold
time (30 s), and the silent node's own speaker must detect FRR's silence the same way and take
its BGP session down at once.

The bound asserted is generous (2 CPUs, polling FRR through subprocesses); the observed times are
printed. Precise figures belong in a bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from ironlb.bgp import bfd, bfd_transport, families, fsm, peers, rib, session
from ironlb.lab import netns, routers, topology
from support.poll import eventually

pytestmark = pytest.mark.e2e

T = TypeVar("T")
ROUTER_ASN = 64500
V4, V6 = families.Family.IPV4_UNICAST, families.Family.IPV6_UNICAST
ROUTER = {
    family: ipaddress.ip_address(address)
    for family, address in zip((V4, V6), topology.lan_addresses(topology.HOST_ROUTER), strict=True)
}
SERVICE = {
    V4: ipaddress.ip_network("203.0.113.10/32"),
    V6: ipaddress.ip_network("2001:db8:100::10/128"),
}
PROFILES = {
    "fast": bfd.Profile(receive_interval=100, transmit_interval=100, detect_multiplier=3),
    "default": bfd.Profile(receive_interval=300, transmit_interval=300, detect_multiplier=3),
}
UP = bfd.State.UP
EXPIRED = bfd.Diagnostic.CONTROL_DETECTION_TIME_EXPIRED
HOLD_TIME = 30
"""Long, so that only BFD can explain a fast removal."""
MARGIN = 1.0
"""Allowed beyond the detection time: scheduling on a small machine, polling FRR."""


@dataclass
class Env:
    lab: topology.Lab
    frr: routers.Frr
    nodes: dict[int, topology.Host]


@dataclass
class Node:
    host: topology.Host
    peer: peers.Peer
    bfd: bfd_transport.Session
    events: list[tuple[float, peers.Event]] = field(default_factory=list)

    def first(self, kind: type[T]) -> tuple[float, T] | None:
        return next(((at, e) for at, e in self.events if isinstance(e, kind)), None)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run `make test`")
    lab = topology.Lab.create(tmp_path_factory.mktemp("bfd"))
    try:
        router = lab.add_router()
        nodes = {i: lab.add_node(i) for i in (1, 2, 3)}
        with routers.Frr(router, lab.workdir / "frr") as frr:
            frr.start(routers.RouterConfig(ROUTER_ASN, bfd_profiles=PROFILES))
            yield Env(lab, frr, nodes)
    finally:
        lab.destroy()


@contextlib.asynccontextmanager
async def running(
    env: Env, family: families.Family, profile: bfd.Profile, *, multihop: bool
) -> AsyncIterator[dict[int, Node]]:
    """On every node: a BFD transport, a listener and a peer following its BFD session."""
    async with contextlib.AsyncExitStack() as stack:
        nodes: dict[int, Node] = {}
        for index, host in env.nodes.items():
            factory = netns.socket_factory(host.name)
            local = ipaddress.ip_address(address(host, family))
            transport = await stack.enter_async_context(
                bfd_transport.Transport(socket_factory=factory)
            )
            listener = await stack.enter_async_context(
                peers.Listener([local], socket_factory=factory)
            )
            bfd_session = transport.open_session(
                ROUTER[family], local=local, profile=profile, multihop=multihop
            )
            stack.callback(bfd_session.close)
            events: list[tuple[float, peers.Event]] = []
            config = peers.PeerConfig(
                session=session.SessionConfig(
                    local_asn=65000 + index,
                    router_id=ipaddress.IPv4Address(host.ipv4),
                    peer_asn=ROUTER_ASN,
                    timers=fsm.Timers(hold_time=HOLD_TIME, connect_retry_time=2),
                    families=frozenset({family}),
                ),
                address=ROUTER[family],
                source_address=local,
                ebgp_multihop=multihop,
            )
            peer = peers.Peer(
                config,
                listener=listener,
                bfd_session=bfd_session,
                socket_factory=factory,
                on_event=lambda e, events=events: events.append((time.monotonic(), e)),
            )
            peer.set_routes(family, {SERVICE[family]: rib.RouteAttributes()})
            nodes[index] = Node(host, peer, bfd_session, events)
        try:
            async with asyncio.TaskGroup() as tasks:
                for node in nodes.values():
                    tasks.create_task(node.peer.run())
                try:
                    yield nodes
                finally:
                    for node in nodes.values():
                        node.peer.stop("test over")
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


def address(host: topology.Host, family: families.Family) -> str:
    return host.ipv4 if family is V4 else host.ipv6


@pytest.mark.parametrize(
    ("family", "name", "multihop"),
    [(V4, "fast", False), (V4, "default", False), (V6, "fast", False), (V4, "fast", True)],
    ids=["ipv4-100ms", "ipv4-300ms", "ipv6-100ms", "ipv4-100ms-multihop"],
)
async def test_a_silent_node_loses_its_next_hop_within_the_detection_time(
    env: Env, family: families.Family, name: str, multihop: bool
) -> None:
    """Single-hop (RFC 5881), and multihop (RFC 5883) as an eBGP multihop peering uses it."""
    profile = PROFILES[name]
    frr = env.frr
    neighbors = tuple(
        routers.Neighbor(address(h, family), 65000 + i, bfd_profile=name, multihop=multihop)
        for i, h in env.nodes.items()
    )
    config = routers.RouterConfig(ROUTER_ASN, neighbors, hold_time=HOLD_TIME, bfd_profiles=PROFILES)
    await asyncio.to_thread(frr.configure, config)
    hosts = tuple(sorted(address(h, family) for h in env.nodes.values()))
    service = str(SERVICE[family])
    async with running(env, family, profile, multihop=multihop) as nodes:
        started = time.monotonic()
        await eventually(
            lambda: all(n.peer.state is fsm.State.ESTABLISHED for n in nodes.values()),
            10,
            "BGP sessions up",
        )
        await eventually(
            lambda: all(n.bfd.state is bfd.State.UP for n in nodes.values()), 10, "BFD up here"
        )
        await eventually(
            lambda: frr.bfd_peers() == {h: ("up", multihop) for h in hosts},
            10,
            "BFD up in FRR",
            blocking=True,
        )
        kind = f"{family}{' multihop' if multihop else ''}"
        print(f"BFD {kind} {name}: BGP and BFD up in {time.monotonic() - started:.2f} s")
        await eventually(lambda: frr.fib_routes(service) == hosts, 10, "ECMP route", blocking=True)

        dead = nodes[2]
        survivors = tuple(h for h in hosts if h != address(dead.host, family))
        # FRR declares us down after our multiplier times the slower of its receive interval
        # and our transmit interval; we declare FRR down after its multiplier times ours.
        detection = profile.detect_multiplier * profile.receive_interval / 1000
        for node in nodes.values():
            node.events.clear()  # from here on, only what the silence causes
        with topology.silenced(dead.host):
            silent_at = time.monotonic()
            await eventually(
                lambda: frr.fib_routes(service) == survivors,
                detection + MARGIN,
                "FRR dropping the silent node's next hop",
                blocking=True,
            )
            frr_took = time.monotonic() - silent_at
            at, down = await eventually(
                lambda: dead.first(session.SessionDown), detection + MARGIN, "our BGP down"
            )
            ours_took = at - silent_at
            print(
                f"BFD {kind} {profile.receive_interval} ms x {profile.detect_multiplier}: "
                f"FRR dropped the next hop after {frr_took * 1000:.0f} ms, the silent node "
                f"took its BGP session down after {ours_took * 1000:.0f} ms"
            )
            assert "BFD session down" in down.reason
            assert ours_took < detection + MARGIN
            bfd_down = [
                e for _, e in dead.events if isinstance(e, bfd.StateChanged) and e.previous is UP
            ]
            assert [e.diagnostic for e in bfd_down] == [EXPIRED]
            for index in (1, 3):
                assert nodes[index].peer.state is fsm.State.ESTABLISHED
                assert nodes[index].bfd.state is bfd.State.UP
                assert nodes[index].first(session.SessionDown) is None
