"""BGP chaos: the router crashes, a password changes under running sessions, a peer sends
garbage, the router or a speaker crashes under Graceful Restart. Three node namespaces each run
a speaker as its node and a backend, beside the controller and the real API server; FRR in the
router namespace peers with every node, the remote client behind the router sends requests to
Service addresses, and a hostile "router" at the LAN client's address speaks malformed BGP to
node-1.

What is asserted is seen from OUTSIDE ironlb: FRR's sessions, routes and connection counters,
the router's kernel routes (sampled), every request of the remote client, and the bytes the
speaker sends to the hostile peer. Limits are generous (the machine is shared) and only prove
that recovery happens; the times are printed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ironlb.bgp import families, fsm
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, routers, topology
from support import kube, traffic

pytestmark = pytest.mark.e2e

NODES = (1, 2, 3)
MODULE = "test_bgp_chaos"
ROUTER_AS, NODE_AS, ROGUE_AS = 64500, 64510, 64999
V4, V6 = families.Family.IPV4_UNICAST, families.Family.IPV6_UNICAST
ROUTER_V4, ROUTER_V6 = topology.lan_addresses(topology.HOST_ROUTER)
HOLD_TIME, CONNECT_TIME = 9, 2
SWEEP_TIME = 8
"""Seconds a restarted FRR's zebra keeps the kernel routes of the FRR that was killed: short,
so that traffic goes on past the sweep (the restarted bgpd must have taken every route over by
then, which it does only once every speaker has sent End-of-RIB), but over the time sessions
take to come back (1-2 s)."""
POOL = kube.pool("chaos-bgp", "203.0.113.64/28", "2001:db8:100::40/124", module=MODULE)
MAX_FAILED = 0.02
"""Share of requests that may fail while the router restarts with Graceful Restart (see the
test)."""
DUAL_STACK = {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}
ADVERTISEMENT = {
    "apiVersion": "metallb.io/v1beta1",
    "kind": "BGPAdvertisement",
    "metadata": {"name": "chaos-bgp", "namespace": kube.CONFIG_NS},
    "spec": {"ipAddressPools": ["chaos-bgp"]},
}


def bgp_peer(name: str, address: str, peer_asn: int, **spec: Any) -> k8s.Obj:
    return {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": name, "namespace": kube.CONFIG_NS},
        "spec": {
            "myASN": NODE_AS,
            "peerASN": peer_asn,
            "peerAddress": address,
            "holdTime": f"{HOLD_TIME}s",
            "connectTime": f"{CONNECT_TIME}s",
            **spec,
        },
    }


def md5_secret(password: str) -> k8s.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "chaos-md5", "namespace": kube.CONFIG_NS},
        "data": {"password": base64.b64encode(password.encode()).decode()},
    }


@dataclass
class BgpChaos:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    client: topology.Host
    router: routers.Frr
    speakers: dict[int, components.Process] = field(default_factory=dict)
    others: list[components.Process] = field(default_factory=list)
    graceful: bool = False
    """Graceful Restart on both sides, and IPv6 sessions beside the IPv4 ones
    (`graceful_restart`)."""

    @property
    def remote(self) -> topology.Host:
        return self.cluster.lab.hosts["remote"]

    def router_config(self, password: str = "") -> routers.RouterConfig:
        addresses = [h.ipv4 for h in self.hosts.values()]
        if self.graceful:
            addresses += [h.ipv6 for h in self.hosts.values()]
        neighbors = tuple(routers.Neighbor(a, NODE_AS, password=password) for a in addresses)
        sweep = SWEEP_TIME if self.graceful else 0
        return routers.RouterConfig(ROUTER_AS, neighbors, graceful_restart=sweep)

    def established(self) -> bool:
        self.assert_speakers_alive()  # fail at once, with the log, rather than time out
        states = self.router.neighbors()
        wanted = [n.address for n in self.router_config().neighbors]
        return all(states.get(a) is fsm.State.ESTABLISHED for a in wanted)

    def routes(self) -> dict[str, frozenset[str]]:
        """Every prefix FRR holds from the nodes (IPv4 and IPv6), with its next hops."""
        self.assert_speakers_alive()
        return {
            prefix: frozenset(p.next_hop for p in paths)
            for family in (V4, V6)
            for prefix, paths in self.router.routes(family).items()
        }

    def connections(self) -> dict[str, tuple[int, int]]:
        """FRR's (established, dropped) connection counts per node: a session that went down
        and came back between two looks changes them."""
        table = json.loads(self.router.vtysh("show bgp neighbors json"))
        return {
            h.ipv4: (
                int(table[h.ipv4].get("connectionsEstablished", 0)),
                int(table[h.ipv4].get("connectionsDropped", 0)),
            )
            for h in self.hosts.values()
        }

    def assert_speakers_alive(self) -> None:
        for proc in self.speakers.values():
            assert proc.alive, f"{proc.name} exited:\n{proc.log_text()[-3000:]}"


@pytest.fixture(scope="module")
def lab(cluster: lab_cluster.Cluster) -> Iterator[BgpChaos]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    router_host = cluster.lab.add_router()
    router = routers.Frr(router_host, cluster.lab.workdir / "router-chaos-frr")
    chaos = BgpChaos(cluster, hosts, cluster.lab.add_client(), router)
    try:
        router.start(chaos.router_config())
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
            chaos.others.append(components.start_backend(cluster, host))
        chaos.others.append(components.start_controller(cluster))
        kube.apply(cluster, POOL, ADVERTISEMENT, bgp_peer("router", ROUTER_V4, ROUTER_AS))
        for i in NODES:
            chaos.speakers[i] = components.start_speaker(cluster, i, wait=False)
        for proc in chaos.speakers.values():
            proc.wait_ready()
        routers.wait_until(chaos.established, 30, "FRR's sessions with three speakers")
        yield chaos
    finally:
        router.stop()
        for proc in [*chaos.speakers.values(), *chaos.others]:
            proc.kill()
        for kind, name in (
            ("bgppeer", "router"),
            ("bgppeer", "rogue"),
            ("bgppeer", "router-v6"),
            ("bgpadvertisement", "chaos-bgp"),
            ("ipaddresspool", "chaos-bgp"),
            ("secret", "chaos-md5"),
        ):
            cluster.kubectl("delete", kind, name, "-n", kube.CONFIG_NS, "--ignore-not-found")
        components.uninstall_webhook(cluster)
        for role in ("client", "remote", "router", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


async def routed_services(
    admin: k8s.Client, lab: BgpChaos, namespace: str, count: int = 2, **spec: Any
) -> dict[str, frozenset[str]]:
    """`count` Services served by every node, their /32s (and /128s) in FRR via all three:
    FRR's routes."""
    ips: list[str] = []
    for n in range(count):
        await admin.create(k8s.SERVICES, kube.service(f"svc-{n}", **spec), namespace)
        components.endpoints(lab.cluster, namespace, f"svc-{n}", [f"node-{i}" for i in NODES])
    for n in range(count):
        ips += await kube.eventually(lambda n=n: kube.ingress(admin, namespace, f"svc-{n}"))
    hops = {
        4: frozenset(h.ipv4 for h in lab.hosts.values()),
        6: frozenset(h.ipv6 for h in lab.hosts.values()),
    }

    def announced() -> dict[str, frozenset[str]] | None:
        routes = lab.routes()
        every = all(routes.get(host_prefix(ip)) == hops[version(ip)] for ip in ips)
        return routes if every else None

    return await asyncio.to_thread(routers.wait_until, announced, 20, "the Services' routes")


