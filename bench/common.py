"""What the benchmark scripts share: a lab cluster for the run, and percentiles."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, topology

# The benches reuse the tests' traffic helpers (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def cluster() -> Iterator[lab_cluster.Cluster]:
    """A fresh lab cluster (API server on its control-plane host), this thread inside it."""
    with tempfile.TemporaryDirectory(prefix="ironlb-bench-") as tmp:
        c = lab_cluster.Cluster.start(Path(tmp))
        try:
            with netns.entered(c.ctl.ns.name):
                yield c
        finally:
            c.stop()


ROUTER_AS, NODE_AS = 64500, 64510
"""The BGP benches' router (FRR) and nodes."""


def router_peer(hold: str = "3s", bfd_profile: str = "", **extra: str) -> k8s.Obj:
    """The BGPPeer every node of a BGP bench has: the lab's router, eBGP."""
    spec = {
        "myASN": NODE_AS,
        "peerASN": ROUTER_AS,
        "holdTime": hold,
        **extra,
        "peerAddress": topology.lan_addresses(topology.HOST_ROUTER)[0],
    }
    if bfd_profile:
        spec["bfdProfile"] = bfd_profile
    return {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "router", "namespace": lab_cluster.CONFIG_NAMESPACE},
        "spec": spec,
    }


def layer2_service(
    c: lab_cluster.Cluster, nodes: tuple[int, ...]
) -> tuple[dict[int, topology.Host], topology.Host, list[components.Process]]:
    """The layer-2 benches' lab: `nodes` registered, each with a backend, a controller, the lab
    pool and L2Advertisement, and Service default/bench with an endpoint on every node (no
    speaker yet). Returns the node hosts, a LAN client and the processes started."""
    hosts = {i: c.lab.add_node(i) for i in nodes}
    client = c.lab.add_client()
    procs: list[components.Process] = []
    for i, host in hosts.items():
        components.register_node(c, i, host)
        procs.append(components.start_backend(c, host))
    procs.append(components.start_controller(c))
    c.kubectl("apply", "-f", str(lab_cluster.DEPLOY / "examples" / "lab-l2.yaml"))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "bench"},
            "ports": [{"port": 80, "targetPort": topology.BACKEND_PORT}],
        },
    }
    c.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(service))
    components.endpoints(c, "default", "bench", [f"node-{i}" for i in nodes])
    return hosts, client, procs
