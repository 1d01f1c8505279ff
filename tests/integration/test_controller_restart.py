"""Restarts never move or duplicate an address: controller killed mid-stream, API server
restarted, leader replaced. Every status change is recorded through a watch, so a move that was
later undone would still be caught."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import pytest

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components
from support import kube

pytestmark = pytest.mark.integration

FAST_LEASE = ("--lease-duration=3",)


class History:
    """Every status.loadBalancer.ingress each Service of a namespace ever showed."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        self.since_mark: set[str] = set()
        """Services seen (by a watch event or a relist) since `mark()`."""
        self.relists = 0

    def mark(self) -> None:
        self.since_mark = set()

    def record(self, obj: k8s.Obj) -> None:
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ips = tuple(i["ip"] for i in ingress)
        name = obj["metadata"]["name"]
        self.since_mark.add(name)
        if ips and (not self.seen[name] or self.seen[name][-1] != ips):
            self.seen[name].append(ips)

    def assert_stable_and_unique(self) -> None:
        moved = {n: h for n, h in self.seen.items() if len(h) > 1}
        assert not moved, f"addresses moved: {moved}"
        owners: dict[str, str] = {}
        for name, history in self.seen.items():
            for ip in history[0]:
                assert ip not in owners, f"{ip} held by {owners.get(ip)} and {name}"
                owners[ip] = name


@contextlib.asynccontextmanager
async def recording(admin: k8s.Client, namespace: str) -> AsyncIterator[History]:
    history = History()
    _, rv = await admin.list_all(k8s.SERVICES, namespace)

    async def follow() -> None:
        nonlocal rv
        while True:
            try:
                async for event in admin.watch(k8s.SERVICES, rv, namespace, timeout_seconds=60):
                    rv = event.object["metadata"].get("resourceVersion", rv)
                    if event.type != "BOOKMARK":
                        history.record(event.object)
            except k8s.ApiError as e:
                if not e.gone:
                    await asyncio.sleep(0.2)
                    continue
                # 410: events since rv are gone; a fresh list is the only way to see the
                # current state (retrying rv would fail forever and see nothing more).
                try:
                    items, rv = await admin.list_all(k8s.SERVICES, namespace)
                except (k8s.ApiError, k8s.Unreachable):
                    await asyncio.sleep(0.2)
                    continue
                history.relists += 1
                for item in items:
                    history.record(item)
            except k8s.Unreachable:
                await asyncio.sleep(0.2)  # the API server is restarting: resume from rv

    task = asyncio.create_task(follow())
    try:
        yield history
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def create_all(
    admin: k8s.Client, namespace: str, names: list[str], pace: float = 0.0
) -> None:
    for name in names:
        await asyncio.sleep(pace)
        while True:
            try:
                await admin.create(k8s.SERVICES, kube.service(name), namespace)
                break
            except k8s.ApiError as e:
                if e.conflict:
                    break
                raise
            except k8s.Unreachable:
                await asyncio.sleep(0.2)


async def all_assigned(admin: k8s.Client, namespace: str, count: int) -> bool:
    items, _ = await admin.list_all(k8s.SERVICES, namespace)
    done = [s for s in items if ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress")]
    return len(done) == count


@pytest.fixture
def controllers(cluster: lab_cluster.Cluster) -> Iterator[list[components.Process]]:
    """Processes a test starts; all stopped (and the webhook removed) afterwards."""
    procs: list[components.Process] = []
    yield procs
    for p in procs:
        p.kill()
    components.uninstall_webhook(cluster)


async def test_sigkill_mid_stream_never_moves_or_duplicates_an_address(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controllers: list[components.Process],
) -> None:
    kube.apply(cluster, kube.pool("restart", "192.0.2.0/25", namespaces=(namespace,)))
    # Created in an order unlike any order a restarted controller could process them in, so
    # that re-allocating from scratch would not happen to reproduce the same addresses.
    names = [f"svc-{i:03d}" for i in range(90)]
    random.Random(7).shuffle(names)
    controllers.append(components.start_controller(cluster, extra=FAST_LEASE))
    async with recording(admin, namespace) as history:
        # Paced so that creations span all three kills.
        creating = asyncio.create_task(create_all(admin, namespace, names, pace=0.03))
        for _ in range(3):
            await asyncio.sleep(0.6)
            controllers[-1].kill()  # SIGKILL while Services are being created
            await asyncio.sleep(0.2)
            controllers.append(
                components.start_controller(cluster, extra=FAST_LEASE, webhook=False, wait=False)
            )
        await creating
        await kube.eventually(lambda: all_assigned(admin, namespace, len(names)), within=60)
        await asyncio.sleep(0.5)  # let any late (wrong) write show up in the history
    assert len(history.seen) == len(names)
    history.assert_stable_and_unique()
    assert "re-reserved" in controllers[-1].log_text()


async def test_api_server_restart_resumes_watches_without_moving_anything(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controllers: list[components.Process],
) -> None:
    kube.apply(cluster, kube.pool("apirestart", "192.0.2.128/27", namespaces=(namespace,)))
    controllers.append(components.start_controller(cluster))
    ctl = controllers[0]
    before = [f"before-{i}" for i in range(10)]
    async with recording(admin, namespace) as history:
        await create_all(admin, namespace, before)
        await kube.eventually(lambda: all_assigned(admin, namespace, 10))
        history.mark()
        cluster.control_plane.restart_apiserver()
        after = [f"after-{i}" for i in range(10)]
        await create_all(admin, namespace, after)
        await kube.eventually(lambda: all_assigned(admin, namespace, 20), within=30)
        # The recorder still sees everything after the restart (else the history it checks
        # would be stale): every Service, touched now, shows up through its watch, or in the
        # fresh list a 410 (events since its resourceVersion gone) makes it take.
        for name in [*before, *after]:
            await admin.patch(
                k8s.SERVICES, name, {"metadata": {"annotations": {"touched": "yes"}}}, namespace
            )
        await kube.eventually(
            lambda: history.since_mark >= {*before, *after},
            within=15,
            what=f"every Service seen after the restart (relists on 410: {history.relists})",
        )
        await asyncio.sleep(0.5)
    assert len(history.seen) == 20
    assert all(len(history.seen[name]) == 1 for name in after), dict(history.seen)
    history.assert_stable_and_unique()
    assert ctl.alive
    restarts = ctl.metric("ironlb_k8s_watch_restarts_total", 'resource="services"')
    assert restarts is not None
    assert restarts >= 1


async def test_a_standby_replica_takes_over_when_the_leader_dies(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controllers: list[components.Process],
) -> None:
    kube.apply(cluster, kube.pool("failover", "192.0.2.160/28", namespaces=(namespace,)))
    leader = components.start_controller(cluster, name="replica-a", extra=FAST_LEASE)
    controllers.append(leader)
    standby = components.start_controller(
        cluster, name="replica-b", metrics_port=7473, webhook=False, extra=FAST_LEASE
    )
    controllers.append(standby)
    await admin.create(k8s.SERVICES, kube.service("one"), namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "one"))
    assert leader.metric("ironlb_controller_leader_bool") == 1
    assert standby.metric("ironlb_controller_leader_bool") == 0
    leader.kill()
    await admin.create(k8s.SERVICES, kube.service("two"), namespace)
    # The standby takes the Lease once it has not been renewed for a lease duration (3 s).
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "two"), within=15)
    assert standby.metric("ironlb_controller_leader_bool") == 1
    assert await kube.ingress(admin, namespace, "one") == ["192.0.2.160"]
    assert await kube.ingress(admin, namespace, "two") == ["192.0.2.161"]
