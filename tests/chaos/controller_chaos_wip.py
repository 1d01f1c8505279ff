"""WORK IN PROGRESS, NOT COLLECTED (no test_ prefix): not yet trustworthy, see below.

Status (issue 9, chaos branch): it runs (1 000 Services created in 49-166 s on a busy machine,
52 kills in 84-103 s, churn ~230 creates / ~170 deletes / ~200 re-keys, watch never needed a
relist, about 6 minutes in all) but `ServiceHistory.overlaps()` reports pairs of churned
Services on one address (6 in one run). Not yet known whether those are double assignments or
the recorder's fault: after a sharing-key edit the old status legitimately stays until the
(often just killed) controller moves the Service, and `overlaps()` compares the current keys;
comparing the keys at assignment time instead (tried) flags a Service that legitimately kept its
address after a key edit (123 pairs). It needs a grace period after each key edit, bounded by the
controller's restart time, and a look at the flagged pairs. The kept-Service checks (no move, no
cleared address) come after it and were never reached.

Controller chaos: SIGKILL the controller every few seconds while 1 000 Services churn.

The controller runs on the lab's control-plane host against the real API server (no speakers:
this is about allocation). A watch that relists on 410 (`support.ownership.ServiceHistory`)
records every address of every Service over time. While Services are created, deleted and their
sharing keys edited, the controller is SIGKILLed 50+ times, each time 0.5-2.5 s after it was
started (often before it finished re-reserving), and restarted at once. Asserted:
- no address was ever held by two Services at the same time (unless both had the same sharing
  key);
- no Service the churn never touched ever changed address (the first one stays);
- after the last restart every Service that should have an address has one.
Takes about three minutes on a busy two-core machine.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components
from support import kube, ownership

pytestmark = pytest.mark.e2e

MODULE = "test_controller_chaos"
POOL = kube.pool("chaos-ctl", "198.18.64.0/22", module=MODULE)
KEPT = 1000
KILLS = 52
KEYS = 8
"""Sharing keys the churned Services pick from (each Service with its own port: compatible)."""


@pytest.fixture(scope="module")
def pool(cluster: lab_cluster.Cluster) -> Iterator[None]:
    kube.apply(cluster, POOL)
    try:
        yield
    finally:
        cluster.kubectl("delete", "ipaddresspool", "chaos-ctl", "-n", kube.CONFIG_NS)


@pytest.fixture
async def history(admin: k8s.Client, namespace: str) -> AsyncIterator[ownership.ServiceHistory]:
    recorder = ownership.ServiceHistory(admin, namespace)
    task = asyncio.create_task(recorder.run())
    try:
        yield recorder
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        items, _ = await admin.list_all(k8s.SERVICES, namespace)
        for item in items:
            await admin.delete(k8s.SERVICES, item["metadata"]["name"], namespace)


def _service(name: str, port: int, key: str = "") -> k8s.Obj:
    annotations = {ownership.SHARING_KEY: key} if key else {}
    return kube.service(name, ports=(port,), annotations=annotations)


async def _create_many(admin: k8s.Client, namespace: str, names: list[str]) -> None:
    queue = list(names)

    async def worker() -> None:
        while queue:
            name = queue.pop()
            await admin.create(k8s.SERVICES, _service(name, 80), namespace)

    async with asyncio.TaskGroup() as tg:
        for _ in range(8):
            tg.create_task(worker())


async def _churn(
    admin: k8s.Client, namespace: str, stop: asyncio.Event, rng: random.Random
) -> dict[str, int]:
    """Create, delete and re-key Services named churn-*, ~10 changes a second, until `stop`."""
    done = {"create": 0, "delete": 0, "rekey": 0, "failed": 0}
    live: list[str] = []
    n = 0
    while not stop.is_set():
        action = "create" if len(live) < 20 else rng.choice(["create", "delete", "rekey"])
        try:
            if action == "create":
                n += 1
                name = f"churn-{n}"
                key = f"k{rng.randrange(KEYS)}"
                await admin.create(k8s.SERVICES, _service(name, 1000 + n, key), namespace)
                live.append(name)
            elif action == "delete":
                name = live.pop(rng.randrange(len(live)))
                await admin.delete(k8s.SERVICES, name, namespace)
            else:
                name = rng.choice(live)
                patch = {
                    "metadata": {"annotations": {ownership.SHARING_KEY: f"k{rng.randrange(KEYS)}"}}
                }
                await admin.patch(k8s.SERVICES, name, patch, namespace)
            done[action] += 1
        except (k8s.ApiError, k8s.Unreachable):
            done["failed"] += 1
        await asyncio.sleep(0.1)
    return done


@pytest.mark.timeout(600)
async def test_controller_killed_50_times_during_churn_never_double_assigns_or_moves(
    cluster: lab_cluster.Cluster,
    pool: None,
    admin: k8s.Client,
    namespace: str,
    history: ownership.ServiceHistory,
) -> None:
    rng = random.Random(9)
    kept = [f"kept-{i}" for i in range(KEPT)]
    controller = components.start_controller(cluster, webhook=False)
    try:
        t0 = time.monotonic()
        await _create_many(admin, namespace, kept)
        print(f"created {KEPT} Services in {time.monotonic() - t0:.0f} s", flush=True)
        await kube.eventually(
            lambda: _all_have_addresses(history, kept), within=120, what="1 000 addresses"
        )
        print(f"all addressed after {time.monotonic() - t0:.0f} s", flush=True)
        stop = asyncio.Event()
        churn = asyncio.create_task(_churn(admin, namespace, stop, rng))
        kills = 0
        started = time.monotonic()
        while kills < KILLS:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            controller.kill()
            kills += 1
            controller = components.start_controller(cluster, webhook=False, wait=False)
        stop.set()
        done = await churn
        controller.wait_ready(timeout=60)
        await kube.eventually(
            lambda: _all_have_addresses(history, kept), within=60, what="every kept address"
        )
        elapsed = time.monotonic() - started
    finally:
        controller.kill()
    print(f"{kills} kills in {elapsed:.0f} s; churn {done}; watch relists {history.relists}")
    assert done["create"] > 50, done
    assert done["delete"] > 10, done
    assert done["rekey"] > 10, done
    assert history.overlaps() == []
    moved = {
        name: [ips for _, ips, _, _ in history.versions[name] if ips]
        for name in kept
        if len({ips for _, ips, _, _ in history.versions[name] if ips}) > 1
    }
    assert moved == {}
    cleared = [
        name
        for name in kept
        if any(not ips for _, ips, _, _ in history.versions[name][1:])
        and history.versions[name][0][1]
    ]
    assert cleared == []


def _all_have_addresses(history: ownership.ServiceHistory, names: list[str]) -> bool:
    return all(history.versions.get(n) and history.versions[n][-1][1] for n in names)
