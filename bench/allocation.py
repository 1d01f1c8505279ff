"""Allocation benchmark against the real API server (the lab's etcd + kube-apiserver).

1. 20 pools; N LoadBalancer Services (10 000, --quick 1 000) created at a steady rate (100 a
   second; `--rate 0`: as fast as 16 concurrent clients go), spread over the pools by the
   `metallb.io/address-pool` annotation. Latency of each from its create request to a watch
   seeing its status.loadBalancer.ingress; every Service counts, one never assigned within
   60 s of the last create as 60 s (their count is printed). The headline.
2. With the N Services in place: 200 more created one at a time; same latency (what a user
   sees when the cluster already holds N Services).
3. The controller is SIGKILLed and restarted: time until it has re-reserved everything and a
   Service created just after the restart has its address, and proof that no existing status
   was rewritten (the new controller's update counter covers only that one Service).
4. The controller's peak RSS (VmHWM).

Last line: `alloc_p99_ms: <p99 of phase 1> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import common
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components

POOLS = 20
NS = "bench"
TIMEOUT = 60.0


def pool(i: int) -> k8s.Obj:
    # 20 /23s in 198.18.64.0/18: 10 240 addresses, away from the lab LAN.
    third = 64 + 2 * i
    return {
        "metadata": {"name": f"pool-{i:02d}", "namespace": lab_cluster.CONFIG_NAMESPACE},
        "spec": {"addresses": [f"198.18.{third}.0/23"], "serviceAllocation": {"namespaces": [NS]}},
    }


def service(i: int) -> k8s.Obj:
    return {
        "metadata": {
            "name": f"s{i:05d}",
            "annotations": {"metallb.io/address-pool": f"pool-{i % POOLS:02d}"},
        },
        # No NodePorts: 10 000 Services would exhaust the default NodePort range, and an
        # L2/BGP load balancer does not need them.
        "spec": {
            "type": "LoadBalancer",
            "allocateLoadBalancerNodePorts": False,
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }


class Watcher:
    """Records when each Service of the namespace first shows an address."""

    def __init__(self, namespace: str = NS) -> None:
        self.namespace = namespace
        self.assigned: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}

    async def run(self, admin: k8s.Client, rv: str) -> None:
        while True:
            try:
                async for ev in admin.watch(k8s.SERVICES, rv, self.namespace, timeout_seconds=600):
                    rv = ev.object["metadata"].get("resourceVersion", rv)
                    if ev.type == "BOOKMARK":
                        continue
                    name = ev.object["metadata"]["name"]
                    lb = (ev.object.get("status") or {}).get("loadBalancer") or {}
                    if lb.get("ingress") and name not in self.assigned:
                        now = time.monotonic()
                        self.assigned[name] = now
                        fut = self.waiters.pop(name, None)
                        if fut is not None and not fut.done():
                            fut.set_result(now)
            except (k8s.ApiError, k8s.Unreachable):
                await asyncio.sleep(0.1)

    def wait(self, name: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if name in self.assigned:
            fut.set_result(self.assigned[name])
        else:
            self.waiters[name] = fut
        return fut


async def create_paced(
    admin: k8s.Client,
    indices: range,
    created: dict[str, float],
    rate: float,
    make: Callable[[int], k8s.Obj] = service,
    namespace: str = NS,
) -> None:
    """Create Service i at start + i / rate (a create that is slow does not delay the next one;
    at most 64 in flight, which at 100 a second is never reached unless the API server stalls)."""
    limit = asyncio.Semaphore(64)
    start = time.monotonic()

    async def one(i: int) -> None:
        async with limit:
            body = make(i)
            created[body["metadata"]["name"]] = time.monotonic()
            await admin.create(k8s.SERVICES, body, namespace)

    async with asyncio.TaskGroup() as tg:
        for n, i in enumerate(indices):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tg.create_task(one(i))


async def create_bulk(admin: k8s.Client, indices: range, created: dict[str, float]) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in indices:
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            body = service(i)
            created[body["metadata"]["name"]] = time.monotonic()
            await admin.create(k8s.SERVICES, body, NS)

    async with asyncio.TaskGroup() as tg:
        for _ in range(16):
            tg.create_task(worker())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM: the peak) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench(c: lab_cluster.Cluster, count: int, probes: int, rate: float) -> float:
    ctl = components.start_controller(c, webhook=False)
    async with k8s.Client.from_config(
        c.control_plane.admin_kubeconfig, max_connections=64
    ) as admin:
        await admin.create(k8s.NAMESPACES, {"metadata": {"name": NS}})
        for i in range(POOLS):
            await admin.create(k8s.IP_ADDRESS_POOLS, pool(i), lab_cluster.CONFIG_NAMESPACE)
        _, rv = await admin.list_all(k8s.SERVICES, NS)
        watcher = Watcher()
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(watcher.run(admin, rv))

            created: dict[str, float] = {}
            pids = {**c.control_plane.pids(), "controller": ctl.proc.pid, "bench": os.getpid()}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            if rate > 0:
                await create_paced(admin, range(count), created, rate)
            else:
                await create_bulk(admin, range(count), created)
            created_in = time.monotonic() - t0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(watcher.wait(n) for n in created)), TIMEOUT)
            bulk_done = time.monotonic() - t0
            cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            never = [n for n in created if n not in watcher.assigned]
            bulk = [
                (watcher.assigned[n] - t) * 1000 if n in watcher.assigned else TIMEOUT * 1000
                for n, t in created.items()
            ]
            how = f"at {rate:.0f}/s" if rate > 0 else "by 16 concurrent clients"
            print(
                f"phase 1: {count} Services created {how} in {created_in:.1f} s "
                f"({count / created_in:.0f}/s), all assigned after {bulk_done:.1f} s"
            )
            print(
                f"  create->ingress over all {len(bulk)}: p50 {common.pct(bulk, 0.5):.0f} ms, "
                f"p99 {common.pct(bulk, 0.99):.0f} ms, max {max(bulk):.0f} ms; never assigned "
                f"within {TIMEOUT:.0f} s (counted as {TIMEOUT:.0f} s): {len(never)}",
                flush=True,
            )
            # Where the time goes: CPU seconds each process used during phase 1 (the machine
            # has os.cpu_count() cores; a sum near cores x wall time means it was saturated).
            used = ", ".join(f"{name} {v:.0f} s" for name, v in sorted(cpu.items()))
            print(f"  CPU during phase 1 ({bulk_done:.0f} s, {os.cpu_count()} cores): {used}")

            single = []
            for j in range(probes):
                body = service(count + j)
                name = body["metadata"]["name"]
                start = time.monotonic()
                await admin.create(k8s.SERVICES, body, NS)
                single.append((await asyncio.wait_for(watcher.wait(name), 30) - start) * 1000)
            print(
                f"phase 2: {probes} Services created one by one while {count} exist: "
                f"p50 {common.pct(single, 0.5):.1f} ms, p99 {common.pct(single, 0.99):.1f} ms, "
                f"mean {statistics.mean(single):.1f} ms"
            )
            rss_before = status_mb(ctl.proc.pid, "VmHWM")

            ctl.kill()
            start = time.monotonic()
            ctl = components.start_controller(c, webhook=False, wait=False)
            canary = service(count + probes)
            await admin.create(k8s.SERVICES, canary, NS)
            await asyncio.wait_for(watcher.wait(canary["metadata"]["name"]), 120)
            converged = time.monotonic() - start
            await asyncio.sleep(1.0)  # let the canary's annotation write land before counting
            updates = ctl.metric("metallb_k8s_client_updates_total") or 0.0
            print(
                f"phase 3: restarted controller converged in {converged:.2f} s "
                f"(process start to a new Service assigned, {count + probes} already "
                f"assigned); writes by the new controller: {updates:.0f} (the new Service's "
                "status and annotation, plus any write the killed one left unfinished)"
            )
            rss_after = status_mb(ctl.proc.pid, "VmHWM")
            print(
                f"phase 4: controller peak RSS {max(rss_before, rss_after):.0f} MB "
                f"(first run {rss_before:.0f} MB, after restart {rss_after:.0f} MB)"
            )
            watch.cancel()
    ctl.stop()
    return common.pct(bulk, 0.99)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 000 Services instead of 10 000")
    parser.add_argument("--services", type=int, help="number of Services (overrides --quick)")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="creates per second in phase 1 (0: bulk)"
    )
    args = parser.parse_args()
    count = args.services or (1000 if args.quick else 10_000)
    with common.cluster() as c:
        try:
            p99 = asyncio.run(bench(c, count, probes=100 if args.quick else 200, rate=args.rate))
        except* asyncio.CancelledError:
            p99 = float("nan")
    print(f"alloc_p99_ms: {p99:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
