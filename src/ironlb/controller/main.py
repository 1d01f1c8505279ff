"""`ironlb controller`: wiring and lifecycle of one controller replica.

Every replica keeps its caches warm, judges the configuration (metrics), and serves the
admission webhook, metrics and probes; only the replica holding the Lease allocates. A replica
is Ready once its caches have listed and, with the webhook on, its webhook listens with a
certificate the published caBundle trusts: the webhook Service sends reviews to every Ready
replica. Losing the Lease ends the process with exit status `LOST_LEADERSHIP` and one log line
(it restarts clean and rebuilds everything from the API, like client-go controllers). SIGTERM:
stop taking work, finish the reconciles in flight, hand the Lease over, flush Events, exit.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import secrets

from ironlb.controller import allocation, metrics, webhook
from ironlb.controller import settings as settings_
from ironlb.core import backoff, migrate
from ironlb.daemon import lifecycle
from ironlb.k8s import client as k8s
from ironlb.k8s import events, leader, serving

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0
"""Seconds for the shutdown phases in all (the Pod's grace period is longer)."""
LOST_LEADERSHIP = 1
"""Exit status after losing the Lease (the kubelet restarts the container)."""


async def ensure_membership_secret(client: k8s.Client, settings: settings_.Settings) -> None:
    """Create the speakers' membership key if nobody has (MetalLB users may have one already:
    it is kept). Retried until the API server answers."""
    body = {
        "metadata": {
            "name": settings.membership_secret,
            "namespace": settings.namespace,
            "labels": {"app.kubernetes.io/part-of": "ironlb"},
        },
        "type": "Opaque",
        "data": {"secretkey": base64.b64encode(secrets.token_hex(32).encode()).decode()},
    }
    retry = backoff.Backoff(backoff.RECONCILE)
    while True:
        try:
            await client.create(k8s.SECRETS, body, settings.namespace)
            log.info("created membership Secret %s", settings.membership_secret)
            return
        except k8s.ApiError as e:
            if e.conflict:
                # Issue 13: a Secret left by MetalLB's controller is owned by its Deployment and
                # would be garbage-collected with it; keep the key, drop the owner.
                await _release_membership_secret(client, settings)
                return
            problem: Exception = e
        except k8s.Unreachable as e:
            problem = e
        delay = retry.next_wait(random.random())
        log.warning("membership Secret not ensured (%s); retrying in %.1fs", problem, delay)
        await asyncio.sleep(delay)


async def _release_membership_secret(client: k8s.Client, settings: settings_.Settings) -> None:
    name, ns = settings.membership_secret, settings.namespace
    try:
        patch = migrate.membership_secret_patch(await client.get(k8s.SECRETS, name, ns))
        if patch is not None:
            await client.patch(k8s.SECRETS, name, patch, ns)
            log.info("membership Secret %s adopted (owner references dropped)", name)
    except (k8s.ApiError, k8s.Unreachable) as e:
        log.warning("membership Secret %s not adopted: %s", name, e)


async def run(settings: settings_.Settings) -> int:
    life = lifecycle.Lifecycle("controller", grace=SHUTDOWN_GRACE)
    replica = _Replica(settings, life)
    return await life.serve(
        [
            lifecycle.Phase("connect to the API server", replica.connect),
            lifecycle.Phase("start caches, webhook, probes and the election", replica.start),
        ],
        [
            lifecycle.Phase("finish the reconciles in flight", replica.finish_work),
            lifecycle.Phase("hand the Lease over", replica.release),
            lifecycle.Phase("flush Events", replica.flush),
        ],
    )


class _Replica:
    """One controller replica's parts, built once the API client exists."""

    def __init__(self, settings: settings_.Settings, life: lifecycle.Lifecycle) -> None:
        self.settings = settings
        self.life = life

    async def connect(self) -> None:
        settings = self.settings
        self.client = client = await self.life.enter(k8s.Client.from_config(settings.kubeconfig))
        self.recorder = events.Recorder(client, "ironlb.io/controller", settings.identity)
        self.allocations = allocation.Allocations(client, settings, self.recorder)
        self.election = leader.LeaderElection(
            client,
            settings.namespace,
            settings.lease_name,
            settings.identity,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.lease_duration * 2 / 3,
            retry_period=settings.lease_duration / 7.5,
        )
        self.certs = webhook.Certificates(client, settings) if settings.webhook_port else None
        self.webhook_server = serving.Server(
            settings.listen_address,
            settings.webhook_port,
            {"/validate": webhook.Admission(self.allocations.config.objects, settings).handle},
            tls=self.certs.context if self.certs is not None else None,
        )

    def ready(self) -> str | None:
        problem = self.allocations.ready()
        if problem is not None or self.certs is None:
            return problem
        if not self.webhook_server.bound.is_set():
            return "webhook not listening yet"
        return self.certs.untrusted

    async def start(self) -> None:
        settings, life = self.settings, self.life
        life.start("events", self.recorder.run())
        life.start("membership secret", ensure_membership_secret(self.client, settings))
        for cache in self.allocations.caches:
            life.start(f"cache {cache.name}", cache.run())
        life.start("configuration", self.allocations.watch_config())
        if self.certs is not None:
            life.start("webhook", self.serve_webhook(self.certs))
        routes: dict[str, serving.Handler] = {
            "/metrics": serving.metrics,
            "/healthz": serving.probe(lambda: None),
            "/readyz": serving.probe(self.ready),
        }
        server = serving.Server(settings.listen_address, settings.metrics_port, routes)
        life.start("metrics and probes", server.serve())
        life.start("leader", self.lead())

    async def lead(self) -> None:
        await self.election.acquire()
        metrics.IS_LEADER.set(1)
        log.info("leading as %s", self.settings.identity)
        lost: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.election.keep_renewing(), name="renew the Lease")
                tg.create_task(self.allocations.lead(), name="allocate")
        except* leader.LostLeadership as group:
            lost = group.exceptions[0]
        if lost is not None:
            # Allocating on would race the new leader: stop everything, as SIGTERM does but
            # without handing over a Lease that is no longer ours.
            metrics.IS_LEADER.set(0)
            raise lifecycle.Exit(
                LOST_LEADERSHIP, f"lost leadership ({lost}): exiting so that a restart starts clean"
            )

    async def serve_webhook(self, certs: webhook.Certificates) -> None:
        retry = backoff.Backoff(backoff.RECONCILE)
        while True:
            try:
                await certs.ensure(may_rotate=False)
                break
            except (k8s.ApiError, k8s.Unreachable) as e:
                delay = retry.next_wait(random.random())
                log.warning("webhook certificate not ready (%s); retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(certs.keep_current(self.election.leading.is_set), name="certificate")
                tg.create_task(self.webhook_server.serve(), name="webhook server")
        finally:
            certs.close()

    async def finish_work(self) -> None:
        self.allocations.queue.close()
        await self.allocations.queue.idle()

    async def release(self) -> None:
        await self.election.release()

    async def flush(self) -> None:
        await self.recorder.flush()
