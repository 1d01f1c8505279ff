"""ironlb's BGP speaker against FRR, GoBGP and BIRD, in the lab.

The router namespace runs one of the three daemons; three node namespaces each run
`peers.Peer`s (their sockets opened inside the node's namespace) with a `peers.Listener`, as
a speaker process on each node would. The router's RIB, and for FRR the router namespace's kernel
routes and a ping from the remote client, are the judges. One lab and one daemon per router kind
serve every case of that kind (reconfigured per case); each case starts its own peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from ironlb.bgp import attributes, families, fsm, peers, rib, session
from ironlb.core import announce as announce_core
from ironlb.core import config, election, model
from ironlb.lab import netns, routers, topology
from ironlb.speaker import bgp as bgp_shell
from support.poll import eventually

pytestmark = pytest.mark.e2e

T = TypeVar("T")
ROUTER_ASN = 64500
NODES = (1, 2, 3)
V4, V6 = families.Family.IPV4_UNICAST, families.Family.IPV6_UNICAST
ROUTER_V4, ROUTER_V6 = topology.lan_addresses(topology.HOST_ROUTER)
SERVICE_V4 = ipaddress.ip_network("203.0.113.10/32")
SERVICE_V6 = ipaddress.ip_network("2001:db8:100::10/128")
COMMUNITY = attributes.Community.parse("65000:100")
LARGE_COMMUNITY = attributes.LargeCommunity.parse("large:65000:1:2")
TIMERS = fsm.Timers(hold_time=3, connect_retry_time=2)
PASSWORD = "ironlb-lab-secret"


@dataclass
class Env:
    """A lab with a router running one BGP daemon, and three nodes."""

    lab: topology.Lab
    router: routers.Router
    nodes: dict[int, topology.Host]


@dataclass
class Node:
    host: topology.Host
    peers: list[peers.Peer]
    events: list[peers.Event] = field(default_factory=list)


@pytest.fixture(scope="module", params=sorted(routers.ROUTERS))
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run `make test`")
    lab = topology.Lab.create(tmp_path_factory.mktemp("bgp"))
    try:
        router_host = lab.add_router()
        nodes = {i: lab.add_node(i) for i in NODES}
        router = routers.ROUTERS[request.param](router_host, lab.workdir / request.param)
        with router:
            router.start(routers.RouterConfig(ROUTER_ASN))
            yield Env(lab, router, nodes)
    finally:
        lab.destroy()


def node_asn(index: int, *, ibgp: bool) -> int:
    return ROUTER_ASN if ibgp else 65000 + index


def neighbors(
    family: families.Family, *, ibgp: bool = False, password: str = "", nodes: Sequence[int] = NODES
) -> tuple[routers.Neighbor, ...]:
    column = 0 if family is V4 else 1
    return tuple(
        routers.Neighbor(
            topology.lan_addresses(10 + i)[column], node_asn(i, ibgp=ibgp), password=password
        )
        for i in nodes
    )


def peer_config(
    host: topology.Host,
    index: int,
    family: families.Family,
    *,
    ibgp: bool = False,
    password: str = "",
    graceful_restart: session.GracefulRestartConfig | None = None,
) -> peers.PeerConfig:
    local, peer = (host.ipv4, ROUTER_V4) if family is V4 else (host.ipv6, ROUTER_V6)
    return peers.PeerConfig(
        session=session.SessionConfig(
            local_asn=node_asn(index, ibgp=ibgp),
            router_id=ipaddress.IPv4Address(host.ipv4),
            peer_asn=ROUTER_ASN,
            timers=TIMERS,
            families=frozenset({family}),
            graceful_restart=graceful_restart,
        ),
        address=ipaddress.ip_address(peer),
        source_address=ipaddress.ip_address(local),
        password=password,
    )


@contextlib.asynccontextmanager
async def running(
    env: Env, configs: Mapping[int, Sequence[peers.PeerConfig]], *, restarting: bool = False
) -> AsyncIterator[dict[int, Node]]:
    """Run the peers of each node (with one listener per node); stop them all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        nodes: dict[int, Node] = {}
        for index, node_configs in configs.items():
            host = env.nodes[index]
            factory = netns.socket_factory(host.name)
            addresses = [ipaddress.ip_address(host.ipv4), ipaddress.ip_address(host.ipv6)]
            listener = await stack.enter_async_context(
                peers.Listener(addresses, socket_factory=factory)
            )
            node = Node(host, [])
            node.peers = [
                peers.Peer(
                    c,
                    listener=listener,
                    socket_factory=factory,
                    on_event=node.events.append,
                    restarting=restarting,
                )
                for c in node_configs
            ]
            nodes[index] = node
        try:
            async with asyncio.TaskGroup() as tasks:
                for node in nodes.values():
                    for peer in node.peers:
                        tasks.create_task(peer.run())
                try:
                    yield nodes
                finally:
                    for node in nodes.values():
                        for peer in node.peers:
                            peer.stop("test over")
        except BaseExceptionGroup as group:
            # A failed assertion in the test body: show it, not the group around it.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


