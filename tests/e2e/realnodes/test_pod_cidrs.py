"""PodCIDRs over BGP on real nodes (issue 15): kube-controller-manager assigns each node a PodCIDR
(`--allocate-node-cidrs`), the bridge CNI routes pods natively (no encapsulation), ironlb is
installed by its chart with `speaker.podCIDRs.enabled=true`, and FRR accepts the nodes through a
peer-group with a `bgp listen range` and has no static route to any pod network: whatever it
knows of the pods it learnt over BGP.

IPv4 only: the real-node lab is single-stack (its kubelets register IPv4 InternalIPs, the API
server has IPv4 Service CIDRs, kube-proxy runs IPv4); IPv6 PodCIDRs are covered by the process
lab (tests/e2e/test_bgp.py::test_pod_cidrs_follow_the_node_object) and the unit tests.

The tests share one cluster and run in file order: the last one kills a node.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest

from ironlb.bgp import families, fsm
from ironlb.lab import playground

from .conftest import RealLab, real_lab, wait

pytestmark = pytest.mark.e2e

V4 = families.Family.IPV4_UNICAST
HOLD_TIME = 3.0
"""FRR proposes 3 s (`routers.RouterConfig.hold_time`), the BGPPeer 9 s: the smaller wins."""


@pytest.fixture(scope="module")
def real_pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLab]:
    """Three real nodes, FRR with a listen range and no pod routes; ironlb not yet installed."""
    with real_lab(tmp_path_factory.mktemp("pods"), install=False, pods_by_bgp=True) as lab:
        yield lab


def pod_routes(lab: RealLab) -> dict[str, set[str]]:
    """PodCIDR -> next hops in FRR's RIB, for every node's PodCIDR it holds."""
    table = lab.router.routes(V4)
    cidrs = {n.pod_cidr for n in lab.rc.nodes.values()}
    return {p: {path.next_hop for path in paths} for p, paths in table.items() if p in cidrs}


def expected(lab: RealLab, *, without: int | None = None) -> dict[str, set[str]]:
    return {str(n.pod_cidr): {n.host.ipv4} for i, n in lab.rc.nodes.items() if i != without}


def test_router_learns_each_pod_cidr_via_its_node(real_pods: RealLab) -> None:
    lab = real_pods
    # Before ironlb: the router knows no pod network (no static route, nothing learnt), so the
    # checks below can only pass through BGP.
    assert pod_routes(lab) == {}
    for node in lab.rc.nodes.values():
        assert node.pod_cidr is not None
        assert lab.router.fib_routes(node.pod_cidr) == ()
    install = lab.rc.install_ironlb("--set", "speaker.podCIDRs.enabled=true")
    print(f"chart installed, every pod Ready, in {install:.1f} s")
    playground.apply_demo(lab.rc)  # the lab's BGPPeer (deploy/examples/lab-bgp.yaml), the demo

    def sessions() -> bool:
        states = lab.router.neighbors()
        return all(states.get(n.host.ipv4) is fsm.State.ESTABLISHED for n in lab.rc.nodes.values())

    wait(sessions, 60, "the nodes' sessions through the listen range")
    want = expected(lab)
    wait(lambda: pod_routes(lab) == want, 30, f"FRR's RIB holding {want}")
    for cidr, hops in want.items():
        assert lab.router.fib_routes(cidr) == tuple(sorted(hops)), cidr
        (path,) = lab.router.routes(V4)[cidr]
        assert path.as_path == (playground.NODE_AS,)


def test_remote_client_reaches_pods_directly(real_pods: RealLab) -> None:
    """TCP from behind the router to each demo pod's own address (no Service): the router
    forwards on the BGP route to the pod's node, the node to its bridge."""
    lab = real_pods
    pods = wait(
        lambda: [p for p in lab.pods("default", "app=demo") if p["status"].get("podIP")],
        60,
        "demo pods with addresses",
    )
    answered = {}
    for pod in pods:
        ip, node = pod["status"]["podIP"], pod["spec"]["nodeName"]
        cidr = next(n.pod_cidr for n in lab.rc.nodes.values() if n.name == node)
        assert cidr is not None
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(cidr), (ip, cidr)
        body = wait(
            lambda ip=ip: lab.remote.ns.http_get(f"http://{ip}:8080/", timeout=1.0),
            15,
            f"an answer from pod {ip} on {node}",
        )
        answered[ip] = body.strip()
        assert answered[ip] == node
    print(f"remote client answered by {len(answered)} pods: {answered}")


def test_a_dead_nodes_pod_cidr_is_withdrawn_within_the_hold_time(real_pods: RealLab) -> None:
    lab = real_pods
    victim = lab.rc.nodes[3]
    cidr = victim.pod_cidr
    assert cidr is not None
    assert pod_routes(lab) == expected(lab)
    started = time.monotonic()
    lab.rc.kill_node(3)  # link down, then SIGKILL: no NOTIFICATION, no FIN reaches the router
    wait(lambda: cidr not in pod_routes(lab), HOLD_TIME + 5, f"{cidr} withdrawn", interval=0.05)
    elapsed = time.monotonic() - started
    print(f"dead node-3's PodCIDR withdrawn by FRR after {elapsed:.2f} s (hold time 3 s)")
    assert lab.router.fib_routes(cidr) == ()
    # The hold timer bounds it; the margin is for polling vtysh on a busy 2-CPU machine.
    assert elapsed < HOLD_TIME + 1.5
    # The other nodes keep theirs.
    assert pod_routes(lab) == expected(lab, without=3)
