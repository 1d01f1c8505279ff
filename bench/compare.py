"""Side by side: ironlb against the real MetalLB v0.15.2, in the same lab, by the same procedure.

One lab cluster (the layer-2 benches' lab: three nodes with a backend each, a LAN client, the lab
pool and Service default/bench) is run by one system at a time; the other's processes are
stopped (SIGTERM) before it starts. MetalLB runs as `ironlb.lab.metallb` runs it: its own
binaries from the Go module, `--webhook-mode=disabled`, one speaker Pod object per node for its
memberlist, each process inside its node's namespace, on the same CRDs (ironlb's, which keep
MetalLB's schema). The systems take turns (ironlb, MetalLB, ironlb, ...; 4 turns each, --quick 1),
so a machine that gets busier during the run weighs on both; a turn runs 2 failover trials
(--quick 1) and one allocation run.

1. Layer-2 failover: the owner's speaker is SIGKILLed and its link set down at once; the time
   from the last answer of the old owner to the first answer of the new one, from a LAN client
   sending an HTTP request every 10 ms (`bench/l2_failover.py`'s procedure). A trial without
   a failover within 10 s counts as 10 s.
2. Allocation: N Services (200, --quick 30) created at a steady rate (25 a second: above
   MetalLB's client limit of 20 requests a second) in a namespace of their own, from a pool of
   their own; latency from each create request to a watch seeing its address. Every Service
   counts: one never assigned within 60 s of the last create counts as 60 s. They are deleted
   after the run (each run starts with the same Services in the cluster).
3. Controller restart: with those N Services in place, the controller is SIGKILLed and started
   again, and one more Service is created at once: time from the start to its address.
4. Memory: the controller's peak RSS (VmHWM) after 2 and 3, and each speaker's RSS.
5. CPU (user + system, from /proc): the controller's and the three speakers' CPU time during
   2, from the first create until every Service was seen with its address, per Service; and
   each speaker's share of a core at rest, over `REST` seconds before the turn's failovers.

Per figure: each system's median / p99 / samples, and the ratio MetalLB / ironlb (above 1:
ironlb is faster or smaller). `make compare` runs it (MetalLB is built by `make peers`).

Last line: `compare_l2_failover_speedup: <MetalLB median / ironlb median> x`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import allocation
import common
import l2_failover
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, metallb

NODES = l2_failover.NODES
IRONLB, METALLB = "ironlb", "MetalLB"
SETTLE = {IRONLB: 1.5, METALLB: 8.0}
"""Extra seconds after a node came back before the next trial: MetalLB's memberlist takes a
few seconds to take a returning node back (the address then moves back to it)."""
POOL = "compare"
REST = 10.0
"""Seconds over which the speakers' CPU at rest is measured (--quick: 5)."""
TIMEOUT = 60.0
FAILOVER_TIMEOUT = 10.0


class Lab(l2_failover.Bench):
    """The layer-2 bench's lab, run by one system at a time."""

    stream = int((FAILOVER_TIMEOUT + 1) / 0.01)
    """Requests sent past the failover timeout: MetalLB takes seconds."""

    def __init__(self, c: lab_cluster.Cluster) -> None:
        self.system = IRONLB
        self.metallb: metallb.MetalLB | None = None
        super().__init__(c)  # starts ironlb: its controller is the last process started
        self.controller = self.procs.pop()
        c.kubectl(
            "apply",
            "-f",
            "-",
            stdin=(
                "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n"
                f"metadata: {{name: {POOL}, namespace: {lab_cluster.CONFIG_NAMESPACE}}}\n"
                "spec: {addresses: [198.18.64.0/20], autoAssign: false}\n"
            ),
        )

    def start_speakers(self, indexes: tuple[int, ...]) -> None:
        if self.system == IRONLB:
            super().start_speakers(indexes)
            return
        assert self.metallb is not None
        for i in indexes:
            self.speakers[i] = self.metallb.start_speaker(i)
        for i in indexes:
            _wait_metrics(self.speakers[i])

    def use(self, system: str) -> None:
        """Stop the running system, start `system`, wait until the Service is answered."""
        if system == self.system:
            return
        if self.metallb is not None:
            self.metallb.stop()
            self.metallb = None
        else:
            # All at once, as a rollout deleting the DaemonSet and the Deployment does.
            procs = [*self.speakers.values(), self.controller]
            for proc in procs:
                if proc.alive:
                    proc.proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.stop()
        self.speakers = {}
        self.system = system
        if system == IRONLB:
            self.controller = components.start_controller(self.c)
            super().start_speakers(NODES)
        else:
            self.metallb = metallb.MetalLB.start(self.c, NODES)
            self.controller = self.metallb.controller
            self.speakers = {
                int(name.removeprefix("node-")): p for name, p in self.metallb.speakers.items()
            }
        self.owner(within=60)

    def restart_controller(self) -> float:
        """SIGKILL the controller, start it again: the time from the start until a Service
        created at that moment has its address (seconds)."""
        self.controller.kill()
        start = time.monotonic()
        if self.metallb is not None:
            self.controller = self.metallb.restart_controller()
        else:
            self.controller = components.start_controller(self.c, wait=False)
        return start

    def close(self) -> None:
        if self.metallb is not None:
            self.metallb.stop()
        for proc in [*self.speakers.values(), *self.procs, self.controller]:
            proc.kill()


