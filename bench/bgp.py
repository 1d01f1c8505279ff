"""BGP benchmark in the lab with FRR (Debian's package) as the router.

(a) Announce latency: Services are created (1 000, --quick 100) at 50 a second at most; for each,
    the time from a watch seeing its status.loadBalancer.ingress to FRR having installed the
    route in the router's kernel table with all three nodes' next hops (full ECMP, not the first
    path), taken from `ip -ts monitor route` in the router namespace, so FRR's RIB and its zebra
    hand-off are both inside the figure. Every Service counts: one whose full route never appears
    (or that never got an address) within 60 s counts as 60 s, and their count is printed.
(b) Failure detection: a node goes silent (link down, then its speaker is killed: no FIN, no
    NOTIFICATION), and the time until FRR has removed its next hop from the ECMP route is taken,
    with BFD at 100 ms x 3 and 300 ms x 3 and without BFD (hold time 3 s), 5 rounds each
    (--quick 2), in steady state (the router is given ROUTER_SETTLE seconds after a restart:
    FRR ties BGP to BFD a moment after its configuration is loaded).

With `--metallb` (`make peers` builds it), (a) is run a second time by MetalLB v0.15.2 in its
native BGP mode (`ironlb.lab.metallb`: its own binaries, the same BGPPeer, pool and
BGPAdvertisement, the same router), after ironlb's speakers and controller were stopped, the
Services deleted and every route of the pool gone from the router; the two are printed side by
side. (MetalLB's native mode has no BFD, so (b) is ironlb's alone.)

Last line: `bgp_announce_p99_ms: <p99 of (a), ironlb> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime

import yaml

import common
from ironlb.bgp import bfd
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, metallb, routers, topology

NODES = (1, 2, 3)
ROUTER_AS, NODE_AS = common.ROUTER_AS, common.NODE_AS
ROUTER_SETTLE = 3.0
TIMEOUT = 60.0
POOL_CIDR = "198.18.96.0/22"  # 1 024 addresses away from the lab LANs
NS = "bench"
CONFIG = lab_cluster.CONFIG_NAMESPACE


class RouteMonitor:
    """When each prefix first appears in the router's kernel table (`ip -ts monitor route`), and
    when it first has `paths` next hops. A multipath route is printed with one indented
    `nexthop via` line per path (also when it uses a nexthop group), a single path inline."""

    LINE = re.compile(r"^\[(?P<ts>[^\]]+)\]\s+(?P<prefix>\d+\.\d+\.\d+\.\d+)\s(?P<rest>.*)")
    VIA = re.compile(r"\bvia (?P<hop>\S+)")

    def __init__(self, router: topology.Host, paths: int) -> None:
        self.paths = paths
        self.first_seen: dict[str, float] = {}
        self.full_seen: dict[str, float] = {}
        self._proc = subprocess.Popen(
            router.ns.argv(["ip", "-ts", "monitor", "route"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        prefix, ts, hops = "", 0.0, set()
        for line in self._proc.stdout:
            if not line[:1].isspace():
                # A new event; a deletion ("[ts] Deleted ...") or another kind ends the last.
                m = self.LINE.match(line)
                prefix = m["prefix"] if m else ""
                if not prefix:
                    continue
                ts = datetime.fromisoformat(m["ts"]).timestamp()  # type: ignore[index]
                self.first_seen.setdefault(prefix, ts)
                hops = set(self.VIA.findall(m["rest"]))  # type: ignore[index]
            elif prefix and line.lstrip().startswith("nexthop"):
                hops.update(self.VIA.findall(line))
            else:
                continue
            if len(hops) >= self.paths:
                self.full_seen.setdefault(prefix, ts)

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait(5)


class Bench:
    def __init__(self, c: lab_cluster.Cluster) -> None:
        self.c = c
        self.hosts = {i: c.lab.add_node(i) for i in NODES}
        self.router_host = c.lab.add_router()
        self.procs: list[components.Process] = []
        self.speakers: dict[int, components.Process] = {}
        for i, host in self.hosts.items():
            components.register_node(c, i, host)
        self.procs.append(components.start_controller(c, webhook=False))
        self.start_speakers(NODES)
        self.frr = routers.Frr(self.router_host, c.lab.workdir / "frr")
        self.bfd = False
        c.kubectl("create", "namespace", NS)
        self.apply(
            {
                "apiVersion": "metallb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": "bench", "namespace": CONFIG},
                "spec": {"addresses": [POOL_CIDR], "serviceAllocation": {"namespaces": [NS]}},
            },
            {
                "apiVersion": "metallb.io/v1beta1",
                "kind": "BGPAdvertisement",
                "metadata": {"name": "bench", "namespace": CONFIG},
                "spec": {"ipAddressPools": ["bench"]},
            },
        )

    def apply(self, *docs: k8s.Obj) -> None:
        self.c.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def start_speakers(self, indexes: tuple[int, ...]) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(self.c, i, wait=False)
        for i in indexes:
            self.speakers[i].wait_ready()

    def peer(self, bfd_profile: str = "", hold: str = "3s") -> None:
        self.apply(common.router_peer(hold, bfd_profile))

    def router(self, profile: bfd.Profile | None) -> None:
        self.frr.stop()
        neighbors = tuple(
            routers.Neighbor(h.ipv4, NODE_AS, bfd_profile="p" if profile else "")
            for h in self.hosts.values()
        )
        self.frr.start(
            routers.RouterConfig(
                ROUTER_AS, neighbors, bfd_profiles={"p": profile} if profile else {}
            )
        )
        routers.wait_until(
            lambda: (
                all(s.name == "ESTABLISHED" for s in self.frr.neighbors().values())
                and len(self.frr.neighbors()) == 3
            ),
            30,
            "three sessions",
        )

    # --- (a) ---------------------------------------------------------------------------------

    async def announce_latency(self, count: int) -> tuple[list[float], int, int]:
        """Every Service's latency (ms); how many never showed an address, and how many never
        had their full route (both counted as TIMEOUT)."""
        monitor = RouteMonitor(self.router_host, len(NODES))
        status_seen: dict[str, tuple[str, float]] = {}
        try:
            async with k8s.Client.from_config(self.c.control_plane.admin_kubeconfig) as admin:
                _, rv = await admin.list_all(k8s.SERVICES, NS)

                async def watch() -> None:
                    async for ev in admin.watch(k8s.SERVICES, rv, NS, timeout_seconds=600):
                        if ev.type == "BOOKMARK":
                            continue
                        ingress = ((ev.object.get("status") or {}).get("loadBalancer") or {}).get(
                            "ingress"
                        ) or []
                        name = ev.object["metadata"]["name"]
                        if ingress and name not in status_seen:
                            status_seen[name] = (ingress[0]["ip"], time.time())

                async with asyncio.TaskGroup() as tg:
                    watcher = tg.create_task(watch())
                    for i in range(count):
                        body = {
                            "metadata": {"name": f"s{i:04d}"},
                            "spec": {
                                "type": "LoadBalancer",
                                "allocateLoadBalancerNodePorts": False,
                                "ports": [{"port": 80, "protocol": "TCP"}],
                            },
                        }
                        await admin.create(k8s.SERVICES, body, NS)
                        slice_ = {
                            "metadata": {
                                "name": f"s{i:04d}-lab",
                                "labels": {"kubernetes.io/service-name": f"s{i:04d}"},
                            },
                            "addressType": "IPv4",
                            "endpoints": [
                                {
                                    "addresses": ["198.19.1.10"],
                                    "nodeName": "node-1",
                                    "conditions": {"ready": True},
                                }
                            ],
                        }
                        await admin.create(k8s.ENDPOINT_SLICES, slice_, NS)
                        await asyncio.sleep(0.02)  # a steady 50 Services a second at most
                    deadline = time.monotonic() + TIMEOUT

                    def done() -> bool:
                        return len(status_seen) >= count and all(
                            ip in monitor.full_seen for ip, _ in status_seen.values()
                        )

                    while not done() and time.monotonic() < deadline:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)  # the monitor thread fills first_seen
                    watcher.cancel()
        finally:
            monitor.close()
        latencies = [
            (monitor.full_seen[ip] - t) * 1000 if ip in monitor.full_seen else TIMEOUT * 1000
            for ip, t in status_seen.values()
        ]
        no_address = count - len(status_seen)
        no_route = sum(1 for ip, _ in status_seen.values() if ip not in monitor.full_seen)
        return latencies + [TIMEOUT * 1000] * no_address, no_address, no_route

    # --- (b) ---------------------------------------------------------------------------------

    def detection(self, ip: str, victim: int) -> float:
        host = self.hosts[victim]
        routers.wait_until(lambda: len(self.frr.fib_routes(ip)) == 3, 30, "three next hops")
        if self.bfd:
            nodes = {h.ipv4 for h in self.hosts.values()}
            routers.wait_until(
                lambda: all(self.frr.bfd_peers().get(a, ("",))[0] == "up" for a in nodes),
                30,
                "BFD up with every node",
            )
        started = time.monotonic()
        host.ns.ip("link", "set", "eth0", "down")
        self.speakers.pop(victim).kill()
        try:
            routers.wait_until(
                lambda: host.ipv4 not in self.frr.fib_routes(ip), 30, "the dead next hop gone"
            )
            return (time.monotonic() - started) * 1000
        finally:
            host.ns.ip("link", "set", "eth0", "up")
            self.start_speakers((victim,))

    def sessions_up(self) -> bool:
        neighbors = self.frr.neighbors()
        return len(neighbors) == len(NODES) and all(
            s.name == "ESTABLISHED" for s in neighbors.values()
        )

    def pool_routes(self) -> list[object]:
        """The router's kernel routes inside the bench pool."""
        routes = json.loads(self.router_host.ns.ip("-4", "-j", "route", "show", "root", POOL_CIDR))
        assert isinstance(routes, list)
        return routes

    async def delete_all(self) -> None:
        """Every Service and EndpointSlice of the bench namespace, 32 deletes at a time
        (`kubectl delete --all` deletes one after the other: minutes for 1 000 of each)."""
        async with k8s.Client.from_config(
            self.c.control_plane.admin_kubeconfig, max_connections=32
        ) as admin:
            for res in (k8s.SERVICES, k8s.ENDPOINT_SLICES):
                items, _ = await admin.list_all(res, NS)
                names = [item["metadata"]["name"] for item in items]
                for start in range(0, len(names), 32):
                    await asyncio.gather(
                        *(admin.delete(res, n, NS) for n in names[start : start + 32])
                    )

    def switch_to_metallb(self) -> metallb.MetalLB:
        """Stop ironlb, delete the Services (and the BFDProfiles of (b)), wait until the router
        has none of their routes, start MetalLB (native BGP) on the same objects and wait for
        its three sessions."""
        for proc in [*self.speakers.values(), *self.procs]:
            proc.stop()
        self.speakers.clear()
        self.procs.clear()
        asyncio.run(self.delete_all())
        # MetalLB's native mode refuses a configuration that holds BFDProfiles (FRR mode only).
        self.c.kubectl("delete", "bfdprofiles", "--all", "-n", CONFIG)
        routers.wait_until(lambda: not self.pool_routes(), 60, "the pool's routes gone")
        running = metallb.MetalLB.start(self.c, NODES, bgp_type="native")
        self.procs.extend(running.processes())
        routers.wait_until(self.sessions_up, 60, "MetalLB's three sessions")
        return running

    def close(self) -> None:
        self.frr.stop()
        for proc in [*self.speakers.values(), *self.procs]:
            proc.kill()


