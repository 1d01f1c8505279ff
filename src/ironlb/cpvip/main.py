"""`ironlb cpvip`: the asyncio shell that holds the control-plane VIP (ARP/NDP mode).

No Kubernetes API: the facts are the local kube-apiserver's `/readyz` (probed over loopback,
anonymous HTTPS without certificate verification, every `health_interval`), cpvip membership
(SWIM + HMAC on its own port, health published as meta) and the link of the VIP's interface.
Decisions come from two sans-IO cores: `cpvip.election` (hold the VIP or not) and the layer-2
announcer core (`l2.announcer`: settling, gratuitous schedule, handover). The shell carries out
the announcer's actions: `Answer` adds the address to the interface (IPv6 without DAD) and answers
ARP/NDP with the speaker's responder, `Gratuitous` sends gratuitous ARP / unsolicited NA, `Stop`
withdraws and removes the address. A claim of the VIP by another MAC (the next owner's gratuitous
announcement) ends a handover.

SIGTERM / SIGINT: stop being a candidate (published at once), keep the VIP until the next owner
claims it or `handover_timeout` passes, remove it, leave membership, exit 0. The steps are the
named phases of `daemon.lifecycle` (logged as they run); a second signal forces the exit (130).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram

from ironlb.core import election as core_election
from ironlb.core import model
from ironlb.core.addresses import IP
from ironlb.cpvip import discovery, election
from ironlb.cpvip import settings as settings_
from ironlb.daemon import lifecycle
from ironlb.k8s import client as k8s
from ironlb.k8s import serving
from ironlb.l2 import announcer, ethernet, responder
from ironlb.membership import model as member_model
from ironlb.membership import settings as member_settings
from ironlb.membership import transport, wire
from ironlb.net import addrs
from ironlb.net import links as net_links

log = logging.getLogger(__name__)

OWNER = Gauge("ironlb_cpvip_owner", "1 while this node holds the control-plane VIP.")
HEALTHY = Gauge("ironlb_cpvip_healthy", "1 while the local kube-apiserver counts as healthy.")
CANDIDATES = Gauge("ironlb_cpvip_candidates", "Members whose kube-apiserver is healthy.")
TRANSITIONS = Counter("ironlb_cpvip_transitions", "Role changes of this node for the VIP.")
CHECKS = Counter("ironlb_cpvip_health_checks", "Health checks of the local apiserver.", ["result"])
CHECK_SECONDS = Histogram(
    "ironlb_cpvip_health_check_seconds",
    "Duration of a health check.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
DISCOVERIES = Counter(
    "ironlb_cpvip_discoveries",
    "Listings of the control-plane Nodes (with --kubeconfig), by result.",
    ["result"],
)
PEERS = Gauge("ironlb_cpvip_peers", "Other control-plane nodes membership probes.")
DISCOVERY_TIMEOUT = 3.0
"""Seconds one listing of the control-plane Nodes may take (the API may be unreachable: nobody
holds the VIP yet)."""
ADDRESS_ERRORS = Counter(
    "ironlb_cpvip_address_errors", "Failures adding or removing the VIP on the interface."
)


class StartError(Exception):
    """A setting that does not fit this node: one line, exit status 2."""


def read_keys(path: str) -> tuple[bytes, ...]:
    """One key a line (the first signs), each at least 16 bytes."""
    with open(path, "rb") as f:
        keys = tuple(line.strip() for line in f.read().splitlines() if line.strip())
    if not keys or any(len(k) < 16 for k in keys):
        raise StartError(f"--key-file {path}: need at least one key a line, each of >= 16 bytes")
    return keys


async def check_health(url: str, limit: float, tls: ssl.SSLContext) -> bool:
    """GET `url` once: True on a 200 within `limit` seconds (anonymous, certificate not checked)."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls if https else None, server_hostname=host if https else None
            )
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status = await reader.readline()
            return status.split(b" ", 2)[1:2] == [b"200"]
    except (OSError, TimeoutError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(0.1):
                    await writer.wait_closed()


def insecure_tls() -> ssl.SSLContext:
    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    return tls


async def check_forever(
    settings: settings_.Settings, tls: ssl.SSLContext, checked: Callable[[float, bool], None]
) -> None:
    """Check the local kube-apiserver every `health_interval` and hand each result to `checked`
    (with its time), counted in the metrics. Both modes' health loop."""
    while True:
        started = time.monotonic()
        ok = await check_health(settings.health_url, settings.health_timeout, tls)
        CHECK_SECONDS.observe(time.monotonic() - started)
        CHECKS.labels("ok" if ok else "failed").inc()
        checked(time.monotonic(), ok)
        await asyncio.sleep(max(0.0, settings.health_interval - (time.monotonic() - started)))


def refuse(e: settings_.ResolveError) -> int:
    """A setting that does not fit this node: one line naming the flag and its variable."""
    flag = "--" + e.field.replace("_", "-")
    print(
        f"ironlb cpvip: invalid {flag} (IRONLB_CPVIP_{e.field.upper()}): {e.problem}",
        file=sys.stderr,
    )
    return 2


async def remove_leftover(
    vip: IP, device: str, prefix_length: int, index: int | None = None
) -> bool:
    """Remove the VIP a killed predecessor (SIGKILL, OOM, a crash) left on `device`: this
    node's kernel would accept or answer for it although nothing announces it. False (logged)
    when the kernel refuses."""
    try:
        if await addrs.remove(device, vip, prefix_length, index):
            log.warning("removed %s left on %s by an earlier run", vip, device)
    except net_links.NetlinkFailure as e:
        log.error("cannot remove a leftover %s from %s: %s", vip, device, e)
        return False
    return True


def probe_routes(ready: Callable[[], str | None]) -> dict[str, serving.Handler]:
    """/metrics, /healthz and /readyz (`ready`: None, or why not)."""
    return {
        "/metrics": serving.metrics,
        "/healthz": serving.probe(lambda: None),
        "/readyz": serving.probe(ready),
    }


class Cpvip:
    def __init__(
        self,
        settings: settings_.Settings,
        resolved: settings_.Resolved,
        keys: Sequence[bytes],
        link: net_links.Link,
    ) -> None:
        self.settings = settings
        self.resolved = resolved
        self.vip = settings.vip
        self.name = core_election.NodeName(str(resolved.bind))
        self.link = link
        self.core = election.Election(
            self.name,
            self.vip,
            rise=settings.health_rise,
            fall=settings.health_fall,
            handover=settings.handover_timeout,
        )
        self.announcer = announcer.Announcer(
            self.name,
            announcer.Timing(
                probe=0.0,
                gratuitous_interval=settings.gratuitous_interval,
                gratuitous_duration=settings.gratuitous_duration,
                handover_timeout=settings.handover_timeout,
                settle=max(1.0, 4 * settings.probe_interval + settings.suspicion_timeout),
            ),
        )
        self.transport = transport.Transport(
            self.name,
            member_model.Endpoint(resolved.bind, settings.membership_port),
            keys,
            on_event=self._member_event,
            config=member_settings.Settings(
                probe_interval=settings.probe_interval,
                suspicion_timeout=settings.suspicion_timeout,
            ),
        )
        self.peers = {
            core_election.NodeName(str(ip)): member_model.Endpoint(ip, port)
            for ip, port in settings.peer_endpoints()
        }
        self.static_peers = dict(self.peers)
        """`--peers`: kept whatever discovery finds."""
        self._discovery_failing = False
        self.responder: responder.Responder | None = None
        self.holding = False
        """The VIP is on the interface (as far as this process did it)."""
        self.carrier = link.carrier and link.up
        self._meta = b""
        self._transitions = 0
        self._decision: election.Decision | None = None
        self._released = asyncio.Event()
        self._wake = asyncio.Event()
        self._pending: list[announcer.Action] = []
        self._lock = asyncio.Lock()
        self._tls = insecure_tls()

    # --- readiness --------------------------------------------------------------------------

    def ready(self) -> str | None:
        if self.core.health is not election.Health.UP:
            return f"local kube-apiserver is {self.core.health.value.lower()}"
        if self.announcer.isolated:
            return "membership packets fail authentication (wrong key?)"
        return None

    # --- facts in ---------------------------------------------------------------------------

    def _member_event(self, _event: member_model.Event) -> None:
        self._facts_changed()

    def _facts_changed(self) -> None:
        now = time.monotonic()
        members = self.transport.members
        peers = {
            name: election.Peer(m.state.is_live, m.meta)
            for name, m in members.items()
            if name != self.name
        }
        self._apply(self.core.peers(now, peers))
        heard = member_model.peers_answered(members, self.name)
        verified = any(m.state.is_live for n, m in members.items() if n != self.name)
        bad_mac = self.transport.dropped.get(wire.DropReason.BAD_MAC, 0)
        self._queue(
            self.announcer.membership(
                now, running=True, peers_heard=heard, verified_peers=verified, bad_mac=bad_mac
            )
        )

    def _apply(self, decision: election.Decision) -> None:
        now = time.monotonic()
        HEALTHY.set(int(decision.health is election.Health.UP))
        CANDIDATES.set(len(self.core.candidates()))
        if decision.transitions != self._transitions:
            TRANSITIONS.inc(decision.transitions - self._transitions)
            self._transitions = decision.transitions
            log.info(
                "role %s (owner %s, health %s)",
                decision.role.value,
                decision.owner,
                decision.health.value,
            )
        if decision.meta != self._meta:
            self._meta = decision.meta
            self.transport.set_meta(decision.meta)
        if decision.role is election.Role.DRAINED:
            if not self.announcer.handing_over():
                self._queue(self.announcer.drain(now))
            return
        self._decision = decision
        self._plan(now)

    def _plan(self, now: float) -> None:
        d = self._decision
        # YIELDING keeps what is held; it never takes the VIP (settling may have delayed it).
        want = d is not None and d.holds and (d.role is not election.Role.YIELDING or self.holding)
        interfaces = (self.resolved.interface,) if self.carrier else ()
        mine = (
            {self.vip: announcer.Target(interfaces=interfaces, known=True, why_none="no carrier")}
            if want
            else {}
        )
        self._queue(self.announcer.plan(now, mine))

    def start(self) -> None:
        self._queue(self.announcer.start(time.monotonic()))

    def _queue(self, actions: list[announcer.Action]) -> None:
        self._pending += actions
        self._wake.set()

    def _conflict(self, address: responder.Address, mac: ethernet.MacAddress) -> None:
        if address != self.vip:
            return
        now = time.monotonic()
        self._queue(self.announcer.claimed(now, address, str(mac)))
        # While YIELDING, the new owner's claim ends the handover at once.
        self._apply(self.core.claimed(now))

    # --- peers ------------------------------------------------------------------------------

    async def discover(self, api: k8s.Client) -> None:
        """List the control-plane Nodes once; probe what `--peers` and they name together."""
        try:
            async with asyncio.timeout(DISCOVERY_TIMEOUT):
                items, _ = await api.list_all(
                    k8s.NODES, label_selector=discovery.CONTROL_PLANE_LABEL
                )
        except (k8s.ApiError, k8s.Unreachable, TimeoutError) as e:
            DISCOVERIES.labels("failed").inc()
            if not self._discovery_failing:
                log.warning("cannot list the control-plane Nodes (peers unchanged): %s", e)
            self._discovery_failing = True
            return
        nodes = []
        for item in items:
            try:
                nodes.append(model.parse_node(item))
            except model.ModelError as e:
                log.warning("control-plane Node skipped: %s", e)
        DISCOVERIES.labels("ok").inc()
        self._discovery_failing = False
        found = discovery.peers_from_nodes(nodes, self.resolved.bind, self.settings.membership_port)
        peers = discovery.merged(self.static_peers, found)
        if peers != self.peers:
            log.info("peers (from --peers and the control-plane Nodes): %s", ", ".join(peers))
            self.peers = peers
            self.transport.set_peers(peers)
        PEERS.set(len(peers))

    async def discovery_loop(self, api: k8s.Client) -> None:
        while True:
            await asyncio.sleep(self.settings.discovery_interval)
            await self.discover(api)

    # --- loops ------------------------------------------------------------------------------

    async def health_loop(self) -> None:
        await check_forever(
            self.settings, self._tls, lambda now, ok: self._apply(self.core.checked(now, ok))
        )

    async def link_loop(self, monitor: net_links.Monitor) -> None:
        async for event in monitor:
            if event.link.name != self.resolved.interface:
                continue
            up = event.link.up and event.link.carrier
            if up != self.carrier:
                self.carrier = up
                log.info("%s carrier %s", self.resolved.interface, "up" if up else "down")
                if up:
                    self._queue(self.announcer.carrier(time.monotonic(), True))
                self._apply(self.core.peers(time.monotonic(), self._peer_view()))
            if event.link.mac != self.link.mac and event.link.mac is not None:
                self.link = event.link

    def _peer_view(self) -> dict[core_election.NodeName, election.Peer]:
        return {
            n: election.Peer(m.state.is_live, m.meta)
            for n, m in self.transport.members.items()
            if n != self.name
        }

    async def action_loop(self) -> None:
        while True:
            deadlines = [self.announcer.next_deadline(), self.core.yield_until]
            deadline = min((d for d in deadlines if d is not None), default=None)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            if self.core.yield_until is not None and now >= self.core.yield_until:
                self._apply(self.core.tick(now))
            self._pending += self.announcer.tick(now)
            await self._carry_out()

    async def _carry_out(self) -> None:
        async with self._lock:
            while self._pending:
                action = self._pending.pop(0)
                await self._one(action)

    async def _one(self, action: announcer.Action) -> None:
        if isinstance(action, announcer.Answer):
            await self._take(action)
        elif isinstance(action, announcer.Stop):
            await self.release(action.reason, action.warning)
        elif isinstance(action, announcer.Gratuitous):
            if self.responder is not None:
                with contextlib.suppress(ValueError, OSError):
                    self.responder.send_gratuitous(action.address)
        elif isinstance(action, announcer.Probe):
            # Probing is off (Timing.probe=0, every target `known`): should not happen.
            self._pending += self.announcer.probed(time.monotonic(), action.address, None)
        elif isinstance(action, announcer.Warn):
            log.warning("%s", action.note)
        elif isinstance(action, announcer.Isolated) and action.isolated:
            log.error("membership packets fail authentication: this node's key differs")

    async def _take(self, action: announcer.Answer) -> None:
        if self.holding:
            return
        try:
            await addrs.add(
                self.resolved.interface, self.vip, self.resolved.prefix_length, self.link.index
            )
            r = await self._responder()
            r.announce(self.vip)
        except (OSError, net_links.NetlinkFailure) as e:
            ADDRESS_ERRORS.inc()
            log.error("cannot add %s to %s: %s", self.vip, self.resolved.interface, e)
            self._pending += self.announcer.failed(time.monotonic(), self.vip, str(e))
            return
        self.holding = True
        self._released.clear()
        OWNER.set(1)
        log.info("holding %s on %s", self.vip, self.resolved.interface)

    async def release(self, reason: str, warning: bool = False) -> None:
        if self.responder is not None:
            self.responder.withdraw(self.vip)
        try:
            await addrs.remove(
                self.resolved.interface, self.vip, self.resolved.prefix_length, self.link.index
            )
        except net_links.NetlinkFailure as e:
            ADDRESS_ERRORS.inc()
            log.error("cannot remove %s from %s: %s", self.vip, self.resolved.interface, e)
        if self.holding:
            log.log(
                logging.WARNING if warning else logging.INFO, "released %s: %s", self.vip, reason
            )
        self.holding = False
        self._released.set()
        OWNER.set(0)

    async def _responder(self) -> responder.Responder:
        if self.responder is not None and str(self.responder.mac) == self.link.mac:
            return self.responder
        if self.responder is not None:
            await self.responder.__aexit__(None, None, None)
            self.responder = None
        if self.link.mac is None:
            raise OSError(f"{self.link.name} has no MAC address")
        r = responder.Responder(
            self.link.name,
            self.link.index,
            ethernet.MacAddress.parse(self.link.mac),
            on_conflict=self._conflict,
        )
        await r.__aenter__()
        self.responder = r
        return r

    async def hand_over(self) -> None:
        """SIGTERM: publish 'not a candidate', keep the VIP until it is claimed or the handover
        times out, remove it."""
        self._apply(self.core.drain(time.monotonic()))
        if self.holding:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.handover_timeout + 1.0):
                    await self._released.wait()
        if self.holding:
            await self.release("stopping")

    async def close(self) -> None:
        if self.responder is not None:
            await self.responder.__aexit__(None, None, None)
            self.responder = None


