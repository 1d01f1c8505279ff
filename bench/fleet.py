"""A fleet: up to 100 speakers in the lab, at rest and when one node dies.

One lab cluster (the real API server and the controller on the control-plane host) grows
through the sizes given (`--sizes`, default 3,10,100; --quick 3,10): at each size every node
has its namespace on the LAN, its Node object and one speaker process (`--log-level=info`, as in
production; no backends: the observer is ARP, not HTTP). S single-stack Services (1 000,
--quick 100), each with a serving endpoint on every node, get their addresses from a pool off
the LAN's subnet, so each node owns about S / N of them. At each size:

1. Membership converged: time from starting the size's new speakers until every speaker counts
   every node alive (`ironlb_membership_members{state="alive"}`).
2. At rest (every address has one owner, then `--settle` seconds pass: 30, --quick 5, for the
   new speakers' first status writes and gratuitous repeats to end; then 30 s, --quick 8 s):
   each speaker's CPU (% of one core, /proc/<pid>/stat), its RSS, and the packets per second
   its node sends (the node link's tx counter: membership, gratuitous ARP and API traffic).
3. Failover (3 kills, --quick 1): the node owning the most addresses loses its speaker
   (SIGKILL) and its link at once; time until the last of its addresses is answered by a
   survivor, from a LAN client's raw-socket view (`bench/l2_failover_scale.py`'s observer,
   probing at most 5 000 addresses a second). An address never answered within 10 s counts as
   10 s, and their count is printed. The node comes back, and `--settle` seconds pass, before
   the next kill.

The detection time's growth with the fleet shows in the table of sizes it prints.

Last line: `fleet_failover_median_ms: <median failover at the largest size> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter

import allocation
import common
import l2_failover_scale as scale
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, topology

NS = "fleet"
POOL = "198.18.32.0/20"  # 4 096 addresses off the LAN's subnet
SKIP = {40, 90}
"""Node indexes whose LAN address would be another lab host's (the stranger's .50, the
client's .100)."""


def node_indexes(n: int) -> list[int]:
    out: list[int] = []
    i = 1
    while len(out) < n:
        if i not in SKIP:
            out.append(i)
        i += 1
    return out