async def all_established(nodes: Mapping[int, Node], within: float = 10.0) -> float:
    """Seconds until every peer of every node is Established."""
    started = time.monotonic()
    peers = [p for n in nodes.values() for p in n.peers]
    await eventually(
        lambda: all(p.state is fsm.State.ESTABLISHED for p in peers),
        within,
        f"sessions established ({[p.state.value for p in peers]})",
    )
    return time.monotonic() - started


def announce(
    nodes: Mapping[int, Node], prefix: families.Prefix, route: rib.RouteAttributes
) -> None:
    for node in nodes.values():
        for peer in node.peers:
            peer.set_routes(families.Family.of(prefix), {prefix: route})


def paths_of(env: Env, prefix: families.Prefix) -> Callable[[], list[routers.Path]]:
    return lambda: env.router.routes(families.Family.of(prefix)).get(str(prefix), [])


def next_hops(paths: Sequence[routers.Path]) -> set[str]:
    return {p.next_hop for p in paths}


@pytest.mark.parametrize("ibgp", [False, True], ids=["ebgp", "ibgp"])
async def test_three_nodes_announce_a_route_with_communities_then_withdraw_it(
    env: Env, ibgp: bool
) -> None:
    await asyncio.to_thread(
        env.router.configure, routers.RouterConfig(ROUTER_ASN, neighbors(V4, ibgp=ibgp))
    )
    configs = {i: [peer_config(h, i, V4, ibgp=ibgp)] for i, h in env.nodes.items()}
    route = rib.RouteAttributes(
        local_pref=200 if ibgp else None,
        communities=frozenset({COMMUNITY}),
        large_communities=frozenset({LARGE_COMMUNITY}),
    )
    async with running(env, configs) as nodes:
        announce(nodes, SERVICE_V4, route)
        took = await all_established(nodes)
        print(f"{env.router.name} {'iBGP' if ibgp else 'eBGP'}: 3 sessions up in {took:.3f} s")
        hosts = {h.ipv4 for h in env.nodes.values()}
        paths = await eventually(
            lambda: (ps := paths_of(env, SERVICE_V4)()) and next_hops(ps) == hosts and ps,
            10,
            f"{SERVICE_V4} via every node in {env.router.name}",
            blocking=True,
        )
        for path in paths:
            assert path.communities == {"65000:100"}
            assert path.large_communities == {"65000:1:2"}
            if ibgp:
                assert path.local_pref == 200
                assert path.as_path == ()
            else:
                index = int(path.next_hop.rsplit(".", 1)[1]) - 10
                assert path.as_path == (node_asn(index, ibgp=False),)
        states = await asyncio.to_thread(env.router.neighbors)
        assert set(states.values()) == {fsm.State.ESTABLISHED}, states

        for node in nodes.values():
            node.peers[0].set_routes(V4, {})
        await eventually(lambda: not paths_of(env, SERVICE_V4)(), 10, "withdrawal", blocking=True)
        assert all(p.state is fsm.State.ESTABLISHED for n in nodes.values() for p in n.peers)
    for node in nodes.values():
        assert not any(
            isinstance(e, session.SessionDown) and "test over" not in e.reason for e in node.events
        ), node.events


