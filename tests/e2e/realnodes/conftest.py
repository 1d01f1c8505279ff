"""Real nodes: kubelet + containerd + kube-proxy per node, ironlb installed from its image.

One cluster per test module (a cluster costs tens of seconds): `real_lab()` builds it, with a LAN
client, a router (FRR, peering with every node) and a remote client behind it, and, unless told
otherwise, ironlb installed by its Helm chart and the demo Deployment and Service applied.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ironlb.lab import netns, nodes, playground, routers, topology

ROUTER_AS, NODE_AS = playground.ROUTER_AS, playground.NODE_AS


@dataclass
class RealLab:
    rc: nodes.RealCluster
    client: topology.Host
    remote: topology.Host
    router: routers.Frr
    install_seconds: float = 0.0

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.rc.kubectl(*args, stdin=stdin, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def ingress(self, namespace: str, name: str) -> list[str]:
        """The Service's LoadBalancer addresses ([] if there is no such Service)."""
        out = self.kubectl("get", "service", name, "-n", namespace, "-o", "json", check=False)
        if not out:
            return []
        svc = json.loads(out)
        found = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [i["ip"] for i in found if "ip" in i]

    def announcers(self, namespace: str, name: str) -> set[str]:
        """Nodes whose speaker says (ServiceL2Status) it announces Service `name`."""
        statuses = self.json(
            "servicel2statuses",
            "-n",
            "metallb-system",
            "-l",
            f"metallb.io/service-name={name},metallb.io/service-namespace={namespace}",
        )
        return {s["metadata"]["labels"]["metallb.io/node"] for s in statuses["items"]}

    def bgp_next_hops(self, ip: str) -> set[str]:
        """Next hops the router has for `ip`/32 (one per announcing node, ECMP)."""
        table = self.router.routes(routers.families.Family.IPV4_UNICAST)
        return {p.next_hop for p in table.get(f"{ip}/32", [])}

    def node_of_ip(self, address: str) -> str:
        for node in self.rc.nodes.values():
            if node.host.ipv4 == address:
                return node.name
        raise KeyError(address)

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("pods", "-n", namespace, "-l", selector)["items"]
        return items


def wait(probe: Any, within: float, what: str, interval: float = 0.2) -> Any:
    """Poll `probe` until truthy (bounded); the last value in the failure message."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within:g} s (last: {value!r})")
        time.sleep(interval)


def udp_ask(host: topology.Host, ip: str, port: int, timeout: float = 0.5) -> str | None:
    """One datagram to ip:port from `host`; the answer, or None."""
    with netns.entered(host.ns.name):
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(timeout)
        try:
            s.sendto(b"ping", (ip, port))
            return s.recv(512).decode().strip()
        except OSError:
            return None


def udp_answer(host: topology.Host, ip: str, port: int, within: float = 10.0) -> str | None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = udp_ask(host, ip, port)
        if found:
            return found
    return None


@contextlib.contextmanager
def real_lab(
    workdir: Path,
    *,
    node_count: int = 3,
    install: bool = True,
    values: tuple[str, ...] = (),
    pods_by_bgp: bool = False,
    cluster_cidr: str = nodes.CLUSTER_CIDR,
    timeout: float = 180.0,
) -> Iterator[RealLab]:
    """`pods_by_bgp`: the router gets no static routes to the pod networks and peers with the
    nodes through peer-groups with a listen range per family (the PodCIDRs come over BGP)."""
    rc = nodes.RealCluster.start(
        workdir, node_count=node_count, cluster_cidr=cluster_cidr, timeout=timeout
    )
    frr: routers.Frr | None = None
    try:
        c = rc.cluster
        client = c.lab.add_client()
        router_host = c.lab.add_router()
        frr = routers.Frr(router_host, workdir / "frr")
        if pods_by_bgp:
            groups = (
                routers.ListenRange("NODES", str(topology.LAN_V4), NODE_AS),
                routers.ListenRange("NODES6", str(topology.LAN_V6), NODE_AS),
            )
            frr.start(routers.RouterConfig(ROUTER_AS, listen_ranges=groups))
        else:
            rc.route_pod_networks(router_host)
            frr.start(
                routers.RouterConfig(
                    ROUTER_AS,
                    tuple(routers.Neighbor(n.host.ipv4, NODE_AS) for n in rc.nodes.values()),
                )
            )
        lab = RealLab(rc, client, c.lab.hosts["remote"], frr)
        print(f"\ncluster of {node_count} real nodes Ready in {rc.ready_seconds:.1f} s")
        if install:
            lab.install_seconds = rc.install_ironlb(*values)
            print(f"chart installed, every pod Ready, in {lab.install_seconds:.1f} s")
        yield lab
    finally:
        if frr is not None:
            frr.stop()
        rc.stop()


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLab]:
    """A 3-node cluster with ironlb installed by Helm (chart defaults, lab image)."""
    with real_lab(tmp_path_factory.mktemp("real")) as lab:
        yield lab