def announced(
    system: str, count: int, latencies: list[float], no_address: int, no_route: int
) -> str:
    return (
        f"(a) {system}, {count} Services: status -> route installed by FRR with all "
        f"{len(NODES)} next hops: p50 {common.pct(latencies, 0.5):.0f} ms, "
        f"p99 {common.pct(latencies, 0.99):.0f} ms, max {max(latencies):.0f} ms; "
        f"counted as {TIMEOUT:.0f} s: {no_address} without an address, {no_route} "
        "whose full route never appeared"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 Services, 2 rounds per mode")
    parser.add_argument("--metallb", action="store_true", help="(a) by MetalLB too, at the end")
    args = parser.parse_args()
    count, rounds = (100, 2) if args.quick else (1000, 5)
    if args.metallb:
        metallb.binaries()  # fails at once, naming `make peers`, if MetalLB is not built
    with common.cluster() as c:
        bench = Bench(c)
        try:
            bench.peer()
            bench.router(None)
            latencies, no_address, no_route = asyncio.run(bench.announce_latency(count))
            print(announced("ironlb", count, latencies, no_address, no_route), flush=True)
            ip = components.service_status(c, NS, "s0000")[0]
            modes = [
                ("BFD 100 ms x 3", bfd.Profile(100, 100, 3), "fast"),
                ("BFD 300 ms x 3", bfd.Profile(300, 300, 3), "slow"),
                ("no BFD, hold time 3 s", None, ""),
            ]
            for label, profile, name in modes:
                if profile is not None:
                    bench.apply(
                        {
                            "apiVersion": "metallb.io/v1beta1",
                            "kind": "BFDProfile",
                            "metadata": {"name": name, "namespace": CONFIG},
                            "spec": {
                                "receiveInterval": profile.receive_interval,
                                "transmitInterval": profile.transmit_interval,
                                "detectMultiplier": 3,
                            },
                        }
                    )
                bench.peer(name, hold="30s" if profile else "3s")
                bench.router(profile)
                times = [bench.detection(ip, NODES[r % 3]) for r in range(rounds)]
                print(f"    rounds: {[round(t) for t in times]}", flush=True)
                print(
                    f"(b) {label}: FRR removed the dead node's next hop after "
                    f"median {statistics.median(times):.0f} ms (min {min(times):.0f},"
                    f" max {max(times):.0f}, {rounds} rounds)",
                    flush=True,
                )
            if args.metallb:
                bench.switch_to_metallb()
                theirs, no_address, no_route = asyncio.run(bench.announce_latency(count))
                print(announced("MetalLB v0.15.2", count, theirs, no_address, no_route))
                for q, name in ((0.5, "p50"), (0.99, "p99")):
                    ratio = common.pct(theirs, q) / common.pct(latencies, q)
                    print(f"(a) MetalLB / ironlb, {name}: {ratio:.1f}x", flush=True)
        finally:
            bench.close()
    print(f"bgp_announce_p99_ms: {common.pct(latencies, 0.99):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
