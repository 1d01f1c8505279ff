"""Soak: many Services, steady churn, and whether the daemons' memory and task counts stay flat.

The process lab (real API server, the controller and three speakers as real processes in their
node namespaces, as `components` runs them): 10 000 LoadBalancer Services (--quick: 1 000), each
with an EndpointSlice on the three nodes, announced by layer 2 from one pool. Then 100 changes
per second for 10 minutes (--quick: 50 s), each one of: a Service deleted and created again (a
new allocation), its externalTrafficPolicy toggled, one of its endpoints flipped ready/unready.
Meanwhile a probe Service is created, timed until it has its address, and deleted, over and over.

Printed per process (controller, speaker-1..3): RSS at the baseline and at the end and its
growth, and the `ironlb_asyncio_tasks` metric at both points (the lowest of three scrapes). The
baseline is taken after a warm-up (the first 20 % of the churn), when caches and allocators have
reached their working size, the end point 8 s before the churn stops (the same state); growth
between them is what a leak looks like. Both are printed again 10 s after the churn. Also:
allocation latency (p50/p99/max of every probe, timeouts counted as the timeout) in the first and
the last fifth of the churn, every change that failed or fell behind the rate, by kind.

Setup (cluster start, Service creation, sync) is not part of the timed churn. Last line:
`soak_rss_growth_pct: <largest growth of any process> %`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field

import common
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, topology

NODES = (1, 2, 3)
NS = "soak"
POOL_V4 = "198.18.64.0/18"  # 16 384 addresses: inside the lab's range, clear of its LANs
PROBE_TIMEOUT = 10.0
IN_FLIGHT = 32


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def service(name: str) -> k8s.Obj:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Cluster",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "targetPort": topology.BACKEND_PORT}],
        },
    }


def slice_(name: str, ready: dict[int, bool]) -> k8s.Obj:
    return {
        "metadata": {
            "name": f"{name}-soak",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"198.19.{i}.10"],
                "nodeName": f"node-{i}",
                "conditions": {"ready": ready[i], "serving": ready[i]},
            }
            for i in NODES
        ],
        "ports": [{"name": "http", "port": topology.BACKEND_PORT, "protocol": "TCP"}],
    }


@dataclass
class Churn:
    admin: k8s.Client
    names: list[str]
    rng: random.Random
    done: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    behind: int = 0
    local: set[str] = field(default_factory=set)
    unready: dict[str, set[int]] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)

    async def one(self, name: str) -> None:
        kind = self.rng.choice(("recreate", "policy", "endpoint"))
        try:
            if kind == "recreate":
                await self.admin.delete(k8s.SERVICES, name, NS)
                await self.admin.create(k8s.SERVICES, service(name), NS)
                self.local.discard(name)
            elif kind == "policy":
                policy = "Cluster" if name in self.local else "Local"
                await self.admin.patch(
                    k8s.SERVICES, name, {"spec": {"externalTrafficPolicy": policy}}, NS
                )
                self.local ^= {name}
            else:
                down = self.unready.setdefault(name, set())
                down ^= {self.rng.choice(NODES)}
                if len(down) == len(NODES):  # keep one endpoint ready
                    down.clear()
                ready = {i: i not in down for i in NODES}
                await self.admin.replace(k8s.ENDPOINT_SLICES, slice_(name, ready), NS)
            self.done[kind] = self.done.get(kind, 0) + 1
        except (k8s.ApiError, k8s.Unreachable) as e:
            key = f"{kind}: {type(e).__name__} {getattr(e, 'status', '')}".strip()
            self.failed[key] = self.failed.get(key, 0) + 1
        finally:
            self.busy.discard(name)

    async def run(self, rate: float, until: float) -> None:
        """`rate` changes per second until `until` (monotonic), at most IN_FLIGHT at once; a
        tick that finds every slot taken is counted as behind, not queued."""
        tasks: set[asyncio.Task[None]] = set()
        interval, tick = 1.0 / rate, time.monotonic()
        while tick < until:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            tick += interval
            name = self.rng.choice(self.names)
            if len(tasks) >= IN_FLIGHT or name in self.busy:
                self.behind += 1
                continue
            self.busy.add(name)
            task = asyncio.create_task(self.one(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


async def probe_allocations(admin: k8s.Client, until: float) -> list[tuple[float, float]]:
    """(start, seconds to an address) of probe Services, back to back until `until`; a
    timeout counts as PROBE_TIMEOUT."""
    out: list[tuple[float, float]] = []
    n = 0
    while time.monotonic() < until:
        n += 1
        name = f"probe-{n}"
        start = time.monotonic()
        await admin.create(k8s.SERVICES, service(name), NS)
        took = PROBE_TIMEOUT
        while time.monotonic() - start < PROBE_TIMEOUT:
            svc = await admin.get(k8s.SERVICES, name, NS)
            if ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
                took = time.monotonic() - start
                break
            await asyncio.sleep(0.01)
        out.append((start, took))
        await admin.delete(k8s.SERVICES, name, NS)
        await asyncio.sleep(0.1)
    return out


def summary(samples: list[float]) -> str:
    if not samples:
        return "no samples"
    ms = [s * 1000 for s in samples]
    timeouts = sum(s >= PROBE_TIMEOUT for s in samples)
    return (
        f"n={len(ms)} p50={common.pct(ms, 0.5):.0f} ms p99={common.pct(ms, 0.99):.0f} ms "
        f"max={max(ms):.0f} ms timeouts={timeouts}"
    )


async def create_all(admin: k8s.Client, names: list[str]) -> None:
    limit = asyncio.Semaphore(IN_FLIGHT)
    all_ready = dict.fromkeys(NODES, True)

    async def one(name: str) -> None:
        async with limit:
            for res, body in (
                (k8s.SERVICES, service(name)),
                (k8s.ENDPOINT_SLICES, slice_(name, all_ready)),
            ):
                for attempt in range(5):  # a loaded API server may time out a while
                    try:
                        await admin.create(res, body, NS)
                        break
                    except k8s.ApiError as e:
                        if not e.conflict:  # a retried create whose first try got through
                            raise
                        break
                    except k8s.Unreachable:
                        if attempt == 4:
                            raise
                        await asyncio.sleep(2.0)

    await asyncio.gather(*(one(n) for n in names))


async def count_allocated(admin: k8s.Client) -> int:
    items, _ = await admin.list_all(k8s.SERVICES, NS)
    return sum(
        bool(((s.get("status") or {}).get("loadBalancer") or {}).get("ingress")) for s in items
    )


def tasks_metric(p: components.Process) -> float | None:
    """ironlb_asyncio_tasks of `p`: a busy daemon may take seconds to answer a scrape."""
    for _ in range(3):
        status, text = p.get("/metrics", timeout=20.0)
        if status == 200:
            for line in text.splitlines():
                if line.startswith("ironlb_asyncio_tasks "):
                    return float(line.split()[1])
            return None
        print(f"{p.name}: /metrics answered {status}: {text[:200]}", flush=True)
    return None


def snapshot(procs: list[components.Process]) -> dict[str, tuple[int, float | None]]:
    """RSS and task count of each process; the task count is the lowest of three scrapes half a
    second apart (a burst of short-lived tasks at one instant is not a leak)."""
    out: dict[str, tuple[int, float | None]] = {}
    for p in procs:
        counts = []
        for _ in range(3):
            counts.append(tasks_metric(p))
            time.sleep(0.5)
        known = [c for c in counts if c is not None]
        out[p.name] = (rss_kib(p.proc.pid), min(known) if known else None)
    return out


async def soak(c: lab_cluster.Cluster, services: int, duration: float, rate: float) -> float:
    hosts = {i: c.lab.add_node(i) for i in NODES}
    for i, host in hosts.items():
        components.register_node(c, i, host)
    procs = [components.start_controller(c)]
    pool = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "soak", "namespace": lab_cluster.CONFIG_NAMESPACE},
        "spec": {"addresses": [POOL_V4]},
    }
    advert = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "soak", "namespace": lab_cluster.CONFIG_NAMESPACE},
        "spec": {"ipAddressPools": ["soak"]},
    }
    speakers = [components.start_speaker(c, i, wait=False) for i in NODES]
    procs += speakers
    try:
        for s in speakers:
            s.wait_ready(60)
        config = c.control_plane.admin_kubeconfig
        async with k8s.Client.from_config(config, timeout=30.0) as admin:
            await admin.create(k8s.NAMESPACES, {"metadata": {"name": NS}})
            for doc in (pool, advert):
                await admin.create(
                    k8s.IP_ADDRESS_POOLS
                    if doc["kind"] == "IPAddressPool"
                    else k8s.L2_ADVERTISEMENTS,
                    doc,
                    lab_cluster.CONFIG_NAMESPACE,
                )
            names = [f"svc-{i:05d}" for i in range(services)]
            t0 = time.monotonic()
            await create_all(admin, names)
            created = time.monotonic() - t0
            deadline = time.monotonic() + max(120.0, services / 20)
            while (n := await count_allocated(admin)) < services:
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {n} of {services} Services got an address")
                await asyncio.sleep(1.0)
            print(
                f"setup: {services} Services and EndpointSlices created in {created:.1f} s, "
                f"all allocated after {time.monotonic() - t0:.1f} s",
                flush=True,
            )
            start = time.monotonic()
            until = start + duration
            churn = Churn(admin, names, random.Random(1))
            warm = start + 0.2 * duration
            probes = asyncio.create_task(probe_allocations(admin, until))
            churning = asyncio.create_task(churn.run(rate, until))
            await asyncio.sleep(max(0.0, warm - time.monotonic()))
            base = await asyncio.to_thread(snapshot, procs)
            # The end point is taken in the same state as the baseline: while churning.
            await asyncio.sleep(max(0.0, until - 8.0 - time.monotonic()))
            end = await asyncio.to_thread(snapshot, procs)
            await churning
            samples = await probes
            await asyncio.sleep(10.0)
            quiet = await asyncio.to_thread(snapshot, procs)
            dead = [p.name for p in procs if not p.alive]
    finally:
        for p in procs:
            p.kill()

    total = sum(churn.done.values())
    print(
        f"churn: {total} changes in {duration:.0f} s ({total / duration:.1f}/s of {rate:g}/s "
        f"asked) {churn.done}; failed {sum(churn.failed.values())} {churn.failed}; "
        f"behind {churn.behind}"
    )
    first = [t for s, t in samples if s < start + 0.2 * duration]
    last = [t for s, t in samples if s >= until - 0.2 * duration]
    print(f"allocation at start: {summary(first)}")
    print(f"allocation at end:   {summary(last)}")
    print(f"allocation overall:  {summary([t for _, t in samples])}")
    worst = 0.0
    for name in base:
        (rss0, tasks0), (rss1, tasks1) = base[name], end[name]
        growth = (rss1 - rss0) / rss0 * 100
        worst = max(worst, growth)
        dtasks = None if tasks0 is None or tasks1 is None else tasks1 - tasks0
        print(
            f"{name}: rss {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB ({growth:+.2f} %), "
            f"asyncio tasks {tasks0} -> {tasks1} (growth {dtasks}); 10 s after the churn: "
            f"rss {quiet[name][0] / 1024:.1f} MiB, asyncio tasks {quiet[name][1]}"
        )
    if dead:
        print(f"DIED during the soak: {dead}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 000 Services, 50 s of churn")
    parser.add_argument("--services", type=int)
    parser.add_argument("--duration", type=float, help="seconds of churn")
    parser.add_argument("--rate", type=float, default=100.0, help="changes per second")
    args = parser.parse_args()
    services = args.services or (1000 if args.quick else 10000)
    duration = args.duration or (50.0 if args.quick else 600.0)
    with common.cluster() as c:
        worst = asyncio.run(soak(c, services, duration, args.rate))
    print(f"soak_rss_growth_pct: {worst:.2f} %")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