async def test_ipv6_route_over_mp_bgp_has_the_node_as_next_hop(env: Env) -> None:
    await asyncio.to_thread(env.router.configure, routers.RouterConfig(ROUTER_ASN, neighbors(V6)))
    configs = {i: [peer_config(h, i, V6)] for i, h in env.nodes.items()}
    async with running(env, configs) as nodes:
        announce(nodes, SERVICE_V6, rib.RouteAttributes(communities=frozenset({COMMUNITY})))
        await all_established(nodes)
        hosts = {h.ipv6 for h in env.nodes.values()}
        paths = await eventually(
            lambda: (ps := paths_of(env, SERVICE_V6)()) and next_hops(ps) == hosts and ps,
            10,
            f"{SERVICE_V6} via every node",
            blocking=True,
        )
        assert all(p.communities == {"65000:100"} for p in paths)
        for node in nodes.values():
            negotiated = node.peers[0].negotiated
            assert negotiated is not None
            assert negotiated.families == {V6}


async def test_md5_session_needs_the_right_password(env: Env) -> None:
    config = routers.RouterConfig(ROUTER_ASN, neighbors(V4, password=PASSWORD, nodes=(1, 2)))
    await asyncio.to_thread(env.router.configure, config)
    good, bad = env.nodes[1], env.nodes[2]
    configs = {
        1: [peer_config(good, 1, V4, password=PASSWORD)],
        2: [peer_config(bad, 2, V4, password="not-the-password")],
    }
    async with running(env, configs) as nodes:
        announce(nodes, SERVICE_V4, rib.RouteAttributes())
        await eventually(
            lambda: nodes[1].peers[0].state is fsm.State.ESTABLISHED, 10, "the MD5 session"
        )
        await eventually(
            paths_of(env, SERVICE_V4), 10, "the route over the MD5 session", blocking=True
        )
        # The wrong password is silence: every attempt times out after connectTime (2 s).
        wrong = nodes[2].peers[0]
        failure = await eventually(
            lambda: next((e for e in nodes[2].events if isinstance(e, peers.ConnectFailed)), None),
            3 * TIMERS.connect_retry_time,
            "a connection failure reported",
        )
        assert "MD5" in failure.reason
        await asyncio.sleep(TIMERS.connect_retry_time)
        assert wrong.state is not fsm.State.ESTABLISHED
        assert 1 <= wrong.connect_failures <= 4
        states = await asyncio.to_thread(env.router.neighbors)
        assert states[good.ipv4] is fsm.State.ESTABLISHED
        assert states[bad.ipv4] is not fsm.State.ESTABLISHED
        assert next_hops(await asyncio.to_thread(paths_of(env, SERVICE_V4))) == {good.ipv4}


def _object(kind: str, name: str, spec: dict[str, object]) -> object:
    version = "v1beta2" if kind == "BGPPeer" else "v1beta1"
    return config.parse(
        {
            "apiVersion": f"metallb.io/{version}",
            "kind": kind,
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": spec,
        }
    )


