"""BGP end to end: three node namespaces each running a speaker as its node, the controller, the
real API server, and FRR, GoBGP or BIRD (Debian's packages) in the router namespace, with a
remote client behind the router. Configuration is applied as MetalLB users write it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ironlb.bgp import bfd, families, fsm
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, routers, topology
from support import kube

pytestmark = pytest.mark.e2e

NODES = (1, 2, 3)
ROUTER_AS, NODE_AS = 64500, 64510
V4, V6 = families.Family.IPV4_UNICAST, families.Family.IPV6_UNICAST
POOL = kube.pool("routed", *topology.BGP_POOL, module="test_bgp")


def peer(name: str, address: str, my_asn: int, peer_asn: int, **spec: Any) -> k8s.Obj:
    return {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": name, "namespace": kube.CONFIG_NS},
        "spec": {
            "myASN": my_asn,
            "peerASN": peer_asn,
            "peerAddress": address,
            "holdTime": "9s",
            "connectTime": "2s",
            **spec,
        },
    }


def advertisement(name: str, **spec: Any) -> k8s.Obj:
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "BGPAdvertisement",
        "metadata": {"name": name, "namespace": kube.CONFIG_NS},
        "spec": {"ipAddressPools": ["routed"], **spec},
    }


@dataclass
class BgpLab:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    router_host: topology.Host
    remote: topology.Host
    speakers: dict[int, components.Process] = field(default_factory=dict)
    others: list[components.Process] = field(default_factory=list)
    router: routers.Router | None = None
    applied: list[k8s.Obj] = field(default_factory=list)

    def start_router(
        self,
        kind: str,
        node_asn: int = NODE_AS,
        *,
        password: str = "",
        bfd_profile: bfd.Profile | None = None,
    ) -> routers.Router:
        """The router (AS ROUTER_AS) peering with every node address (AS `node_asn`)."""
        if self.router is not None:
            self.router.stop()
        profiles = {"fast": bfd_profile} if bfd_profile else {}
        neighbors = tuple(
            routers.Neighbor(
                address,
                node_asn,
                password=password,
                bfd_profile="fast" if bfd_profile else "",
            )
            for h in self.hosts.values()
            for address in (h.ipv4, h.ipv6)
        )
        self.router = routers.ROUTERS[kind](
            self.router_host, self.cluster.lab.workdir / f"router-{kind}"
        )
        self.router.start(routers.RouterConfig(ROUTER_AS, neighbors, bfd_profiles=profiles))
        return self.router

    def apply(self, *docs: k8s.Obj) -> None:
        kube.apply(self.cluster, *docs)
        self.applied += docs

    def remove_config(self) -> None:
        for doc in reversed(self.applied):
            self.cluster.kubectl(
                "delete",
                doc["kind"].lower(),
                doc["metadata"]["name"],
                "-n",
                kube.CONFIG_NS,
                "--ignore-not-found",
            )
        self.applied.clear()

    def established(self) -> dict[str, fsm.State] | None:
        assert self.router is not None
        states = self.router.neighbors()
        wanted = {a for h in self.hosts.values() for a in (h.ipv4, h.ipv6)}
        ok = all(states.get(a) is fsm.State.ESTABLISHED for a in wanted)
        return states if ok else None


@pytest.fixture(scope="module")
def bgplab(cluster: lab_cluster.Cluster) -> Iterator[BgpLab]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    router = cluster.lab.add_router()
    lab = BgpLab(cluster, hosts, router, cluster.lab.hosts["remote"])
    try:
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
            lab.others.append(components.start_backend(cluster, host))
        lab.others.append(components.start_controller(cluster))
        kube.apply(cluster, POOL)
        for i in NODES:
            lab.speakers[i] = components.start_speaker(cluster, i, wait=False)
        for proc in lab.speakers.values():
            proc.wait_ready()
        yield lab
    finally:
        if lab.router is not None:
            lab.router.stop()
        for proc in [*lab.speakers.values(), *lab.others]:
            proc.kill()
        lab.remove_config()
        cluster.kubectl(
            "delete", "ipaddresspool", "routed", "-n", kube.CONFIG_NS, "--ignore-not-found"
        )
        components.uninstall_webhook(cluster)
        for role in ("remote", "router", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


@pytest.fixture
def bgp(bgplab: BgpLab) -> Iterator[BgpLab]:
    """The module's lab, with this test's BGP configuration removed afterwards."""
    yield bgplab
    bgplab.remove_config()


async def lb_service(
    admin: k8s.Client,
    lab: BgpLab,
    namespace: str,
    name: str,
    nodes: list[str] | None = None,
    **spec: Any,
) -> list[str]:
    await admin.create(k8s.SERVICES, kube.service(name, **spec), namespace)
    components.endpoints(lab.cluster, namespace, name, nodes or [f"node-{i}" for i in NODES])
    return await kube.eventually(lambda: kube.ingress(admin, namespace, name))


def route(
    router: routers.Router, family: families.Family, prefix: str, paths: int | None = None
) -> list[routers.Path] | None:
    found = router.routes(family).get(prefix)
    if not found or (paths is not None and len(found) != paths):
        return None
    return found


def gone(router: routers.Router, family: families.Family, prefix: str) -> bool:
    return prefix not in router.routes(family)


def wait(check: Any, what: str, within: float = 20.0) -> Any:
    return routers.wait_until(check, within, what)


@pytest.mark.parametrize("mode", ["ebgp", "ibgp"])
@pytest.mark.parametrize("kind", sorted(routers.ROUTERS))
async def test_service_routes_reach_the_router_with_their_attributes(
    bgp: BgpLab, admin: k8s.Client, namespace: str, kind: str, mode: str
) -> None:
    my_asn = NODE_AS if mode == "ebgp" else ROUTER_AS
    router = await asyncio.to_thread(bgp.start_router, kind, my_asn)
    local_pref = {"localPref": 200} if mode == "ibgp" else {}
    bgp.apply(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "Community",
            "metadata": {"name": "aliases", "namespace": kube.CONFIG_NS},
            "spec": {"communities": [{"name": "gold", "value": "65000:300"}]},
        },
        peer("router-v4", topology.lan_addresses(topology.HOST_ROUTER)[0], my_asn, ROUTER_AS),
        peer("router-v6", topology.lan_addresses(topology.HOST_ROUTER)[1], my_asn, ROUTER_AS),
        advertisement("hosts", communities=["65000:100", "gold", "large:65000:1:2"], **local_pref),
        advertisement("aggregate", aggregationLength=24, aggregationLengthV6=120),
    )
    await asyncio.to_thread(wait, bgp.established, f"{kind} sessions with three speakers")
    v4, v6 = await lb_service(
        admin, bgp, namespace, "web", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]
    )
    multi = 3 if kind != "bird" or mode == "ebgp" else None  # BIRD shows iBGP's best path only
    paths = await asyncio.to_thread(
        wait, lambda: route(router, V4, f"{v4}/32", multi), f"{v4}/32 in {kind}"
    )
    hops = {p.next_hop for p in paths}
    assert hops <= {h.ipv4 for h in bgp.hosts.values()}
    best = paths[0]
    assert best.communities == {"65000:100", "65000:300"}
    assert best.large_communities == {"65000:1:2"}
    if mode == "ibgp":
        assert best.local_pref == 200
        assert best.as_path == ()
    else:
        assert best.as_path == (NODE_AS,)
    # Aggregation: the /24 (and the IPv6 /120) travel without the host route's communities.
    aggregate = await asyncio.to_thread(
        wait, lambda: route(router, V4, "203.0.113.0/24"), "the aggregate"
    )
    assert aggregate[0].communities == frozenset()
    six = await asyncio.to_thread(
        wait, lambda: route(router, V6, f"{v6}/128"), f"{v6}/128 over MP-BGP"
    )
    assert {p.next_hop for p in six} <= {h.ipv6 for h in bgp.hosts.values()}
    assert await asyncio.to_thread(wait, lambda: route(router, V6, "2001:db8:100::/120"), "v6 agg")
    await admin.delete(k8s.SERVICES, "web", namespace)
    await asyncio.to_thread(wait, lambda: gone(router, V4, f"{v4}/32"), "the withdrawal")
    await asyncio.to_thread(wait, lambda: gone(router, V6, f"{v6}/128"), "the v6 withdrawal")


@pytest.mark.parametrize("kind", sorted(routers.ROUTERS))
async def test_md5_sessions_and_a_wrong_password_that_fails_cleanly(
    bgp: BgpLab, admin: k8s.Client, namespace: str, kind: str
) -> None:
    await asyncio.to_thread(bgp.start_router, kind, password="s3cret-md5")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {"name": "router-md5", "namespace": kube.CONFIG_NS},
        "stringData": {"password": "s3cret-md5"},
    }
    bgp.apply(
        secret,
        peer(
            "router-v4",
            topology.lan_addresses(topology.HOST_ROUTER)[0],
            NODE_AS,
            ROUTER_AS,
            passwordSecret={"name": "router-md5"},
        ),
        advertisement("hosts"),
    )
    router = bgp.router
    assert router is not None
    (ip,) = await lb_service(admin, bgp, namespace, "secured")
    await asyncio.to_thread(wait, lambda: route(router, V4, f"{ip}/32", 3), "routes over MD5")
    # The wrong password: the sessions go down and stay down, the speakers carry on.
    bgp.apply(
        peer(
            "router-v4",
            topology.lan_addresses(topology.HOST_ROUTER)[0],
            NODE_AS,
            ROUTER_AS,
            password="not-it",
        )
    )
    await asyncio.to_thread(wait, lambda: gone(router, V4, f"{ip}/32"), "routes gone")
    await asyncio.sleep(3)
    states = router.neighbors()
    assert all(states.get(h.ipv4) is not fsm.State.ESTABLISHED for h in bgp.hosts.values())
    assert all(p.alive for p in bgp.speakers.values())
    up = bgp.speakers[1].metric(
        "metallb_bgp_session_up", f'peer="{topology.lan_addresses(topology.HOST_ROUTER)[0]}"'
    )
    assert up in (0, None)


async def test_frr_installs_ecmp_and_the_remote_client_reaches_the_service(
    bgp: BgpLab, admin: k8s.Client, namespace: str
) -> None:
    router = await asyncio.to_thread(bgp.start_router, "frr")
    assert isinstance(router, routers.Frr)
    bgp.apply(
        peer("router-v4", topology.lan_addresses(topology.HOST_ROUTER)[0], NODE_AS, ROUTER_AS),
        advertisement("hosts"),
    )
    (ip,) = await lb_service(admin, bgp, namespace, "spread")
    hops = await asyncio.to_thread(
        wait, lambda: h if len(h := router.fib_routes(ip)) == 3 else None, "an ECMP route"
    )
    assert set(hops) == {h.ipv4 for h in bgp.hosts.values()}
    answer = await asyncio.to_thread(topology.answer, bgp.remote, ip, 10.0)
    assert answer in {f"node-{i}" for i in NODES}

    # The ServiceBGPStatus of each node (written in the background) lists the peer.
    async def statuses() -> list[tuple[str, list[str]]] | None:
        items, _ = await admin.list_all(k8s.SERVICE_BGP_STATUSES, kube.CONFIG_NS)
        found = sorted(
            (i["status"]["node"], i["status"].get("peers", []))
            for i in items
            if i.get("status", {}).get("serviceName") == "spread"
        )
        return found if len(found) == len(NODES) else None

    found = await kube.eventually(statuses)
    assert found == [(f"node-{i}", ["router-v4"]) for i in NODES]


async def test_local_policy_is_advertised_only_by_the_node_with_the_endpoint(
    bgp: BgpLab, admin: k8s.Client, namespace: str
) -> None:
    router = await asyncio.to_thread(bgp.start_router, "frr")
    bgp.apply(
        peer("router-v4", topology.lan_addresses(topology.HOST_ROUTER)[0], NODE_AS, ROUTER_AS),
        advertisement("hosts"),
    )
    (ip,) = await lb_service(
        admin, bgp, namespace, "local", nodes=["node-2"], externalTrafficPolicy="Local"
    )
    paths = await asyncio.to_thread(wait, lambda: route(router, V4, f"{ip}/32"), "the route")
    await asyncio.sleep(1.0)  # would another node add a path?
    paths = router.routes(V4)[f"{ip}/32"]
    assert [p.next_hop for p in paths] == [bgp.hosts[2].ipv4]
    assert await asyncio.to_thread(topology.answer, bgp.remote, ip, 10.0) == "node-2"


async def test_bfd_with_frr_drops_a_dead_node_within_the_detection_time(
    bgp: BgpLab, admin: k8s.Client, namespace: str
) -> None:
    profile = bfd.Profile(receive_interval=100, transmit_interval=100, detect_multiplier=3)
    router = await asyncio.to_thread(bgp.start_router, "frr", bfd_profile=profile)
    assert isinstance(router, routers.Frr)
    bgp.apply(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "BFDProfile",
            "metadata": {"name": "fast", "namespace": kube.CONFIG_NS},
            "spec": {"receiveInterval": 100, "transmitInterval": 100, "detectMultiplier": 3},
        },
        peer(
            "router-v4",
            topology.lan_addresses(topology.HOST_ROUTER)[0],
            NODE_AS,
            ROUTER_AS,
            bfdProfile="fast",
            holdTime="30s",
        ),
        advertisement("hosts"),
    )
    (ip,) = await lb_service(admin, bgp, namespace, "detected")
    await asyncio.to_thread(wait, lambda: len(router.fib_routes(ip)) == 3, "ECMP over 3 nodes")
    nodes_v4 = {h.ipv4 for h in bgp.hosts.values()}

    def bfd_up() -> bool:
        peers = router.bfd_peers()
        return all(peers.get(a, ("",))[0] == "up" for a in nodes_v4)

    await asyncio.to_thread(wait, bfd_up, "BFD up with the three nodes")
    victim = bgp.hosts[3]
    # Silence first, then the kill: a speaker killed on a live link would close its TCP
    # session (FIN) and FRR would learn of it without BFD.
    started = time.monotonic()
    victim.ns.ip("link", "set", "eth0", "down")
    bgp.speakers.pop(3).kill()
    try:
        await asyncio.to_thread(
            wait, lambda: victim.ipv4 not in router.fib_routes(ip), "the dead next hop gone", 5
        )
        elapsed = time.monotonic() - started
        print(
            f"FRR dropped the dead node's next hop after {elapsed * 1000:.0f} ms "
            "(BFD 100 ms x 3, hold time 30 s)"
        )
        # Detection time 300 ms; the bound leaves room for a loaded 2-CPU machine. The precise
        # figures are bench/bgp.py's.
        assert elapsed < 1.5
    finally:
        victim.ns.ip("link", "set", "eth0", "up")
        bgp.speakers[3] = components.start_speaker(bgp.cluster, 3)


async def test_pod_cidrs_follow_the_node_object(bgp: BgpLab) -> None:
    """--advertise-pod-cidrs (issue 15): node-1's PodCIDRs, IPv4 and IPv6, reach the router via
    node-1 with the configured community, installed in its kernel table; the other speakers
    (without the flag) advertise none. Deleting the Node object withdraws them while the
    sessions stay up; a Node registered again without podCIDRs advertises none until they are
    assigned (as the controller-manager does after registration), then both come back."""
    router = await asyncio.to_thread(bgp.start_router, "frr")
    assert isinstance(router, routers.Frr)
    v4_router, v6_router = topology.lan_addresses(topology.HOST_ROUTER)
    bgp.apply(
        peer("router-v4", v4_router, NODE_AS, ROUTER_AS),
        peer("router-v6", v6_router, NODE_AS, ROUTER_AS),
    )
    host = bgp.hosts[1]
    bgp.speakers.pop(1).kill()
    flags = (
        "--advertise-pod-cidrs",
        "--pod-cidr-peers=router-v4,router-v6",
        "--pod-cidr-communities=65000:15",
    )
    bgp.speakers[1] = await asyncio.to_thread(components.start_speaker, bgp.cluster, 1, extra=flags)
    v4, v6 = topology.pod_cidrs(1)

    def both_routes() -> bool:
        a, b = route(router, V4, v4), route(router, V6, v6)
        return a is not None and b is not None

    try:
        await asyncio.to_thread(wait, bgp.established, "sessions with three speakers")
        await asyncio.to_thread(wait, both_routes, "node-1's PodCIDRs in FRR")
        (path,) = router.routes(V4)[v4]
        assert path.next_hop == host.ipv4
        assert path.communities == {"65000:15"}
        assert path.as_path == (NODE_AS,)
        (path6,) = router.routes(V6)[v6]
        assert path6.next_hop == host.ipv6
        assert path6.communities == {"65000:15"}
        assert await asyncio.to_thread(wait, lambda: router.fib_routes(v4), "kernel route") == (
            host.ipv4,
        )
        for i in (2, 3):  # no flag, no PodCIDR
            for family, cidr in zip((V4, V6), topology.pod_cidrs(i), strict=True):
                assert gone(router, family, cidr)

        # The Node object goes: its PodCIDRs are withdrawn, the sessions stay.
        started = time.monotonic()
        bgp.cluster.kubectl("delete", "node", "node-1", "--wait=false")
        await asyncio.to_thread(
            wait, lambda: gone(router, V4, v4) and gone(router, V6, v6), "the withdrawal", 10
        )
        print(f"PodCIDRs withdrawn {time.monotonic() - started:.2f} s after the Node deletion")
        assert not router.fib_routes(v4)
        states = router.neighbors()
        assert states[host.ipv4] is fsm.State.ESTABLISHED
        assert states[host.ipv6] is fsm.State.ESTABLISHED

        # Registered again, without podCIDRs: nothing, for longer than the withdrawal took.
        await asyncio.to_thread(components.register_node, bgp.cluster, 1, host, pod_cidrs=False)
        await asyncio.sleep(3.0)
        assert gone(router, V4, v4)
        assert gone(router, V6, v6)
        # The PodCIDRs are assigned: both come back.
        await asyncio.to_thread(components.register_node, bgp.cluster, 1, host)
        await asyncio.to_thread(wait, both_routes, "node-1's PodCIDRs again")
        assert [p.next_hop for p in router.routes(V4)[v4]] == [host.ipv4]
    finally:
        await asyncio.to_thread(components.register_node, bgp.cluster, 1, host)
        bgp.speakers.pop(1).kill()
        bgp.speakers[1] = await asyncio.to_thread(components.start_speaker, bgp.cluster, 1)