async def recovered(lab: BgpChaos, routes: dict[str, frozenset[str]], within: float) -> float:
    """Seconds until every session is Established and FRR holds exactly `routes` again."""
    started = time.monotonic()
    await asyncio.to_thread(
        routers.wait_until,
        lambda: lab.established() and lab.routes() == routes,
        within,
        "every session and every route back",
    )
    return time.monotonic() - started


# --- the router crashes ---------------------------------------------------------------------


def version(ip: str) -> int:
    return 6 if ":" in ip else 4


def host_prefix(ip: str) -> str:
    return f"{ip}/{128 if version(ip) == 6 else 32}"


Samples = list[tuple[float, tuple[str, ...]]]
"""(time, next hops) of one prefix's route in the router's kernel table."""


@contextlib.contextmanager
def fib_sampled(router: routers.Frr, prefix: str) -> Iterator[Samples]:
    """Sample the router's kernel route for `prefix` in a thread, as fast as `ip` answers
    (every 20 ms at most), until the block ends."""
    samples: Samples = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), router.fib_routes(prefix)))
            done.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join(10)


def gaps(samples: Samples) -> list[float]:
    """Seconds each absence of the route lasted (from its first sample without the route to
    the next one with it)."""
    found, since = [], None
    for t, hops in samples:
        if not hops and since is None:
            since = t
        elif hops and since is not None:
            found.append(t - since)
            since = None
    return found


