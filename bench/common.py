"""What the benchmark scripts share: a lab cluster for the run, and percentiles."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import netns, topology

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
