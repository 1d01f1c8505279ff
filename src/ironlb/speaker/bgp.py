"""BGP announcing on this node: BGPPeers become sessions, `core.announce.bgp`'s plan becomes
their routes.

A session is (re)started only when what it is made of changes (addresses, ASNs, timers,
password, BFD profile, families): a new community or Service only changes routes, which go out
as UPDATEs on the running session. Passwords come from `password` or from the basic-auth Secret
`passwordSecret` names (key `password`). A BFDProfile turns on BFD (RFC 5880/5881, RFC 5883 when
`ebgpMultiHop`), and a BFD Down takes the BGP session down at once.

With `enableGracefulRestart`, a starting speaker asks its peers to keep its routes until it has
re-announced them (RFC 4724 R bit), and on SIGTERM it drops the sessions without a
NOTIFICATION so that they do; without it, SIGTERM sends a Cease and the routers withdraw this
node's next hops at once (ECMP carries on through the other nodes).

TCP port 179 is listened on only while some BGPPeer selects this node (a router may open the
session), never on a layer-2-only node: Calico's BIRD, kube-router or a host FRR may hold it.
If the port is taken, the sessions run active only (this node connects out), the problem is
reported (`on_listen`: an Event and a ConfigurationState condition; a metric), layer 2 goes on,
and listening is tried again every `LISTEN_RETRY` seconds for sessions started after that.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import Gauge

from ironlb.bgp import attributes, bfd, bfd_transport, families, fsm, peers, rib, session
from ironlb.core import announce, config, diagnosis, model

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIME = 10.0
"""Seconds a connection attempt may take when the BGPPeer sets no connectTime."""
LISTEN_RETRY = 30.0
"""Seconds between attempts to listen on the BGP port after it was found taken."""
LISTEN_FAILED = Gauge(
    "ironlb_bgp_listen_failed_bool",
    "1 while BGP peers select this node but the BGP port cannot be listened on (taken by"
    " another daemon): sessions run active only",
)


class _SecretLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def data(self) -> Mapping[str, str]: ...


class PeerError(Exception):
    """A BGPPeer that cannot be run as configured (reported, not fatal)."""


@dataclass
class _Session:
    """One BGPPeer's running session: what it was started from, its task and BFD session, and
    what `ironlb doctor` shows of it."""

    config: peers.PeerConfig
    bfd_profile: bfd.Profile | None
    peer: peers.Peer
    task: asyncio.Task[None]
    bfd_session: bfd_transport.Session | None = None
    up: bool = False
    routes: dict[families.Family, dict[families.Prefix, rib.RouteAttributes]] = field(
        default_factory=dict
    )
    since: float = field(default_factory=time.time)  # for `ironlb doctor`: last up/down
    last_down: str = ""  # for `ironlb doctor`: why the session last went down


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def route_attributes(route: announce.Route) -> rib.RouteAttributes:
    standard = frozenset(c for c in route.communities if isinstance(c, attributes.Community))
    large = frozenset(c for c in route.communities if isinstance(c, attributes.LargeCommunity))
    return rib.RouteAttributes(
        local_pref=route.local_pref, communities=standard, large_communities=large
    )


def bfd_profile(profile: config.BFDProfile) -> bfd.Profile:
    spec = profile.spec
    return bfd.Profile(
        receive_interval=spec.receive_interval,
        transmit_interval=spec.transmit_interval,
        detect_multiplier=spec.detect_multiplier,
        echo_mode=spec.echo_mode,
        echo_interval=spec.echo_interval,
        passive_mode=spec.passive_mode,
        minimum_ttl=spec.minimum_ttl,
    )


class PeerSessions:
    """This node's BGP sessions, one per BGPPeer that selects it, and the routes each carries."""

    def __init__(
        self,
        node: str,
        namespace: str,
        secret: Callable[[str], _SecretLike | None],
        *,
        on_listen: Callable[[str | None], None] = lambda _problem: None,
        port: int = 179,
    ) -> None:
        """`secret(name)`: a Secret of `namespace` from the speaker's cache. `on_listen(problem)`:
        called with why the BGP port cannot be listened on, and with None once it is (or is no
        longer needed)."""
        self._secret = secret
        self._on_listen = on_listen
        self._port = port
        self._addresses: list[str] = []
        self._listen_failed_at: float | None = None
        self._node = node
        self._namespace = namespace
        self._running: dict[str, _Session] = {}
        self._listener: peers.Listener | None = None
        self._bfd: bfd_transport.Transport | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._started = False
        # What was last logged, so that a problem is logged when it changes, not every plan.
        self._peer_problems: dict[str, str] = {}
        """Peer name -> why it is not running."""
        self._plan_problems: tuple[str, ...] = ()
        """The last plan's problems (`announce.BgpPlan.problems`)."""
        self.changed = asyncio.Event()
        """Set when a session comes up or goes down (the status objects follow)."""

    @property
    def peer_problems(self) -> dict[str, str]:
        """BGPPeer name -> why its configuration cannot be used here (no session runs)."""
        return dict(self._peer_problems)

    @property
    def established(self) -> set[str]:
        return {name for name, r in self._running.items() if r.up}

    async def run(self, addresses: list[str]) -> None:
        """Own the listener (while peers need it), the BFD transport and the sessions until
        cancelled."""
        self._addresses = addresses
        async with (
            bfd_transport.Transport() as bfd_sockets,
            asyncio.TaskGroup() as tg,
        ):
            self._bfd, self._tasks = bfd_sockets, tg
            try:
                await asyncio.Event().wait()
            finally:
                for r in self._running.values():
                    r.peer.close()
                await self._stop_listening()
                self._bfd = self._tasks = None

    async def _listen(self) -> None:
        """Listen on the BGP port if not yet, unless it was found taken less than
        `LISTEN_RETRY` seconds ago."""
        now = time.monotonic()
        if self._listener is not None or (
            self._listen_failed_at is not None and now - self._listen_failed_at < LISTEN_RETRY
        ):
            return
        listener = peers.Listener([_ip(a) for a in self._addresses], self._port)
        try:
            await listener.__aenter__()
        except peers.SpeakerError as e:
            first = self._listen_failed_at is None
            self._listen_failed_at = now
            LISTEN_FAILED.set(1)
            if first:
                log.error("%s: BGP sessions run active only (this node connects out)", e)
                self._on_listen(f"{e}: BGP sessions run active only")
            return
        self._listener = listener
        if self._listen_failed_at is not None:
            log.info("listening on BGP port %d again", self._port)
        self._listen_failed_at = None
        LISTEN_FAILED.set(0)
        self._on_listen(None)

    async def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.__aexit__(None, None, None)
        if self._listen_failed_at is not None:
            self._listen_failed_at = None
            LISTEN_FAILED.set(0)
            self._on_listen(None)

    # --- configuration -> sessions ------------------------------------------------------------

    def _password(self, peer: config.BGPPeer) -> str:
        spec = peer.spec
        if spec.password_secret is None:
            return str(spec.password)
        ref = spec.password_secret
        if ref.namespace and ref.namespace != self._namespace:
            raise PeerError(
                f"passwordSecret {ref.namespace}/{ref.name}: the Secret must be in "
                f"{self._namespace}, with the configuration"
            )
        secret = self._secret(ref.name)
        if secret is None:
            raise PeerError(f"passwordSecret {self._namespace}/{ref.name} does not exist")
        value = secret.data.get("password")
        if secret.type != "kubernetes.io/basic-auth" or not value:
            raise PeerError(
                f"passwordSecret {self._namespace}/{ref.name} must be of type "
                "kubernetes.io/basic-auth with a 'password' key"
            )
        return base64.b64decode(value).decode()

    def _peer_config(
        self, peer: config.BGPPeer, node: model.Node, cfg: config.Config
    ) -> tuple[peers.PeerConfig, bfd.Profile | None]:
        spec = peer.spec
        if spec.peer_address is None:
            raise PeerError("peerAddress is required (unnumbered BGP is not supported)")
        address = _ip(spec.peer_address)
        own = {ip.version: ip for ip in node.internal_ips}
        router_id = spec.router_id or (str(own[4]) if 4 in own else None)
        if router_id is None:
            raise PeerError("no routerID and the node has no IPv4 InternalIP to use instead")
        timers = spec.timers()
        hold, keepalive = (int(timers[0]), int(timers[1])) if timers else (90, None)
        fams = (
            frozenset(families.Family)
            if spec.dual_stack_address_family
            else frozenset(
                {
                    families.Family.IPV4_UNICAST
                    if address.version == 4
                    else families.Family.IPV6_UNICAST
                }
            )
        )
        v4 = own.get(4)
        v6 = own.get(6)
        session_config = session.SessionConfig(
            local_asn=spec.my_asn,
            router_id=ipaddress.IPv4Address(router_id),
            peer_asn=None if spec.dynamic_asn else spec.peer_asn,
            dynamic_asn=session.DynamicAsn(spec.dynamic_asn) if spec.dynamic_asn else None,
            timers=fsm.Timers(
                hold_time=hold,
                keepalive_time=keepalive
                if keepalive is not None and keepalive != hold // 3
                else None,
                connect_retry_time=float(spec.connect_time or DEFAULT_CONNECT_TIME),
            ),
            families=fams,
            graceful_restart=session.GracefulRestartConfig()
            if spec.enable_graceful_restart
            else None,
            # Next hops of the other family, on a dual-stack session: the node's own address.
            next_hop_v4=v4
            if address.version == 6 and isinstance(v4, ipaddress.IPv4Address)
            else None,
            next_hop_v6=v6
            if address.version == 4 and isinstance(v6, ipaddress.IPv6Address)
            else None,
        )
        profile = None
        if spec.bfd_profile:
            known = cfg.bfd_profiles.get(spec.bfd_profile)
            if known is None:
                raise PeerError(f"bfdProfile {spec.bfd_profile!r} does not exist")
            profile = bfd_profile(known)
        source = _ip(spec.source_address) if spec.source_address else None
        return peers.PeerConfig(
            session=session_config,
            address=address,
            port=spec.peer_port,
            source_address=source,
            password=self._password(peer),
            ebgp_multihop=spec.ebgp_multi_hop,
        ), profile

    async def apply(
        self,
        plan: announce.BgpPlan,
        node: model.Node | None,
        cfg: config.Config,
        changed: Iterable[tuple[str, families.Prefix]] | None = None,
    ) -> None:
        """Run the plan's sessions and give each its routes. `changed`: the (peer, prefix)
        whose routes the plan decided again since the last call (None: any may have changed);
        a session that keeps running gets only those."""
        if self._tasks is None:
            return
        if plan.problems != self._plan_problems:
            # Unresolved communities, PodCIDRs that do not parse: logged when they change.
            for problem in plan.problems:
                log.error("BGP advertisement skipped in part: %s", problem)
            self._plan_problems = plan.problems
        if node is None:
            # PodCIDRs (issue 15): this node's Node object is gone (deleted; the plan is empty).
            # Its routes, its PodCIDRs first of all, are withdrawn; the sessions stay up, and
            # the routes return when the Node (and its spec.podCIDRs) does.
            for r in self._running.values():
                for family, table in r.routes.items():
                    if table:
                        r.peer.set_routes(family, {})
                        r.routes[family] = {}
            return
        by_peer: dict[str, list[families.Prefix]] | None = None
        if changed is not None:
            by_peer = {}
            for peer_name, prefix in changed:
                by_peer.setdefault(peer_name, []).append(prefix)
        for name in [n for n in self._running if n not in plan.peers]:
            self._stop(name, "BGPPeer removed or no longer selects this node")
        for name in [n for n in self._peer_problems if n not in plan.peers]:
            del self._peer_problems[name]  # a peer that went away is nobody's problem
        if plan.peers:
            await self._listen()
        elif not self._running:
            await self._stop_listening()
        for name, peer in plan.peers.items():
            try:
                wanted, profile = self._peer_config(peer, node, cfg)
            except (PeerError, ValueError) as e:
                if self._peer_problems.get(name) != str(e):
                    log.error("BGPPeer %s: %s", name, e)
                self._peer_problems[name] = str(e)
                if name in self._running:
                    self._stop(name, "configuration no longer valid")
                continue
            self._peer_problems.pop(name, None)
            running = self._running.get(name)
            if running is not None and (running.config, running.bfd_profile) != (wanted, profile):
                self._stop(name, "configuration changed")
                running = None
            if running is None:
                running = self._start(name, wanted, profile)
                self._give_all(running, plan.routes.get(name, {}))
            elif by_peer is None:
                self._give_all(running, plan.routes.get(name, {}))
            else:
                self._give_changed(running, plan.routes.get(name, {}), by_peer.get(name, ()))
        self._started = True

    @staticmethod
    def _give_all(running: _Session, planned: Mapping[families.Prefix, announce.Route]) -> None:
        # A session carries the families it was opened for: IPv6 routes reach an IPv4
        # peer only with dualStackAddressFamily (as in MetalLB), else its IPv6 twin.
        routes: dict[families.Family, dict[families.Prefix, rib.RouteAttributes]] = {
            f: {} for f in running.config.session.families
        }
        for prefix, route in planned.items():
            family = families.Family.of(prefix)
            if family in routes:
                routes[family][prefix] = route_attributes(route)
        for family, table in routes.items():
            if running.routes.get(family) != table:
                running.peer.set_routes(family, table)
                running.routes[family] = table

    @staticmethod
    def _give_changed(
        running: _Session,
        planned: Mapping[families.Prefix, announce.Route],
        prefixes: Iterable[families.Prefix],
    ) -> None:
        changes: dict[families.Family, dict[families.Prefix, rib.RouteAttributes | None]] = {}
        for prefix in prefixes:
            family = families.Family.of(prefix)
            table = running.routes.get(family)
            if table is None:
                continue  # not a family of this session
            route = planned.get(prefix)
            want = route_attributes(route) if route is not None else None
            if table.get(prefix) != want:
                changes.setdefault(family, {})[prefix] = want
                if want is None:
                    del table[prefix]
                else:
                    table[prefix] = want
        for family, change in changes.items():
            running.peer.update_routes(family, change)

    def _start(self, name: str, config_: peers.PeerConfig, profile: bfd.Profile | None) -> _Session:
        assert self._tasks is not None
        assert self._bfd is not None
        bfd_session = None
        if profile is not None:
            bfd_session = self._bfd.open_session(
                config_.address,
                local=config_.source_address,
                profile=profile,
                multihop=config_.ebgp_multihop,
            )
        # A speaker that starts with graceful restart asks its peers to keep its routes until
        # it has sent them again (it may be a restart, not a first start).
        restarting = config_.session.graceful_restart is not None and not self._started

        def on_event(event: peers.Event) -> None:
            self._event(name, event)

        peer = peers.Peer(
            config_,
            listener=self._listener,
            bfd_session=bfd_session,
            on_event=on_event,
            restarting=restarting,
        )
        task = self._tasks.create_task(peer.run())
        running = _Session(config_, profile, peer, task, bfd_session)
        self._running[name] = running
        log.info(
            "BGPPeer %s: starting session with %s (AS %s)%s",
            name,
            config_.name,
            config_.session.peer_asn or config_.session.dynamic_asn,
            " with BFD" if profile else "",
        )
        return running

    def _stop(self, name: str, reason: str) -> None:
        running = self._running.pop(name)
        running.peer.stop(reason)
        if running.bfd_session is not None:
            running.bfd_session.close()
        self.changed.set()

    def _event(self, name: str, event: peers.Event) -> None:
        running = self._running.get(name)
        if running is None:
            return
        if isinstance(event, session.SessionUp):
            running.up, running.since = True, time.time()
            log.info("BGPPeer %s: session established (%s)", name, running.config.name)
            self.changed.set()
        elif isinstance(event, session.SessionDown):
            if running.up:
                log.warning("BGPPeer %s: session down: %s", name, event.reason)
            running.up, running.since, running.last_down = False, time.time(), event.reason
            self.changed.set()

    async def stop_all(self, flush: float = 2.0) -> None:
        """SIGTERM: close (graceful restart: keep routes) or stop (Cease) every session, and
        give them `flush` seconds to get their last words out."""
        tasks = []
        for name, running in list(self._running.items()):
            if running.config.session.graceful_restart is not None:
                running.peer.close()
            else:
                running.peer.stop("speaker shutting down")
            if running.bfd_session is not None:
                running.bfd_session.close()
            tasks.append(running.task)
            del self._running[name]
        if tasks:
            await asyncio.wait(tasks, timeout=flush)

    # --- read by `speaker.report` (ironlb doctor): each session as the SpeakerReport shows it --
    def session_reports(self) -> tuple[diagnosis.SessionReport, ...]:
        return tuple(
            diagnosis.SessionReport(
                name,
                r.config.name,
                r.peer.state.value,
                r.since,
                sum(len(r.peer.advertised(f)) for f in r.routes),
                tuple(sorted(str(p) for f in r.routes for p in r.peer.advertised(f))),
                "".join(w.title() for w in r.bfd_session.state.name.split("_"))
                if r.bfd_session
                else None,
                r.last_down,
            )
            for name, r in sorted(self._running.items())
        )