def hop_changes(samples: Samples) -> list[tuple[float, tuple[str, ...]]]:
    """Each change of the route's next hops: seconds after the first sample, new next hops."""
    changes = []
    for (_, before), (t, after) in itertools.pairwise(samples):
        if after != before:
            changes.append((round(t - samples[0][0], 2), after))
    return changes


def requests(stream: traffic.Stream, samples: Samples) -> str:
    failed = [round(t - samples[0][0], 2) for t, body in stream.results if body is None]
    return (
        f"{len(stream.results)} requests, {stream.lost} failed {stream.errors} at {failed[:20]};"
        f" {len(samples)} FIB samples, route absent {[round(g, 2) for g in gaps(samples)]} s,"
        f" next hops changed {hop_changes(samples)}"
    )


@contextlib.asynccontextmanager
async def graceful_restart(lab: BgpChaos) -> AsyncIterator[None]:
    """Graceful Restart on both sides for the block: the BGPPeer's `enableGracefulRestart`, and
    FRR's `bgp graceful-restart` with preserved forwarding state (its zebra started with `-K`
    at the next `start()`)."""
    lab.graceful = True
    try:
        kube.apply(
            lab.cluster,
            bgp_peer("router", ROUTER_V4, ROUTER_AS, enableGracefulRestart=True),
            bgp_peer("router-v6", ROUTER_V6, ROUTER_AS, enableGracefulRestart=True),
        )
        await asyncio.to_thread(lab.router.configure, lab.router_config())

        def graceful_sessions() -> bool:
            table = json.loads(lab.router.vtysh("show bgp neighbors json"))
            return lab.established() and all(
                table[n.address].get("neighborCapabilities", {}).get("gracefulRestart")
                == "advertisedAndReceived"
                for n in lab.router_config().neighbors
            )

        await asyncio.to_thread(routers.wait_until, graceful_sessions, 30, "sessions with GR")
        yield
    finally:
        lab.graceful = False
        lab.cluster.kubectl("delete", "bgppeer", "router-v6", "-n", kube.CONFIG_NS)
        kube.apply(lab.cluster, bgp_peer("router", ROUTER_V4, ROUTER_AS))
        await asyncio.to_thread(lab.router.configure, lab.router_config())
        await asyncio.to_thread(routers.wait_until, lab.established, 30, "sessions without GR")


async def router_killed_under_traffic(
    lab: BgpChaos, admin: k8s.Client, namespace: str, **spec: Any
) -> list[tuple[traffic.Stream, Samples]]:
    """FRR SIGKILLed and restarted while the remote client sends a request every 10 ms to each
    address of a Service (`spec`: its dual-stack settings, if any) and the router's kernel route
    to each is sampled; returns once every session and route is back (and half a second more of
    traffic; under Graceful Restart, until zebra's sweep is past)."""
    routes = await routed_services(admin, lab, namespace, count=1, **spec)
    prefixes = [host_prefix(ip) for ip in await kube.ingress(admin, namespace, "svc-0")]

    def installed() -> bool:
        return all(len(lab.router.fib_routes(p)) == len(NODES) for p in prefixes)

    await asyncio.to_thread(routers.wait_until, installed, 10, "the ECMP routes")
    with contextlib.ExitStack() as stack:
        probes = [
            (
                traffic.Stream(lab.remote.ns.name, p.split("/")[0], count=3000, interval=0.01),
                stack.enter_context(fib_sampled(lab.router, p)),
            )
            for p in prefixes
        ]
        for stream, _ in probes:
            stream.start()
        try:
            await asyncio.sleep(0.5)
            killed = time.monotonic()
            lab.router.kill()
            await asyncio.to_thread(lab.router.start, lab.router_config())
            restarted = time.monotonic()
            bound = HOLD_TIME + CONNECT_TIME
            after_restart = await recovered(lab, routes, bound)
            # Under Graceful Restart, until zebra has swept what bgpd did not take over.
            until = restarted + SWEEP_TIME + 1 if lab.graceful else 0
            await asyncio.sleep(max(0.5, until - time.monotonic()))
        finally:
            for stream, _ in probes:
                await asyncio.to_thread(stream.stop)
    sessions = len(lab.router_config().neighbors)
    print(
        f"router SIGKILLed and restarted (graceful restart {lab.graceful}): FRR up again"
        f" {restarted - killed:.2f} s after the kill; {sessions} sessions and {len(routes)}"
        f" routes back {after_restart:.2f} s later ({restarted - killed + after_restart:.2f} s"
        f" after the kill; bound {bound} s)"
    )
    for prefix, (stream, samples) in zip(prefixes, probes, strict=True):
        print(f"  {prefix}: {requests(stream, samples)}")
        assert len(samples) > 20, "the FIB was hardly sampled"
        assert len(stream.results) > 100, "hardly any request was sent"
    lab.assert_speakers_alive()
    return probes


