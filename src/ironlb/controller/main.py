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
import signal

from ironlb.controller import allocation, metrics, webhook
from ironlb.controller import settings as settings_
from ironlb.core import backoff, migrate
from ironlb.k8s import client as k8s
from ironlb.k8s import events, leader, serving

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0
LOST_LEADERSHIP = 1
"""Exit status after losing the Lease (the kubelet restarts the container)."""


class _Stop(Exception):
    """Raised inside the task group to end it after a graceful shutdown."""


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
        delay = retry.next_delay(random.random()) or 10.0
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
    async with k8s.Client.from_config(settings.kubeconfig) as client:
        recorder = events.Recorder(client, "ironlb.io/controller", settings.identity)
        allocations = allocation.Allocations(client, settings, recorder)
        election = leader.LeaderElection(
            client,
            settings.namespace,
            settings.lease_name,
            settings.identity,
            lease_duration=settings.lease_duration,
            renew_deadline=settings.lease_duration * 2 / 3,
            retry_period=settings.lease_duration / 7.5,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        certs = webhook.Certificates(client, settings) if settings.webhook_port else None
        webhook_server = serving.Server(
            settings.listen_address,
            settings.webhook_port,
            {"/validate": webhook.Admission(allocations.config.objects, settings).handle},
            tls=certs.context if certs is not None else None,
        )

        def ready() -> str | None:
            problem = allocations.ready()
            if problem is not None or certs is None:
                return problem
            if not webhook_server.bound.is_set():
                return "webhook not listening yet"
            return certs.untrusted

        routes: dict[str, serving.Handler] = {
            "/metrics": serving.metrics,
            "/healthz": serving.probe(lambda: None),
            "/readyz": serving.probe(ready),
        }
        lost: list[BaseException] = []

        async def lead() -> None:
            await election.acquire()
            metrics.IS_LEADER.set(1)
            log.info("leading as %s", settings.identity)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(election.keep_renewing())
                    tg.create_task(allocations.lead())
            except* leader.LostLeadership as group:
                # Allocating on would race the new leader: stop everything, as SIGTERM does
                # but without handing over a Lease that is no longer ours.
                metrics.IS_LEADER.set(0)
                lost.append(group.exceptions[0])
                raise _Stop from None

        async def serve_webhook(certs: webhook.Certificates) -> None:
            retry = backoff.Backoff(backoff.RECONCILE)
            while True:
                try:
                    await certs.ensure(may_rotate=False)
                    break
                except (k8s.ApiError, k8s.Unreachable) as e:
                    delay = retry.next_delay(random.random()) or 10.0
                    log.warning("webhook certificate not ready (%s); retrying in %.1fs", e, delay)
                    await asyncio.sleep(delay)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(certs.keep_current(election.leading.is_set))
                    tg.create_task(webhook_server.serve())
            finally:
                certs.close()

        async def shutdown() -> None:
            await stop.wait()
            log.info("shutting down")
            allocations.queue.close()
            try:
                async with asyncio.timeout(SHUTDOWN_GRACE):
                    await allocations.queue.idle()
                    await election.release()
                    await recorder.flush()
            except TimeoutError:
                log.warning("shutdown grace period over; exiting with work in flight")
            raise _Stop

        exit_code = 0
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(shutdown())
                tg.create_task(recorder.run())
                tg.create_task(ensure_membership_secret(client, settings))
                for cache in allocations.caches:
                    tg.create_task(cache.run())
                tg.create_task(allocations.watch_config())
                if certs is not None:
                    tg.create_task(serve_webhook(certs))
                tg.create_task(
                    serving.Server(settings.listen_address, settings.metrics_port, routes).serve()
                )
                tg.create_task(lead())
        except* _Stop:
            pass
        if lost:
            log.error("lost leadership (%s): exiting so that a restart starts clean", lost[0])
            exit_code = LOST_LEADERSHIP
    return exit_code