def _wait_metrics(proc: components.Process, within: float = 30.0) -> None:
    """MetalLB's speaker has no readiness endpoint of its own here: serving /metrics."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.get("/metrics")[0] == 200:
            return
        time.sleep(0.1)
    raise SystemExit(f"{proc.name} not serving /metrics after {within:.0f} s")


def service(namespace: str) -> Callable[[int], k8s.Obj]:
    def make(i: int) -> k8s.Obj:
        return {
            "metadata": {
                "name": f"s{i:04d}",
                "namespace": namespace,
                "annotations": {"metallb.io/address-pool": POOL},
            },
            "spec": {
                "type": "LoadBalancer",
                "allocateLoadBalancerNodePorts": False,
                "ports": [{"port": 80, "protocol": "TCP"}],
            },
        }

    return make


def cpu_of(procs: list[components.Process]) -> float:
    """CPU seconds (user + system) the processes used so far, together."""
    return sum(allocation.cpu_seconds(p.proc.pid) for p in procs)


@dataclass
class AllocationRun:
    latencies: list[float]
    """Every Service's create -> address, ms (never assigned: `TIMEOUT`)."""
    never: int
    restart: float
    """Seconds from the controller's restart to a new Service's address."""
    controller_cpu: float
    speakers_cpu: float
    """CPU seconds while the Services were created and assigned (the speakers: together)."""


async def allocation_run(lab: Lab, namespace: str, count: int, rate: float) -> AllocationRun:
    async with k8s.Client.from_config(
        lab.c.control_plane.admin_kubeconfig, max_connections=32
    ) as admin:
        await admin.create(k8s.NAMESPACES, {"metadata": {"name": namespace}})
        _, rv = await admin.list_all(k8s.SERVICES, namespace)
        watcher = allocation.Watcher(namespace)
        make = service(namespace)
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(watcher.run(admin, rv))
            created: dict[str, float] = {}
            speakers = list(lab.speakers.values())
            cpu_before = (cpu_of([lab.controller]), cpu_of(speakers))
            await allocation.create_paced(
                admin, range(count), created, rate, make=make, namespace=namespace
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(watcher.wait(n) for n in created)), TIMEOUT)
            controller_cpu = cpu_of([lab.controller]) - cpu_before[0]
            speakers_cpu = cpu_of(speakers) - cpu_before[1]
            latencies = [
                (watcher.assigned[n] - t) * 1000 if n in watcher.assigned else TIMEOUT * 1000
                for n, t in created.items()
            ]
            never = sum(1 for n in created if n not in watcher.assigned)
            start = lab.restart_controller()
            canary = make(count)
            await admin.create(k8s.SERVICES, canary, namespace)
            try:
                done = await asyncio.wait_for(watcher.wait(canary["metadata"]["name"]), 120)
                restart = done - start
            except TimeoutError:
                restart = 120.0
            watch.cancel()
    # Gone before the next run, so every run starts from the same number of Services.
    lab.c.kubectl("delete", "services", "--all", "-n", namespace, "--wait=false")
    return AllocationRun(latencies, never, restart, controller_cpu, speakers_cpu)


