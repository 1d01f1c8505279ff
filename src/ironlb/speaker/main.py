"""`ironlb speaker`: the entry point. Starts the speaker of this node (`speaker.speaker`), its
caches, probes and tasks as named phases of the daemon lifecycle (`daemon.lifecycle`), and on
SIGTERM hands its addresses over before exiting (a second SIGTERM cuts that short).

The speaker's parts live by job: `speaker.speaker` (the plan and membership), `speaker.layer2`
(the announcer core's shell), `speaker.bgp`, `speaker.metrics`, `speaker.secrets`; this module
only starts and stops them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ironlb.daemon import lifecycle
from ironlb.k8s import client as k8s
from ironlb.k8s import serving
from ironlb.membership import settings as member_settings
from ironlb.net import links as net_links
from ironlb.speaker import report
from ironlb.speaker import settings as settings_
from ironlb.speaker import speaker as node_speaker

log = logging.getLogger(__name__)


async def run(settings: settings_.Settings) -> int:
    life = lifecycle.Lifecycle("speaker")
    node = _Node(settings, life)
    return await life.serve(
        [
            lifecycle.Phase("connect to the API server", node.connect),
            lifecycle.Phase("start the caches", node.start_caches),
            lifecycle.Phase("serve metrics and probes", node.serve_probes),
            lifecycle.Phase("wait for the caches to list", node.wait_for_caches),
            lifecycle.Phase("watch the links", node.watch_links),
            lifecycle.Phase("start membership, layer 2 and BGP", node.start_announcing),
        ],
        [
            lifecycle.Phase("publish draining", node.drain),
            lifecycle.Phase("hand the addresses over", node.hand_over),
            lifecycle.Phase("stop BGP", node.stop_bgp),
            lifecycle.Phase("stop the layer-2 and BGP tasks", node.stop_work),
            lifecycle.Phase("leave membership", node.leave),
            lifecycle.Phase("flush Events", node.flush, timeout=2.0),
        ],
    )


class _Node:
    """The speaker of this node and what its phases share."""

    def __init__(self, settings: settings_.Settings, life: lifecycle.Lifecycle) -> None:
        self.settings = settings
        self.life = life
        self.work: list[asyncio.Task[Any]] = []
        self.membership: asyncio.Task[Any] | None = None

    async def connect(self) -> None:
        self.client = await self.life.enter(k8s.Client.from_config(self.settings.kubeconfig))
        self.speaker = node_speaker.Speaker(self.client, self.settings)

    async def start_caches(self) -> None:
        for c in self.speaker.caches:
            self.life.start(f"cache {c.name}", c.run())
        self.life.start("events", self.speaker.recorder.run())
        self.life.start("configuration state", self.speaker.state.run())

    async def serve_probes(self) -> None:
        # Probes are served before the caches have listed (with the pod's IP from the downward
        # API, before anything is read; else once the Nodes have listed): a slow API server or
        # a missing CRD makes an unready speaker (/readyz says which cache), never a failing
        # liveness probe and a kill loop.
        settings, speaker = self.settings, self.speaker
        bind = settings.bind_address
        if bind is None:
            await speaker.nodes.listed.wait()
            bind = node_speaker.node_address(speaker.nodes.items.get(settings.node_name))
        if bind is None:
            raise SystemExit(
                f"node {settings.node_name} has no InternalIP and no --bind-address was given"
            )
        self.bind = bind
        routes: dict[str, serving.Handler] = {
            "/metrics": serving.metrics,
            "/healthz": serving.probe(lambda: None),
            "/readyz": serving.probe(speaker.ready),
        }
        server = serving.Server(bind, settings.metrics_port, routes)
        self.life.start("metrics and probes", server.serve())

    async def wait_for_caches(self) -> None:
        for c in self.speaker.caches:
            await c.listed.wait()

    async def watch_links(self) -> None:
        self.monitor = await self.life.enter(net_links.Monitor())
        self.speaker.links = self.monitor.links

    async def start_announcing(self) -> None:
        settings, speaker, life = self.settings, self.speaker, self.life
        own_node = speaker.nodes.items.get(settings.node_name)
        own_ips = own_node.internal_ips if own_node is not None else ()
        addresses = [str(ip) for ip in own_ips] or [self.bind]
        member_config = member_settings.Settings(
            probe_interval=settings.probe_interval,
            suspicion_timeout=settings.suspicion_timeout,
            lifeguard=settings.lifeguard,
        )
        self.membership = life.start("membership", speaker.membership(self.bind, member_config))
        self.work = [
            life.start("layer 2", speaker.layer2.run()),
            life.start("ServiceL2Status", speaker.l2_status.run()),
            life.start("ServiceBGPStatus", speaker.bgp_status.run()),
            life.start("BGP", speaker.bgp.run(addresses)),
            life.start("BGP sessions", speaker.follow_sessions()),
            life.start("links", speaker.watch_links(self.monitor)),
            life.start("plan", speaker.plan_loop()),
            # This node's SpeakerReport, read by `ironlb status` / `ironlb doctor`.
            life.start(
                "SpeakerReport", report.Reporter(self.client, settings.namespace, speaker).run()
            ),
        ]
        speaker.layer2.settle()

    async def drain(self) -> None:
        self.speaker.draining = True
        await self.speaker.plan_once()  # publish "draining"

    async def hand_over(self) -> None:
        await self.speaker.layer2.hand_over()

    async def stop_bgp(self) -> None:
        await self.speaker.bgp.stop_all()

    async def stop_work(self) -> None:
        for task in self.work:
            await lifecycle.cancel(task)

    async def leave(self) -> None:
        await self.speaker.leave()
        if self.membership is not None:
            await lifecycle.cancel(self.membership)

    async def flush(self) -> None:
        await self.speaker.recorder.flush()