async def test_every_session_and_route_comes_back_after_the_router_is_killed(
    lab: BgpChaos, admin: k8s.Client, namespace: str
) -> None:
    ((stream, samples),) = await router_killed_under_traffic(lab, admin, namespace)
    # Without Graceful Restart the restarted zebra sweeps the killed one's kernel routes at
    # once: forwarding stops until the sessions are back (the contrast to the test below).
    assert gaps(samples), requests(stream, samples)
    assert stream.lost > 0, requests(stream, samples)


async def test_graceful_restart_keeps_forwarding_while_the_router_restarts(
    lab: BgpChaos, admin: k8s.Client, namespace: str
) -> None:
    """The same with Graceful Restart, for a dual-stack Service over IPv4 and IPv6 sessions."""
    async with graceful_restart(lab):
        probes = await router_killed_under_traffic(lab, admin, namespace, **DUAL_STACK)
    assert len(probes) == 2, "an IPv4 and an IPv6 address"
    # The kernel keeps forwarding while FRR is down and while it relearns: each route is in
    # every sample. Requests fail only in bursts of a few at one or two instants while FRR
    # relearns, with no change of next hops seen (most likely the restarted FRR replacing the
    # route it left in the kernel with its own, so that connections under way are rehashed to
    # another node: not pinned down); seen 0-9 of 1 000-1 400 per address over 7 runs, where
    # without Graceful Restart about half fail (the test above).
    for stream, samples in probes:
        assert all(hops for _, hops in samples), requests(stream, samples)
        assert stream.lost <= MAX_FAILED * len(stream.results), requests(stream, samples)


# --- a speaker crashes ---------------------------------------------------------------------


async def test_graceful_restart_keeps_forwarding_while_a_speaker_restarts(
    lab: BgpChaos, admin: k8s.Client, namespace: str
) -> None:
    """A Service only node-1 announces (its one local endpoint) while node-1's speaker is
    SIGKILLed and started again: FRR, the helper, keeps the route (stale) until the new speaker
    has sent it again and End-of-RIB; the remote client never notices."""
    async with graceful_restart(lab):
        body = kube.service("local", externalTrafficPolicy="Local")
        await admin.create(k8s.SERVICES, body, namespace)
        components.endpoints(lab.cluster, namespace, "local", ["node-1"])
        (ip,) = await kube.eventually(lambda: kube.ingress(admin, namespace, "local"))
        prefix, node = f"{ip}/32", lab.hosts[1].ipv4

        def paths() -> list[routers.Path]:
            return lab.router.routes(V4).get(prefix, [])

        def fresh() -> bool:
            found = paths()
            return [(p.next_hop, p.stale) for p in found] == [(node, False)] and (
                lab.router.fib_routes(prefix) == (node,)
            )

        await asyncio.to_thread(routers.wait_until, fresh, 20, "the route via node-1")
        with fib_sampled(lab.router, prefix) as samples:
            stream = traffic.Stream(lab.remote.ns.name, ip, count=3000, interval=0.01).start()
            try:
                await asyncio.sleep(0.5)
                killed = time.monotonic()
                lab.speakers[1].kill()
                stale = await asyncio.to_thread(
                    routers.wait_until,
                    lambda: all(p.stale for p in found) and found if (found := paths()) else None,
                    10,
                    "FRR to keep the route as stale",
                )
                lab.speakers[1] = components.start_speaker(lab.cluster, 1, wait=False)
                await asyncio.to_thread(routers.wait_until, fresh, 60, "the route refreshed")
                back = time.monotonic() - killed
                await asyncio.sleep(0.5)
            finally:
                await asyncio.to_thread(stream.stop)
        print(
            f"speaker SIGKILLed and restarted with graceful restart: route refreshed {back:.2f} s"
            f" after the kill; {requests(stream, samples)}"
        )
        assert [p.next_hop for p in stale] == [node]
        assert len(samples) > 20, "the FIB was hardly sampled"
        assert len(stream.results) > 100, "hardly any request was sent"
        assert all(hops == (node,) for _, hops in samples), requests(stream, samples)
        assert stream.lost == 0, requests(stream, samples)
        lab.assert_speakers_alive()