def aggregated_plan(node: str, ips: Sequence[str]) -> dict[families.Prefix, rib.RouteAttributes]:
    """What a speaker on `node` sends its router for Services at `ips` (host addresses) under
    a BGPAdvertisement with aggregationLength 24: `core.announce.bgp` decides, as in the
    speaker process."""
    services = [
        model.parse_service(
            {
                "metadata": {"name": f"svc-{n}", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
            }
        )
        for n, ip in enumerate(ips)
    ]
    endpoints = {
        s.key: (
            model.parse_endpoint_slice(
                {
                    "metadata": {
                        "name": f"{s.name}-x",
                        "namespace": "default",
                        "labels": {"kubernetes.io/service-name": s.name},
                    },
                    "addressType": "IPv4",
                    "endpoints": [
                        {"addresses": ["198.19.1.5"], "nodeName": node, "conditions": {}}
                    ],
                }
            ),
        )
        for s in services
    }
    cfg = config.Config.from_objects(
        [
            _object("IPAddressPool", "routed", {"addresses": ["203.0.113.0/24"]}),
            _object("BGPAdvertisement", "aggregate", {"aggregationLength": 24}),
            _object(
                "BGPPeer",
                "router",
                {"myASN": 65001, "peerASN": ROUTER_ASN, "peerAddress": ROUTER_V4},
            ),
        ]
    )
    nodes = {
        node: model.parse_node(
            {"metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}}}
        )
    }
    view = announce_core.View(
        services={s.key: s for s in services},
        endpoints=endpoints,
        nodes=nodes,
        config=cfg,
        live={election.NodeName(node): announce_core.Health()},
    )
    plan = announce_core.bgp(view, node)
    return {prefix: bgp_shell.route_attributes(r) for prefix, r in plan.routes["router"].items()}


async def test_host_routes_under_an_aggregation_length_reach_the_router_as_their_aggregate(
    env: Env,
) -> None:
    await asyncio.to_thread(env.router.configure, routers.RouterConfig(ROUTER_ASN, neighbors(V4)))
    aggregate = ipaddress.ip_network("203.0.113.0/24")
    hosts = ["203.0.113.10", "203.0.113.20", "203.0.113.130"]
    configs = {i: [peer_config(h, i, V4)] for i, h in env.nodes.items()}
    async with running(env, configs) as nodes:
        for i, node in nodes.items():
            routes = aggregated_plan(f"node-{i}", hosts)
            assert set(routes) == {aggregate}  # three /32s, one /24
            for p in node.peers:
                p.set_routes(V4, routes)
        await all_established(nodes)
        await eventually(
            lambda: next_hops(paths_of(env, aggregate)()) == {h.ipv4 for h in env.nodes.values()},
            10,
            f"{aggregate} via every node",
            blocking=True,
        )
        table = await asyncio.to_thread(env.router.routes, V4)
        for ip in hosts:
            assert f"{ip}/32" not in table


@contextlib.contextmanager
def answering(hosts: Iterable[topology.Host], prefix: families.Prefix) -> Iterator[None]:
    """Put `prefix` on every host's loopback, so that each answers pings sent to it."""
    done = []
    try:
        for host in hosts:
            host.ns.ip("addr", "add", str(prefix), "dev", "lo")
            done.append(host)
        yield
    finally:
        for host in done:
            host.ns.ip("addr", "del", str(prefix), "dev", "lo")


@pytest.mark.parametrize("env", ["frr"], indirect=True)
async def test_frr_installs_ecmp_and_the_hold_timer_removes_a_dead_node(env: Env) -> None:
    assert isinstance(env.router, routers.Frr)
    frr = env.router
    await asyncio.to_thread(frr.configure, routers.RouterConfig(ROUTER_ASN, neighbors(V4)))
    configs = {i: [peer_config(h, i, V4)] for i, h in env.nodes.items()}
    hosts = tuple(sorted(h.ipv4 for h in env.nodes.values()))
    remote = env.lab.hosts["remote"]
    service = str(SERVICE_V4.network_address)
    with answering(env.nodes.values(), SERVICE_V4):
        async with running(env, configs) as nodes:
            announce(nodes, SERVICE_V4, rib.RouteAttributes())
            await all_established(nodes)
            await eventually(
                lambda: frr.fib_routes(str(SERVICE_V4)) == hosts,
                10,
                "an ECMP kernel route via the three nodes",
                blocking=True,
            )
            assert await asyncio.to_thread(remote.ns.ping, service, timeout=2)

            dead = env.nodes[2]
            survivors = tuple(h for h in hosts if h != dead.ipv4)
            with topology.silenced(dead):
                started = time.monotonic()
                await eventually(
                    lambda: frr.fib_routes(str(SERVICE_V4)) == survivors,
                    TIMERS.hold_time + 3,
                    "the dead node's next hop removed",
                    blocking=True,
                )
                took = time.monotonic() - started
                print(f"FRR removed a silent node's next hop after {took:.3f} s (hold time 3 s)")
                down = await eventually(
                    lambda: next(
                        (e for e in nodes[2].events if isinstance(e, session.SessionDown)), None
                    ),
                    TIMERS.hold_time + 2,
                    "the dead node's own session down",
                )
                assert "HOLD_TIMER_EXPIRED" in down.reason
                assert await asyncio.to_thread(remote.ns.ping, service, timeout=2)


@pytest.mark.parametrize("env", ["frr"], indirect=True)
async def test_two_ironlb_speakers_opening_at_once_keep_one_connection(env: Env) -> None:
    """Both sides connect at the same moment, each accepts the other's connection too: the
    collision resolves (RFC 4271 §6.8) to the same single connection on both sides, and the
    session comes up once, without flapping."""
    one, two = env.nodes[1], env.nodes[2]

    def towards(local: topology.Host, remote: topology.Host, asn: int, peer_asn: int):
        return peers.PeerConfig(
            session=session.SessionConfig(
                local_asn=asn,
                router_id=ipaddress.IPv4Address(local.ipv4),
                peer_asn=peer_asn,
                timers=TIMERS,
                families=frozenset({V4}),
            ),
            address=ipaddress.ip_address(remote.ipv4),
            source_address=ipaddress.ip_address(local.ipv4),
        )

    configs = {1: [towards(one, two, 65001, 65002)], 2: [towards(two, one, 65002, 65001)]}
    async with running(env, configs) as nodes:
        await all_established(nodes)
        await asyncio.sleep(2 * TIMERS.hold_time / 3)  # a loser dumped late would show by now

        def connections(host: topology.Host) -> list[str]:
            out = host.ns.run(
                "ss", "-Htn", "state", "established", "( sport = :179 or dport = :179 )"
            )
            return out.splitlines()

        assert len(connections(one)) == 1, connections(one)
        assert len(connections(two)) == 1, connections(two)
        for node in nodes.values():
            assert [
                type(e)
                for e in node.events
                if isinstance(e, session.SessionUp | session.SessionDown)
            ] == [session.SessionUp]


@pytest.mark.parametrize("env", ["frr"], indirect=True)
async def test_graceful_restart_keeps_the_route_while_the_speaker_restarts(env: Env) -> None:
    """`close()` goes away without NOTIFICATION, as a crashing or upgrading speaker does: FRR, a
    Graceful Restart helper, keeps the route (stale) until the restarted speaker, with the R bit
    set, has sent it again."""
    await asyncio.to_thread(
        env.router.configure, routers.RouterConfig(ROUTER_ASN, neighbors(V4, nodes=(1,)))
    )
    node = env.nodes[1]
    config = {1: [peer_config(node, 1, V4, graceful_restart=session.GracefulRestartConfig(30))]}
    paths = paths_of(env, SERVICE_V4)
    async with running(env, config) as nodes:
        announce(nodes, SERVICE_V4, rib.RouteAttributes())
        await eventually(paths, 10, "the route", blocking=True)
        negotiated = nodes[1].peers[0].negotiated
        assert negotiated is not None
        assert negotiated.peer_graceful_restart is not None
        nodes[1].peers[0].close()
    stale = await eventually(
        lambda: [p for p in paths() if p.stale], 10, "the route kept as stale", blocking=True
    )
    assert next_hops(stale) == {node.ipv4}
    async with running(env, config, restarting=True) as nodes:
        announce(nodes, SERVICE_V4, rib.RouteAttributes())
        await eventually(
            lambda: (ps := paths()) and not any(p.stale for p in ps),
            10,
            "the route refreshed",
            blocking=True,
        )
        assert next_hops(await asyncio.to_thread(paths)) == {node.ipv4}


async def test_sessions_and_routes_come_back_after_the_router_restarts(env: Env) -> None:
    config = routers.RouterConfig(ROUTER_ASN, neighbors(V4))
    await asyncio.to_thread(env.router.configure, config)
    configs = {i: [peer_config(h, i, V4)] for i, h in env.nodes.items()}
    hosts = {h.ipv4 for h in env.nodes.values()}
    async with running(env, configs) as nodes:
        announce(nodes, SERVICE_V4, rib.RouteAttributes())
        await all_established(nodes)
        await asyncio.to_thread(env.router.stop)
        await eventually(
            lambda: all(n.peers[0].state is not fsm.State.ESTABLISHED for n in nodes.values()),
            TIMERS.hold_time + 2,
            "sessions down with the router",
        )
        restarted = time.monotonic()
        await asyncio.to_thread(env.router.start, config)
        await all_established(nodes)
        took = time.monotonic() - restarted
        print(f"{env.router.name} restarted: sessions back {took:.2f} s after its start")
        await eventually(
            lambda: next_hops(paths_of(env, SERVICE_V4)()) == hosts,
            10,
            "the route via every node again",
            blocking=True,
        )