def row(
    name: str, unit: str, values: dict[str, list[float]], scale: float = 1.0, digits: int = 0
) -> str:
    """One figure: each system's median / p99 / samples, and MetalLB / ironlb of the medians."""
    cells = []
    for system in (IRONLB, METALLB):
        v = [x * scale for x in values[system]]
        cells.append(
            f"{statistics.median(v):,.{digits}f} / {common.pct(v, 0.99):,.{digits}f} {unit}"
            f" ({len(v)})"
            if v
            else "-"
        )
    a, b = values[IRONLB], values[METALLB]
    ratio = statistics.median(b) / statistics.median(a) if a and b else float("nan")
    return f"| {name} | {cells[0]} | {cells[1]} | {ratio:.1f}x |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 turn per system")
    parser.add_argument("--turns", type=int, help="turns per system (default 4, --quick 1)")
    parser.add_argument("--kills", type=int, help="failovers per turn (default 2, --quick 1)")
    parser.add_argument("--services", type=int, help="Services per allocation run (200, 30)")
    parser.add_argument("--rate", type=float, default=25.0, help="creates per second")
    args = parser.parse_args()
    turns = args.turns or (1 if args.quick else 4)
    kills = args.kills or (1 if args.quick else 2)
    count = args.services or (30 if args.quick else 200)
    metallb.binaries()  # fails at once, naming `make peers`, if MetalLB is not built
    failover: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    timeouts: dict[str, int] = {IRONLB: 0, METALLB: 0}
    alloc: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    never: dict[str, int] = {IRONLB: 0, METALLB: 0}
    restart: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    ctl_rss: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    speaker_rss: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    ctl_cpu: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    speakers_cpu: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    rest_cpu: dict[str, list[float]] = {IRONLB: [], METALLB: []}
    rest = REST / 2 if args.quick else REST
    with common.cluster() as c:
        lab = Lab(c)
        try:
            for turn in range(turns):
                for system in (IRONLB, METALLB):
                    lab.use(system)
                    time.sleep(SETTLE[system])  # joined and announced: at rest from here
                    speakers = list(lab.speakers.values())
                    before = [cpu_of([p]) for p in speakers]
                    time.sleep(rest)
                    rest_cpu[system] += [
                        (cpu_of([p]) - b) / rest * 100
                        for p, b in zip(speakers, before, strict=True)
                    ]
                    for _ in range(kills):
                        time.sleep(SETTLE[system])
                        try:
                            gap, old, new = lab.kill_round()
                        except SystemExit as e:  # no failover within 10 s: counted as 10 s
                            print(f"  {system}: {e}", flush=True)
                            gap, old, new = FAILOVER_TIMEOUT, "?", "?"
                            timeouts[system] += 1
                            lab.owner(within=60)
                        failover[system].append(gap * 1000)
                        print(
                            f"turn {turn + 1} {system}: failover {old} -> {new}: "
                            f"{gap * 1000:,.0f} ms",
                            flush=True,
                        )
                    run = asyncio.run(
                        allocation_run(lab, f"cmp-{system.lower()}-{turn}", count, args.rate)
                    )
                    latencies, missing, took = run.latencies, run.never, run.restart
                    alloc[system] += latencies
                    never[system] += missing
                    restart[system].append(took)
                    ctl_cpu[system].append(run.controller_cpu / count * 1000)
                    speakers_cpu[system].append(run.speakers_cpu / count * 1000)
                    time.sleep(2.0)  # the restarted controller settles before its RSS is read
                    ctl_rss[system].append(allocation.status_mb(lab.controller.proc.pid, "VmHWM"))
                    speaker_rss[system] += [
                        allocation.status_mb(p.proc.pid) for p in lab.speakers.values()
                    ]
                    print(
                        f"turn {turn + 1} {system}: {count} Services at {args.rate:.0f}/s: "
                        f"p50 {common.pct(latencies, 0.5):,.0f} ms, p99 "
                        f"{common.pct(latencies, 0.99):,.0f} ms, never assigned {missing}; "
                        f"restarted controller served a new Service after {took:.2f} s; CPU "
                        f"controller {run.controller_cpu:.2f} s, speakers {run.speakers_cpu:.2f} s",
                        flush=True,
                    )
        finally:
            lab.close()
    print()
    print("| figure | ironlb median / p99 (samples) | MetalLB v0.15.2 | MetalLB / ironlb |")
    print("|---|---|---|---|")
    print(row("L2 failover, owner killed (SIGKILL + link down)", "ms", failover))
    print(row(f"create -> address, {count} Services at {args.rate:.0f}/s", "ms", alloc))
    print(
        row(f"restarted controller ({count}+ Services): next Service served", "ms", restart, 1000)
    )
    print(row("controller peak RSS", "MB", ctl_rss))
    print(row("speaker RSS", "MB", speaker_rss))
    print(row(f"controller CPU per Service ({count} at {args.rate:.0f}/s)", "ms", ctl_cpu, 1, 1))
    print(row("3 speakers' CPU per Service, together", "ms", speakers_cpu, 1, 1))
    print(row(f"speaker CPU at rest ({rest:.0f} s)", "% of a core", rest_cpu, 1, 2))
    print(
        f"counted as timeouts: failovers (10 s) ironlb {timeouts[IRONLB]}, MetalLB "
        f"{timeouts[METALLB]}; Services never assigned (60 s) ironlb {never[IRONLB]}, MetalLB "
        f"{never[METALLB]}"
    )
    speedup = statistics.median(failover[METALLB]) / statistics.median(failover[IRONLB])
    print(f"compare_l2_failover_speedup: {speedup:.1f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