# --- the password changes under running sessions -------------------------------------------


async def test_sessions_come_back_after_the_md5_password_changes(
    lab: BgpChaos, admin: k8s.Client, namespace: str
) -> None:
    await asyncio.to_thread(lab.router.configure, lab.router_config("first-md5"))
    kube.apply(
        lab.cluster,
        md5_secret("first-md5"),
        bgp_peer("router", ROUTER_V4, ROUTER_AS, passwordSecret={"name": "chaos-md5"}),
    )
    try:
        routes = await routed_services(admin, lab, namespace)
        await asyncio.to_thread(routers.wait_until, lab.established, 20, "sessions over MD5")
        # The Secret changes while every session is up (each speaker restarts its session
        # with the new key while the old one still flushes its Cease), then the router.
        kube.apply(lab.cluster, md5_secret("second-md5"))

        def all_down() -> bool:
            states = lab.router.neighbors()
            return all(states.get(h.ipv4) is not fsm.State.ESTABLISHED for h in lab.hosts.values())

        await asyncio.to_thread(
            routers.wait_until, all_down, 20, "the sessions with the old password to go"
        )
        await asyncio.to_thread(lab.router.configure, lab.router_config("second-md5"))
        took = await recovered(lab, routes, HOLD_TIME + CONNECT_TIME)
        print(f"MD5 password changed: sessions and routes back {took:.2f} s after the router's")
        lab.assert_speakers_alive()
        for proc in lab.speakers.values():
            assert "two peers with address" not in proc.log_text()
    finally:
        kube.apply(lab.cluster, bgp_peer("router", ROUTER_V4, ROUTER_AS))
        await asyncio.to_thread(lab.router.configure, lab.router_config())
        await asyncio.to_thread(routers.wait_until, lab.established, 30, "sessions without MD5")


# --- a peer that sends garbage ---------------------------------------------------------------

MARKER = b"\xff" * 16
KEEPALIVE = MARKER + struct.pack("!HB", 19, 4)


def bgp_open(version: int = 4) -> bytes:
    """An OPEN from AS ROGUE_AS (hold time 9 s) with the IPv4 unicast and 4-octet AS
    capabilities."""
    caps = bytes((1, 4, 0, 1, 0, 1)) + bytes((65, 4)) + ROGUE_AS.to_bytes(4, "big")
    params = bytes((2, len(caps))) + caps
    router_id = socket.inet_aton(topology.lan_addresses(topology.HOST_CLIENT)[0])
    body = struct.pack("!BHH4sB", version, ROGUE_AS, HOLD_TIME, router_id, len(params)) + params
    return MARKER + struct.pack("!HB", 19 + len(body), 1) + body


Notification = tuple[int, int, bytes]
"""Error code, subcode, data."""


def notifications(stream: bytes) -> list[Notification]:
    """The NOTIFICATIONs in what the speaker sent (parsed here, not with ironlb's codec)."""
    found = []
    while len(stream) >= 19:
        assert stream[:16] == MARKER, f"speaker sent a bad marker: {stream[:19].hex()}"
        length, kind = struct.unpack_from("!HB", stream, 16)
        if kind == 3:
            found.append((stream[19], stream[20], stream[21:length]))
        stream = stream[length:]
    return found


