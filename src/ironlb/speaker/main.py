"""`ironlb speaker`: the entry point. Starts the speaker of this node (`speaker.speaker`), its
caches, probes and tasks, and on SIGTERM hands its addresses over before exiting.

The speaker's parts live by job: `speaker.speaker` (the plan and membership), `speaker.layer2`
(the announcer core's shell), `speaker.bgp`, `speaker.metrics`, `speaker.secrets`; the names
below are kept importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from ironlb.k8s import client as k8s
from ironlb.k8s import serving
from ironlb.membership import settings as member_settings
from ironlb.net import links as net_links
from ironlb.speaker import layer2, metrics, report, secrets
from ironlb.speaker import settings as settings_
from ironlb.speaker import speaker as node_speaker

log = logging.getLogger(__name__)

# The names this module had before the split, for the code and tests that import them here.
Speaker = node_speaker.Speaker
node_address = node_speaker.node_address
node_addresses = node_speaker.node_addresses
MEMBERSHIP_READY = node_speaker.MEMBERSHIP_READY
BGP_PORT = node_speaker.BGP_PORT
SecretData = secrets.SecretData
parse_secret = secrets.parse_secret
parse_keys = secrets.parse_keys
MEMBERSHIP = metrics.MEMBERSHIP
ISOLATED = metrics.ISOLATED
KEY_MISSING = metrics.KEY_MISSING
PLAN_ERRORS = metrics.PLAN_ERRORS
SETTLE = layer2.SETTLE


async def run(settings: settings_.Settings) -> int:
    async with k8s.Client.from_config(settings.kubeconfig) as client:
        speaker = Speaker(client, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with asyncio.TaskGroup() as tg:
            background = [tg.create_task(c.run()) for c in speaker.caches]
            background.append(tg.create_task(speaker.recorder.run()))
            background.append(tg.create_task(speaker.state.run()))
            # Probes are served before the caches have listed (with the pod's IP from the
            # downward API, before anything is read; else once the Nodes have listed): a slow
            # API server or a missing CRD makes an unready speaker (/readyz says which cache),
            # never a failing liveness probe and a kill loop.
            bind = settings.bind_address
            if bind is None:
                await speaker.nodes.listed.wait()
                bind = node_address(speaker.nodes.items.get(settings.node_name))
            if bind is None:
                raise SystemExit(
                    f"node {settings.node_name} has no InternalIP and no --bind-address was given"
                )
            routes: dict[str, serving.Handler] = {
                "/metrics": serving.metrics,
                "/healthz": serving.probe(lambda: None),
                "/readyz": serving.probe(speaker.ready),
            }
            background.append(
                tg.create_task(serving.Server(bind, settings.metrics_port, routes).serve())
            )
            for c in speaker.caches:
                await c.listed.wait()
            own_node = speaker.nodes.items.get(settings.node_name)
            addresses = node_addresses(own_node) or [bind]
            member_config = member_settings.Settings(
                probe_interval=settings.probe_interval,
                suspicion_timeout=settings.suspicion_timeout,
                lifeguard=settings.lifeguard,
            )
            async with net_links.Monitor() as monitor:
                speaker.links = monitor.links
                async with asyncio.TaskGroup() as inner:
                    membership = inner.create_task(speaker.membership(bind, member_config))
                    work = [
                        inner.create_task(speaker.layer2.run()),
                        inner.create_task(speaker.l2_status.run()),
                        inner.create_task(speaker.bgp_status.run()),
                        inner.create_task(speaker.bgp.run(addresses)),
                        inner.create_task(speaker.follow_sessions()),
                        inner.create_task(speaker.watch_links(monitor)),
                        inner.create_task(speaker.plan_loop()),
                        # This node's SpeakerReport, read by `ironlb status` / `ironlb doctor`.
                        inner.create_task(
                            report.Reporter(client, settings.namespace, speaker).run()
                        ),
                    ]
                    speaker.layer2.settle()
                    await stop.wait()
                    log.info("shutting down: handing addresses over")
                    speaker.draining = True
                    await speaker.plan_once()  # publish "draining"
                    await speaker.layer2.hand_over()
                    await speaker.bgp.stop_all()
                    for task in work:
                        task.cancel()
                    await speaker.leave()
                    membership.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await speaker.recorder.flush()
            for task in background:
                task.cancel()
    return 0