def service(i: int) -> k8s.Obj:
    return {
        "metadata": {"name": f"s{i:05d}"},
        "spec": {
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": False,
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }


class Fleet(scale.Nodes):
    def __init__(self, c: lab_cluster.Cluster, services: int) -> None:
        self.c = c
        self.count = services
        self.hosts: dict[int, topology.Host] = {}
        self.speakers: dict[int, components.Process] = {}
        self.client = c.lab.add_client()
        self.procs = [components.start_controller(c, webhook=False)]
        self.observer = scale.Observer(self.client)
        self.addresses: list[str] = []
        self.macs: dict[str, int] = {}

    def grow(self, n: int) -> float:
        """Nodes and speakers up to `n`; the seconds until membership converged."""
        new = [i for i in node_indexes(n) if i not in self.hosts]
        for i in new:
            self.hosts[i] = self.c.lab.add_node(i)
            components.register_node(self.c, i, self.hosts[i])
            self.macs[self.hosts[i].mac] = i
        asyncio.run(self._endpoints())
        start = time.monotonic()
        for i in new:
            self.start_speaker(i)
        for i in new:
            self.speakers[i].wait_ready(timeout=300)
        deadline = start + 600
        while time.monotonic() < deadline:
            alive = [
                p.metric("ironlb_membership_members", 'state="alive"')
                for p in self.speakers.values()
            ]
            if all(a == n for a in alive):
                return time.monotonic() - start
            time.sleep(0.5)
        raise SystemExit(f"membership of {n} not converged in 600 s: {Counter(alive)}")

    def start_speaker(self, i: int) -> None:
        self.speakers[i] = components.start_speaker(
            self.c, i, extra=("--log-level=info",), wait=False
        )

    async def _endpoints(self) -> None:
        """Create the Services the first time, and give every one an endpoint on every node."""
        nodes = tuple(sorted(self.hosts))
        async with k8s.Client.from_config(
            self.c.control_plane.admin_kubeconfig, max_connections=32
        ) as admin:
            first = not self.addresses
            if first:
                await scale.l2_pool(admin, NS, "fleet", [POOL])

            async def one(i: int) -> None:
                body = scale.endpoint_slice(i, nodes)
                if first:
                    await admin.create(k8s.ENDPOINT_SLICES, body, NS)
                    await admin.create(k8s.SERVICES, service(i), NS)
                else:
                    await admin.replace(k8s.ENDPOINT_SLICES, body, NS)

            await scale.each(self.count, one)
            if first:
                self.addresses = await scale.assigned(admin, NS, self.count)

    def at_rest(self, seconds: float) -> tuple[list[float], list[float], list[float]]:
        """Per speaker: CPU (% of a core), RSS (MB), packets per second its node sent."""
        pids = {i: p.proc.pid for i, p in self.speakers.items()}
        cpu0 = {i: allocation.cpu_seconds(pid) for i, pid in pids.items()}
        tx0 = {i: self.tx_packets(i) for i in pids}
        t0 = time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        cpu = [(allocation.cpu_seconds(pid) - cpu0[i]) / dt * 100 for i, pid in pids.items()]
        pps = [(self.tx_packets(i) - tx0[i]) / dt for i in pids]
        return cpu, [allocation.status_mb(pid) for pid in pids.values()], pps

    def tx_packets(self, i: int) -> int:
        link = json.loads(self.hosts[i].ns.ip("-s", "-j", "link", "show", "eth0"))[0]
        return int(link["stats64"]["tx"]["packets"])

    def restart(self, index: int) -> None:
        self.start_speaker(index)
        self.speakers[index].wait_ready(timeout=300)

    def close(self) -> None:
        self.observer.close()
        for proc in [*self.speakers.values(), *self.procs]:
            proc.kill()


def spread(values: list[float], fmt: str = ".1f") -> str:
    return f"median {statistics.median(values):{fmt}}, max {max(values):{fmt}}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 and 10 nodes, 100 Services")
    parser.add_argument("--sizes", help="node counts, growing (default 3,10,100)")
    parser.add_argument("--services", type=int, help="Services (default 1 000, --quick 100)")
    parser.add_argument("--kills", type=int, help="failovers per size (default 3, --quick 1)")
    parser.add_argument("--rest", type=float, help="seconds at rest (default 30, --quick 8)")
    parser.add_argument(
        "--settle", type=float, help="seconds before rest and kills (default 30, --quick 5)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("3,10" if args.quick else "3,10,100")).split(",")]
    count = args.services or (100 if args.quick else 1000)
    kills = args.kills or (1 if args.quick else 3)
    rest = args.rest or (8.0 if args.quick else 30.0)
    settle = args.settle if args.settle is not None else (5.0 if args.quick else 30.0)
    table: list[str] = []
    failovers: list[float] = []
    with common.cluster() as c:
        fleet = Fleet(c, count)
        try:
            for n in sizes:
                converged = fleet.grow(n)
                fleet.owners()
                time.sleep(settle)
                cpu, rss, pps = fleet.at_rest(rest)
                failovers, never = [], 0
                for k in range(kills):
                    if k:
                        time.sleep(settle)  # the node that came back has caught up
                    victim, times = fleet.kill_round()
                    last, owned = max(times), len(times)
                    failovers.append(last * 1000)
                    never += sum(1 for t in times if t >= scale.TIMEOUT)
                    print(
                        f"{n} nodes: node-{victim} owned {owned} addresses; the last answered "
                        f"by a survivor after {last * 1000:.0f} ms",
                        flush=True,
                    )
                line = (
                    f"| {n} | {converged:.1f} s | {spread(cpu, '.2f')} % | {spread(rss, '.0f')} MB"
                    f" | {spread(pps, '.1f')} | {spread(failovers, '.0f')} ms ({kills}; "
                    f"never answered: {never}) |"
                )
                print(line, flush=True)
                table.append(line)
        finally:
            fleet.close()
    print()
    print(
        f"{count} Services; per speaker at rest over {rest:.0f} s (after {settle:.0f} s of "
        "settling); failover = last of the dead node's addresses answered by a survivor"
    )
    print("| nodes | membership converged | CPU (% of a core) | RSS | packets/s sent | failover |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table))
    print(f"fleet_failover_median_ms: {statistics.median(failovers):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
