"""PodCIDRs over BGP in the process lab, FRR as the router accepting the nodes through a
peer-group with a `bgp listen range`; every speaker runs with --advertise-pod-cidrs.

(a) Node deleted: `kubectl delete node`, and the time until FRR has removed that node's IPv4
    PodCIDR from the router's kernel table; then the Node registered again (with its podCIDRs)
    and the time until the route is back. 10 rounds (--quick 2), over the three nodes in turn.
(b) Node dead: its link down, then its speaker killed (no FIN, no NOTIFICATION), and the time
    until FRR has removed its PodCIDR from the kernel table: hold time 3 s, and BFD 100 ms x 3.
    5 rounds each (--quick 1).

Timings are taken by polling `ip route` in the router namespace every 20 ms (so +-20 ms). A
round whose route does not change within 30 s counts as a timeout: printed, and entered in the
percentiles as 30 000 ms.

Last line: `pod_cidr_node_deleted_withdraw_p99_ms: <p99 of (a)'s withdrawals> ms`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import yaml

import common
from ironlb.bgp import bfd
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, routers, topology

NODES = (1, 2, 3)
ROUTER_AS, NODE_AS = common.ROUTER_AS, common.NODE_AS
CONFIG = lab_cluster.CONFIG_NAMESPACE
TIMEOUT = 30.0
POLL = 0.02


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
        self.timeouts = 0

    def apply(self, *docs: k8s.Obj) -> None:
        self.c.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))

    def start_speakers(self, indexes: tuple[int, ...]) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(
                self.c, i, extra=("--advertise-pod-cidrs",), wait=False
            )
        for i in indexes:
            self.speakers[i].wait_ready()

    def peer(self, bfd_profile: str = "", hold: str = "3s") -> None:
        self.apply(common.router_peer(hold, bfd_profile, connectTime="1s"))

    def router(self, profile: bfd.Profile | None) -> None:
        self.frr.stop()
        group = routers.ListenRange(
            "NODES", str(topology.LAN_V4), NODE_AS, bfd_profile="p" if profile else ""
        )
        self.frr.start(
            routers.RouterConfig(
                ROUTER_AS,
                listen_ranges=(group,),
                bfd_profiles={"p": profile} if profile else {},
            )
        )
        for i in NODES:
            self.wait_route(i, present=True)

    def cidr(self, index: int) -> str:
        return topology.pod_cidrs(index)[0]

    def wait_route(self, index: int, *, present: bool) -> float:
        """Seconds until node-`index`'s PodCIDR is (or is no longer) in the router's kernel
        table via that node; TIMEOUT (and a counted timeout) if it never happens."""
        started = time.monotonic()
        want = (self.hosts[index].ipv4,) if present else ()
        while time.monotonic() - started < TIMEOUT:
            if self.frr.fib_routes(self.cidr(index)) == want:
                return time.monotonic() - started
            time.sleep(POLL)
        self.timeouts += 1
        print(f"    timeout: node-{index}'s PodCIDR {'absent' if present else 'present'}")
        return TIMEOUT

    # --- (a) ---------------------------------------------------------------------------------

    def node_deleted(self, victim: int) -> tuple[float, float]:
        self.wait_route(victim, present=True)
        started = time.monotonic()
        self.c.kubectl("delete", "node", f"node-{victim}", "--wait=false")
        self.wait_route(victim, present=False)
        gone = time.monotonic() - started
        started = time.monotonic()
        components.register_node(self.c, victim, self.hosts[victim])
        self.wait_route(victim, present=True)
        back = time.monotonic() - started
        return gone * 1000, back * 1000

    # --- (b) ---------------------------------------------------------------------------------

    def node_dead(self, victim: int, profile: bfd.Profile | None) -> float:
        host = self.hosts[victim]
        self.wait_route(victim, present=True)
        if profile is not None:
            routers.wait_until(
                lambda: self.frr.bfd_peers().get(host.ipv4, ("",))[0] == "up", 30, "BFD up"
            )
        started = time.monotonic()
        host.ns.ip("link", "set", "eth0", "down")
        self.speakers.pop(victim).kill()
        try:
            self.wait_route(victim, present=False)
            return (time.monotonic() - started) * 1000
        finally:
            host.ns.ip("link", "set", "eth0", "up")
            self.start_speakers((victim,))

    def close(self) -> None:
        self.frr.stop()
        for proc in [*self.speakers.values(), *self.procs]:
            proc.kill()


def summary(times: list[float]) -> str:
    return (
        f"median {statistics.median(times):.0f} ms, p99 {common.pct(times, 0.99):.0f} ms, "
        f"min {min(times):.0f}, max {max(times):.0f} ({len(times)} rounds)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 deletions, 1 death per mode")
    args = parser.parse_args()
    deletions, deaths = (2, 1) if args.quick else (10, 5)
    with common.cluster() as c:
        bench = Bench(c)
        try:
            bench.peer()
            bench.router(None)
            rounds = [bench.node_deleted(NODES[r % 3]) for r in range(deletions)]
            withdrawn = [g for g, _ in rounds]
            back = [b for _, b in rounds]
            print(f"    rounds (withdrawn, back): {[(round(g), round(b)) for g, b in rounds]}")
            print(f"(a) Node deleted -> PodCIDR withdrawn from FRR's FIB: {summary(withdrawn)}")
            print(f"(a) Node registered again -> PodCIDR back in FRR's FIB: {summary(back)}")
            for label, profile in (
                ("hold time 3 s", None),
                ("BFD 100 ms x 3", bfd.Profile(100, 100, 3)),
            ):
                if profile is not None:
                    bench.apply(
                        {
                            "apiVersion": "metallb.io/v1beta1",
                            "kind": "BFDProfile",
                            "metadata": {"name": "fast", "namespace": CONFIG},
                            "spec": {
                                "receiveInterval": 100,
                                "transmitInterval": 100,
                                "detectMultiplier": 3,
                            },
                        }
                    )
                bench.peer("fast" if profile else "", hold="30s" if profile else "3s")
                bench.router(profile)
                times = [bench.node_dead(NODES[r % 3], profile) for r in range(deaths)]
                print(f"    rounds: {[round(t) for t in times]}")
                print(f"(b) node dead, {label}: PodCIDR withdrawn after {summary(times)}")
            print(f"timeouts: {bench.timeouts}")
        finally:
            bench.close()
    print(f"pod_cidr_node_deleted_withdraw_p99_ms: {common.pct(withdrawn, 0.99):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