@dataclass
class Exchange:
    """One connection from the speaker to the rogue."""

    opened: float
    closed: float = 0.0
    received: bytes = b""


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def sends(data: bytes) -> Script:
    async def step(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)

    return step


async def comes_up_then_sends_garbage(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """A valid OPEN and KEEPALIVE (the session reaches Established), then a bad marker."""
    writer.write(bgp_open() + KEEPALIVE)
    await reader.readexactly(19)  # the speaker's KEEPALIVE (OpenConfirm)
    await asyncio.sleep(0.3)  # it has our KEEPALIVE: Established
    writer.write(b"\x00" * 16 + struct.pack("!HB", 19, 4))


SCRIPT: list[tuple[str, Script, Notification]] = [
    ("bad marker", sends(b"\x00" * 16 + struct.pack("!HB", 19, 4)), (1, 1, b"")),
    ("bad length", sends(MARKER + struct.pack("!HB", 18, 4)), (1, 2, b"\x00\x12")),
    ("OPEN of version 3", sends(bgp_open(version=3)), (2, 1, b"\x00\x04")),
    ("garbage once Established", comes_up_then_sends_garbage, (1, 1, b"")),
    ("bad marker again", sends(b"\x00" * 16 + struct.pack("!HB", 19, 4)), (1, 1, b"")),
]


class Rogue:
    """Listens on the LAN client's BGP port; the speaker's n-th connection gets the n-th step
    of SCRIPT (after the speaker's OPEN), then everything it sends back is kept."""

    def __init__(self, host: topology.Host) -> None:
        self.host = host
        self.exchanges: list[Exchange] = []
        self.done = asyncio.Event()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Rogue]:
        sock = netns.socket_factory(self.host.ns.name)(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host.ipv4, 179))
        server = await asyncio.start_server(self._serve, sock=sock)
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.exchanges)
        exchange = Exchange(time.monotonic())
        self.exchanges.append(exchange)
        try:
            if index >= len(SCRIPT):
                return
            header = await reader.readexactly(19)  # the speaker's OPEN
            (length,) = struct.unpack_from("!H", header, 16)
            await reader.readexactly(length - 19)
            await SCRIPT[index][1](reader, writer)
            async with asyncio.timeout(5):
                exchange.received = await reader.read()  # until the speaker closes
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
            exchange.received += f" [{e!r}]".encode()
        finally:
            exchange.closed = time.monotonic()
            writer.close()
            if index + 1 == len(SCRIPT):
                self.done.set()


async def test_a_peer_sending_garbage_gets_notifications_and_backoff_and_nothing_else_moves(
    lab: BgpChaos, admin: k8s.Client, namespace: str
) -> None:
    routes = await routed_services(admin, lab, namespace)
    before = await asyncio.to_thread(lab.connections)
    rogue = Rogue(lab.client)
    rogue_peer = bgp_peer(
        "rogue",
        lab.client.ipv4,
        ROGUE_AS,
        nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "node-1"}}],
    )
    async with rogue.serving():
        kube.apply(lab.cluster, rogue_peer)
        try:
            async with asyncio.timeout(40):
                await rogue.done.wait()
        finally:
            lab.cluster.kubectl("delete", "bgppeer", "rogue", "-n", kube.CONFIG_NS)
    exchanges = rogue.exchanges[: len(SCRIPT)]
    for (what, _, expected), exchange in zip(SCRIPT, exchanges, strict=True):
        assert notifications(exchange.received) == [expected], f"{what}: {exchange.received!r}"
    assert f"BGP session with {lab.client.ipv4} established" in lab.speakers[1].log_text()
    # Backoff: each drop waits twice as long as the one before (1 s, 2 s, 4 s, 8 s with 50-100 %
    # jitter), also after the session that reached Established (defect: reset to 1 s there).
    gaps = [b.opened - a.closed for a, b in itertools.pairwise(exchanges)]
    print("rogue peer: waits before each reconnection " + ", ".join(f"{g:.2f} s" for g in gaps))
    for k, gap in enumerate(gaps):
        assert gap >= 0.4 * 2**k, f"reconnected after {gap:.2f} s (waits {gaps})"
    # Nothing else moved: no session with FRR dropped, every route still there.
    assert await asyncio.to_thread(lab.connections) == before
    assert await asyncio.to_thread(lab.routes) == routes
    lab.assert_speakers_alive()
