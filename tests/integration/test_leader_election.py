"""Leader election between real controller processes against the real API server, with the
default Lease timings the chart runs (15 s duration, renewed every 2 s): one leader for longer
than two durations, no transition while it lives; a standby that takes over when it dies; and a
leader that loses its Lease exits with a clear message, not a traceback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components
from support import kube

pytestmark = pytest.mark.integration

LEASE = "ironlb-controller"
LEASE_DURATION = 15.0  # the controller's default
RETRY = LEASE_DURATION / 7.5


@pytest.fixture
def controllers(cluster: lab_cluster.Cluster) -> Iterator[list[components.Process]]:
    procs: list[components.Process] = []
    yield procs
    for p in procs:
        p.kill()
    components.uninstall_webhook(cluster)


async def lease_spec(admin: k8s.Client) -> k8s.Obj:
    obj = await admin.get(k8s.LEASES, LEASE, kube.CONFIG_NS)
    return dict(obj["spec"])


async def leaders(procs: list[components.Process]) -> list[str]:
    flags = await asyncio.gather(
        *(asyncio.to_thread(p.metric, "ironlb_controller_leader_bool") for p in procs)
    )
    return [p.name for p, flag in zip(procs, flags, strict=True) if flag == 1]


async def test_two_replicas_keep_one_leader_and_the_standby_takes_over_when_it_dies(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controllers: list[components.Process],
) -> None:
    kube.apply(cluster, kube.pool("election", "192.0.2.176/29", namespaces=(namespace,)))
    controllers.append(components.start_controller(cluster, name="replica-a"))
    controllers.append(
        components.start_controller(cluster, name="replica-b", metrics_port=7473, webhook=False)
    )
    (first,) = await kube.eventually(lambda: leaders(controllers), within=30, what="a leader")
    start = await lease_spec(admin)
    assert start["holderIdentity"] == first
    # The standby judges the configuration too: MetalLB's MetalLBConfigNotLoaded alert reads
    # this on every replica.
    standby = next(p for p in controllers if p.name != first)
    await kube.eventually(
        lambda: standby.metric("metallb_k8s_client_config_loaded_bool") == 1,
        within=10,
        what="the standby's config_loaded",
        blocking=True,
    )
    # More than two lease durations: a follower that missed renewals would have taken over.
    until = time.monotonic() + 2 * LEASE_DURATION + 10
    while time.monotonic() < until:
        for p in controllers:
            assert p.alive, f"{p.name} exited:\n{p.log_text()[-3000:]}"
        spec = await lease_spec(admin)
        assert (spec["holderIdentity"], spec.get("leaseTransitions")) == (
            first,
            start.get("leaseTransitions"),
        ), spec
        assert await leaders(controllers) == [first]
        await asyncio.sleep(1.0)
    await admin.create(k8s.SERVICES, kube.service("before"), namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "before"))

    leader = next(p for p in controllers if p.name == first)
    leader.kill()
    killed = time.monotonic()
    await admin.create(k8s.SERVICES, kube.service("after"), namespace)
    # The standby waits one lease duration without a renewal, then at most one retry period.
    await kube.eventually(
        lambda: kube.ingress(admin, namespace, "after"),
        within=LEASE_DURATION + RETRY + 5,
        what="the standby serving a new Service",
    )
    took = time.monotonic() - killed
    assert took <= LEASE_DURATION + RETRY + 5
    assert standby.alive
    assert await leaders([standby]) == [standby.name]
    spec = await lease_spec(admin)
    assert spec["holderIdentity"] == standby.name
    assert spec["leaseTransitions"] == start.get("leaseTransitions", 0) + 1
    assert await kube.ingress(admin, namespace, "before") == ["192.0.2.176"]
    assert await kube.ingress(admin, namespace, "after") == ["192.0.2.177"]


async def test_a_leader_that_loses_its_lease_exits_cleanly(
    cluster: lab_cluster.Cluster, admin: k8s.Client, controllers: list[components.Process]
) -> None:
    ctl = components.start_controller(
        cluster, name="replica-c", webhook=False, extra=("--lease-duration=3",)
    )
    controllers.append(ctl)
    # A replica of an earlier test may have held the Lease (15 s) when it was killed.
    await kube.eventually(lambda: leaders([ctl]), within=30, what="leading")
    # Another replica takes the Lease (as after a long pause of this one).
    taken = {"spec": {"holderIdentity": "intruder", "renewTime": "2026-01-01T00:00:00.000000Z"}}
    cluster.kubectl(
        "patch", "lease", LEASE, "-n", kube.CONFIG_NS, "--type=merge", "-p", json.dumps(taken)
    )
    code = await asyncio.to_thread(ctl.proc.wait, 15)
    log = ctl.log_text()
    assert code == 1, log[-3000:]
    assert "lost leadership" in log, log[-3000:]
    assert "intruder" in log
    assert "Traceback" not in log, log[-3000:]
