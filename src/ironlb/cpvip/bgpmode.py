"""`ironlb cpvip --mode bgp`: advertise the control-plane VIP as a host route from every node
whose kube-apiserver is healthy; the router spreads API traffic over them by ECMP.

The shell around `cpvip.advertise` (the decision) and the speaker's own BGP code
(`bgp.peers.Peer`, one per router, + BFD from `bgp.bfd_transport`): no election, no membership,
no Kubernetes API. Sessions run from start to exit whatever the health; health only changes the
routes they carry, so a withdrawal or a new advertisement is one UPDATE on a running session.

The VIP goes on `lo` as a /32 (/128) while it is advertised (and for `handover_timeout` after a
withdrawal): the kernel then accepts what the router sends to it, and a kube-apiserver listening
on every address (kubeadm's default) answers. `lo` rather than the LAN interface, because the VIP
is not in a LAN subnet (`settings.resolve_bgp` refuses that) and must not become one: an address
on the LAN interface would add a connected route for it, and nobody on the LAN should ask for it
by ARP/NDP. Removing it while withdrawn lets the node's own clients of the VIP (a kubelet) go
through the router to a healthy apiserver instead of the local unhealthy one.

Sessions connect out only (no listener): `ironlb speaker` may hold TCP port 179 on the same node.

SIGTERM / SIGINT: withdraw the route at once, keep the VIP on `lo` for `handover_timeout` (packets
already on their way are answered by the still-running apiserver), remove it, end every session
with a Cease, exit 0. The steps are the
named phases of `daemon.lifecycle` (logged as they run); a second signal forces the exit (130).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sys
import time

from ironlb.bgp import bfd, bfd_transport, families, fsm, peers, rib, session
from ironlb.cpvip import advertise, election
from ironlb.cpvip import main as arp_main
from ironlb.cpvip import settings as settings_
from ironlb.daemon import lifecycle
from ironlb.k8s import serving
from ironlb.net import addrs
from ironlb.net import links as net_links

log = logging.getLogger(__name__)

DEVICE = "lo"
CONNECT_TIME = 5.0
"""Seconds a connection attempt to a router may take."""
CEASE_FLUSH = 2.0
"""Seconds the Cease NOTIFICATIONs get to go out on exit."""


def read_password(path: str | None) -> str:
    if path is None:
        return ""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    password = lines[0].strip() if lines else ""
    if not password:
        raise arp_main.StartError(f"--bgp-password-file {path}: the first line is empty")
    return password


def peer_configs(
    settings: settings_.Settings, router_id: ipaddress.IPv4Address, password: str
) -> list[peers.PeerConfig]:
    family = (
        families.Family.IPV4_UNICAST if settings.vip.version == 4 else families.Family.IPV6_UNICAST
    )
    assert settings.bgp_local_asn is not None
    assert settings.bgp_peer_asn is not None
    config = session.SessionConfig(
        local_asn=settings.bgp_local_asn,
        router_id=router_id,
        peer_asn=settings.bgp_peer_asn,
        timers=fsm.Timers(hold_time=settings.bgp_hold_time, connect_retry_time=CONNECT_TIME),
        families=frozenset({family}),
    )
    source = settings.bgp_source_address
    return [
        peers.PeerConfig(
            session=config,
            address=ipaddress.ip_address(address),
            port=settings.bgp_peer_port,
            source_address=ipaddress.ip_address(source) if source else None,
            password=password,
        )
        for address in settings.bgp_peers
    ]


class BgpVip:
    def __init__(
        self,
        settings: settings_.Settings,
        resolved: settings_.BgpResolved,
        configs: list[peers.PeerConfig],
    ) -> None:
        self.settings = settings
        self.vip = settings.vip
        self.prefix: families.Prefix = ipaddress.ip_network(f"{self.vip}/{resolved.prefix_length}")
        self.family = families.Family.of(self.prefix)
        self.core = advertise.Advertiser(
            rise=settings.health_rise, fall=settings.health_fall, drain=settings.handover_timeout
        )
        self.configs = configs
        self.peers: list[peers.Peer] = []
        self.up: set[str] = set()
        self.holding = False
        """The VIP is on `lo` (as far as this process did it)."""
        self.advertised = False
        self._decision = self.core.tick(time.monotonic())
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._transitions = 0
        self._lock = asyncio.Lock()
        self._tls = arp_main.insecure_tls()

    def ready(self) -> str | None:
        if self.core.health is not election.Health.UP:
            return f"local kube-apiserver is {self.core.health.value.lower()}"
        if not self.up:
            return "no BGP session established"
        return None

    def _event(self, name: str, event: peers.Event) -> None:
        if isinstance(event, session.SessionUp):
            self.up.add(name)
        elif isinstance(event, session.SessionDown):
            self.up.discard(name)

    def _apply(self, decision: advertise.Decision, *, wake: bool = True) -> None:
        arp_main.HEALTHY.set(int(decision.health is election.Health.UP))
        if decision.transitions != self._transitions:
            arp_main.TRANSITIONS.inc(decision.transitions - self._transitions)
            self._transitions = decision.transitions
        if decision.state is not self._decision.state:
            log.info(
                "%s: %s (local kube-apiserver %s)",
                self.prefix,
                decision.state.value.lower(),
                decision.health.value.lower(),
            )
        self._decision = decision
        if wake:
            self._wake.set()

    async def _carry_out(self) -> None:
        """Make the address and the routes what the last decision says, in the safe order:
        the address before the route, the route withdrawn before the address goes."""
        async with self._lock:
            d = self._decision
            if d.address and not self.holding:
                try:
                    await addrs.add(DEVICE, self.vip, self.prefix.prefixlen)
                except net_links.NetlinkFailure as e:
                    arp_main.ADDRESS_ERRORS.inc()
                    log.error("cannot add %s to %s: %s", self.vip, DEVICE, e)
                    return  # retried on the next wake; never advertise what is not accepted
                self.holding = True
            if d.advertise != self.advertised:
                routes = {self.prefix: rib.RouteAttributes()} if d.advertise else {}
                for peer in self.peers:
                    peer.set_routes(self.family, routes)
                self.advertised = d.advertise
                arp_main.OWNER.set(int(d.advertise))
                log.info("%s %s", "advertising" if d.advertise else "withdrew", self.prefix)
            if not d.address and self.holding:
                await self.release()
            if d.stopped:
                self._stopped.set()

    async def release(self) -> None:
        try:
            await addrs.remove(DEVICE, self.vip, self.prefix.prefixlen)
        except net_links.NetlinkFailure as e:
            arp_main.ADDRESS_ERRORS.inc()
            log.error("cannot remove %s from %s: %s", self.vip, DEVICE, e)
            return
        self.holding = False

    # --- loops ------------------------------------------------------------------------------

    async def health_loop(self) -> None:
        await arp_main.check_forever(
            self.settings, self._tls, lambda now, ok: self._apply(self.core.checked(now, ok))
        )

    async def action_loop(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            self._apply(self.core.tick(time.monotonic()), wake=False)
            await self._carry_out()

    async def stop(self) -> None:
        """SIGTERM: withdraw, drain, remove the address (the core's STOPPING, then STOPPED)."""
        self._apply(self.core.stop(time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.handover_timeout + 2.0):
                await self._stopped.wait()


async def run(settings: settings_.Settings) -> int:
    try:
        all_links = await net_links.links()
        resolved = settings_.resolve_bgp(
            settings, [(link.name, link.addresses) for link in all_links]
        )
        configs = peer_configs(
            settings, resolved.router_id, read_password(settings.bgp_password_file)
        )
    except settings_.ResolveError as e:
        return arp_main.refuse(e)
    except (arp_main.StartError, ValueError) as e:
        print(f"ironlb cpvip: {e}", file=sys.stderr)
        return 2
    except (OSError, net_links.NetlinkFailure) as e:
        log.error("cannot start: %s", e)
        return 1
    vip = BgpVip(settings, resolved, configs)
    # Start without a predecessor's VIP (accepted here although nothing advertises it);
    # advertising adds it back.
    if not await arp_main.remove_leftover(vip.vip, DEVICE, vip.prefix.prefixlen):
        return 1
    log.info(
        "cpvip %s (bgp): AS %d to routers %s (AS %d), router ID %s%s",
        vip.prefix,
        settings.bgp_local_asn,
        ", ".join(settings.bgp_peers),
        settings.bgp_peer_asn,
        resolved.router_id,
        " with BFD" if settings.bgp_bfd else "",
    )
    profile = bfd.Profile(
        receive_interval=settings.bgp_bfd_interval,
        transmit_interval=settings.bgp_bfd_interval,
        detect_multiplier=settings.bgp_bfd_multiplier,
    )
    life = lifecycle.Lifecycle("cpvip")
    bfd_sessions: list[bfd_transport.Session] = []
    peer_tasks: list[asyncio.Task[object]] = []
    loops: dict[str, asyncio.Task[object]] = {}

    async def start_sessions() -> None:
        bfd_sockets = await life.enter(bfd_transport.Transport())
        for config in configs:
            bfd_session = (
                bfd_sockets.open_session(
                    config.address, local=config.source_address, profile=profile
                )
                if settings.bgp_bfd
                else None
            )
            if bfd_session is not None:
                bfd_sessions.append(bfd_session)
            name = config.name

            def on_event(event: peers.Event, name: str = name) -> None:
                vip._event(name, event)

            peer = peers.Peer(config, bfd_session=bfd_session, on_event=on_event)
            vip.peers.append(peer)
            peer_tasks.append(life.start(f"BGP {name}", peer.run()))

    async def serve_probes() -> None:
        if settings.metrics_port:
            routes = arp_main.probe_routes(vip.ready)
            # Every address: the kubelet probes the node's own (host network).
            server = serving.Server("", settings.metrics_port, routes)
            life.start("metrics and probes", server.serve())

    async def start_checks() -> None:
        loops["actions"] = life.start("actions", vip.action_loop())
        loops["health"] = life.start("health checks", vip.health_loop())

    async def stop_checks() -> None:
        await lifecycle.cancel(loops["health"])  # no health news may advertise again

    async def stop_actions() -> None:
        await lifecycle.cancel(loops["actions"])

    async def end_sessions() -> None:
        for peer in vip.peers:
            peer.stop("control-plane VIP stopping")
        for bfd_session in bfd_sessions:
            bfd_session.close()
        if peer_tasks:
            await asyncio.wait(peer_tasks, timeout=CEASE_FLUSH)

    try:
        return await life.serve(
            [
                lifecycle.Phase("start the BGP sessions", start_sessions),
                lifecycle.Phase("serve metrics and probes", serve_probes),
                lifecycle.Phase("check health and advertise", start_checks),
            ],
            [
                lifecycle.Phase("stop the health checks", stop_checks),
                lifecycle.Phase(f"withdraw {vip.prefix}, then remove it", vip.stop),
                lifecycle.Phase("stop the actions", stop_actions),
                lifecycle.Phase("end the BGP sessions (Cease)", end_sessions),
            ],
        )
    finally:
        if vip.holding:
            await vip.release()