async def run(settings: settings_.Settings) -> int:
    try:
        all_links = await net_links.links()
        resolved = settings_.resolve(settings, [(link.name, link.addresses) for link in all_links])
        assert settings.key_file is not None
        keys = read_keys(settings.key_file)
        api = (
            k8s.Client.from_config(settings.kubeconfig, timeout=DISCOVERY_TIMEOUT)
            if settings.kubeconfig is not None
            else None
        )
    except k8s.ConfigurationError as e:
        print(f"ironlb cpvip: invalid --kubeconfig (IRONLB_CPVIP_KUBECONFIG): {e}", file=sys.stderr)
        return 2
    except settings_.ResolveError as e:
        return refuse(e)
    except StartError as e:
        print(f"ironlb cpvip: {e}", file=sys.stderr)
        return 2
    except (OSError, net_links.NetlinkFailure) as e:
        log.error("cannot start: %s", e)
        return 1
    link = next(link for link in all_links if link.name == resolved.interface)
    vip = Cpvip(settings, resolved, keys, link)
    # Start without a predecessor's VIP (its kernel would answer beside the real owner);
    # ownership adds it back.
    if not await remove_leftover(vip.vip, resolved.interface, resolved.prefix_length, link.index):
        return 1
    log.info(
        "cpvip %s on %s as %s, peers %s",
        settings.vip,
        resolved.interface,
        vip.name,
        ", ".join(vip.peers) or "none",
    )
    life = lifecycle.Lifecycle("cpvip")
    loops: list[asyncio.Task[object]] = []

    async def join() -> None:
        await life.enter(vip.transport)
        vip.transport.set_peers(vip.peers)
        PEERS.set(len(vip.peers))

    async def discover() -> None:
        # Once before the election starts: a node that joins an existing cluster meets its
        # peers before it could take the VIP alone. Unanswered (the first node: nobody holds
        # the VIP yet), it starts with --peers and tries again every discovery_interval.
        if api is not None:
            await life.enter(api)
            await vip.discover(api)
            life.start("discovery", vip.discovery_loop(api))

    async def serve_probes() -> None:
        if settings.metrics_port:
            routes = probe_routes(vip.ready)
            server = serving.Server(str(resolved.bind), settings.metrics_port, routes)
            life.start("metrics and probes", server.serve())

    async def start() -> None:
        monitor = await life.enter(net_links.Monitor())
        loops.append(life.start("actions", vip.action_loop()))
        loops.append(life.start("health checks", vip.health_loop()))
        loops.append(life.start("links", vip.link_loop(monitor)))
        vip.start()

    async def stop_loops() -> None:
        for task in loops:
            await lifecycle.cancel(task)

    try:
        return await life.serve(
            [
                lifecycle.Phase("join membership", join),
                lifecycle.Phase("discover the other control-plane nodes", discover),
                lifecycle.Phase("serve metrics and probes", serve_probes),
                lifecycle.Phase("check health, watch the link, elect", start),
            ],
            [
                lifecycle.Phase(f"hand {settings.vip} over", vip.hand_over),
                lifecycle.Phase("stop the loops", stop_loops),
                lifecycle.Phase("leave membership", vip.transport.leave),
            ],
        )
    finally:
        if vip.holding:
            await vip.release("stopping")
        await vip.close()
