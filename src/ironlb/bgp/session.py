"""One BGP session as a sans-IO protocol object: bytes and time in, bytes and events out.

The asyncio shell owns the socket and the clock and drives a `Session`:

    session.start(now)                       # start(now, restarting=True) after a restart
    for event in session.events(): ...        # ConnectRequested: open TCP to the peer;
                                              # CloseRequested: flush data_to_send(), close
    session.connection_made(now, local_address=...)   # a TCP connection is up (either side)
    session.receive_data(data, now)
    transport.write(session.data_to_send())
    ... sleep until session.next_deadline(), then session.on_timer(now)
    session.set_routes(Family.IPV4_UNICAST, {prefix: RouteAttributes(...)})
    session.stop(now, "node drained")

`connection_lost(now)` reports that the connection failed (or a connection attempt did); it must
not be called for a connection the core asked to close, which it already considers gone. One core
handles one TCP connection at a time: a connection arriving while one is open is either refused
by the shell or given to a second core for collision resolution (`fsm.keep_locally_initiated`,
then `dump_collision` on the loser).

Supported: RFC 4271 session with the `fsm` table; capabilities Multiprotocol (IPv4/IPv6
unicast), Route Refresh, 4-octet AS (AS_TRANS and AS4_PATH towards old peers), Graceful Restart
(restart time, R bit when the shell says we restarted, F bit per family); peer AS fixed or
dynamic ("internal"/"external", like MetalLB's dynamicASN); announcements with End-of-RIB after
the initial table, full re-announcement on ROUTE-REFRESH, RFC 9003 shutdown communication on
`stop`. As Graceful Restart helper we accept the capability and report a session lost without
NOTIFICATION as `SessionDown(peer_restarting=True)`: there are no received routes to retain.

Not supported: importing routes (received UPDATEs are decoded, counted per family and dropped;
memory does not grow with the peer's table), ADD-PATH, enhanced route refresh, extended next hop
(RFC 8950), extended messages, BGP roles, confederations, route reflection, TCP-AO/MD5 (socket
options, the shell's job), MRAI pacing (ironlb's table is small and changes rarely).
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TypeVar

from ironlb.bgp import attributes, capabilities, errors, families, fsm, messages, rib

_CONNECTED = frozenset({fsm.State.OPEN_SENT, fsm.State.OPEN_CONFIRM, fsm.State.ESTABLISHED})
_MAX_ASN = 0xFFFFFFFF
_DEFAULT_TIMERS = fsm.Timers()


class DynamicAsn(enum.Enum):
    """Accept any peer AS of a kind, instead of one configured AS (MetalLB `dynamicASN`)."""

    INTERNAL = "internal"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class GracefulRestartConfig:
    restart_time: int = 120
    """Seconds the peer keeps our routes after we go away (0-4095, RFC 4724)."""
    preserve_forwarding_state: bool = True
    """F bit: traffic keeps flowing while the speaker restarts (the kernel forwards, not us)."""

    def __post_init__(self) -> None:
        if not 0 <= self.restart_time <= capabilities.MAX_RESTART_TIME:
            raise ValueError(f"restart time must be 0-{capabilities.MAX_RESTART_TIME} seconds")


@dataclass(frozen=True, slots=True)
class SessionConfig:
    local_asn: int
    router_id: IPv4Address
    peer_asn: int | None = None
    """The peer's AS; exactly one of this and `dynamic_asn`."""
    dynamic_asn: DynamicAsn | None = None
    timers: fsm.Timers = _DEFAULT_TIMERS
    passive: bool = False
    """Wait for the peer to connect first (RFC 4271 PassiveTcpEstablishment)."""
    families: frozenset[families.Family] = frozenset(families.Family)
    graceful_restart: GracefulRestartConfig | None = None
    next_hop_v4: IPv4Address | None = None
    """Next hop for IPv4 routes; default: our address on the session, when it is IPv4."""
    next_hop_v6: IPv6Address | None = None
    """Global next hop for IPv6 routes; default: our address on the session, when IPv6."""
    link_local_v6: IPv6Address | None = None
    """Sent after the global IPv6 next hop (RFC 2545 §3) when the peer shares our link."""

    def __post_init__(self) -> None:
        for name in ("local_asn", "peer_asn"):
            asn = getattr(self, name)
            if asn is not None and not 1 <= asn <= _MAX_ASN:
                raise ValueError(f"{name} {asn} is not an AS number (1-{_MAX_ASN})")
        if (self.peer_asn is None) == (self.dynamic_asn is None):
            raise ValueError("set exactly one of peer_asn and dynamic_asn")
        if int(self.router_id) == 0:
            raise ValueError("router id 0.0.0.0 is not allowed (RFC 6286)")
        if not self.families:
            raise ValueError("enable at least one address family")
        if self.link_local_v6 is not None and not self.link_local_v6.is_link_local:
            raise ValueError(f"{self.link_local_v6} is not a link-local address")


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What the OPEN exchange settled."""

    peer_asn: int
    peer_router_id: IPv4Address
    ibgp: bool
    hold_time: int
    keepalive_time: int
    families: frozenset[families.Family]
    four_octet_as: bool
    route_refresh: bool
    peer_graceful_restart: capabilities.GracefulRestart | None


@dataclass(frozen=True, slots=True)
class ConnectRequested:
    """Open a TCP connection to the peer, abandoning any attempt under way."""


@dataclass(frozen=True, slots=True)
class CloseRequested:
    """Write out `data_to_send()`, then close the connection."""


@dataclass(frozen=True, slots=True)
class SessionUp:
    negotiated: Negotiated


@dataclass(frozen=True, slots=True)
class SessionDown:
    reason: str
    peer_restarting: bool = False
    """The peer supports Graceful Restart and the session ended without NOTIFICATION."""


@dataclass(frozen=True, slots=True)
class NotificationSent:
    notification: messages.Notification


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    notification: messages.Notification


@dataclass(frozen=True, slots=True)
class RouteRefreshRequested:
    family: families.Family


@dataclass(frozen=True, slots=True)
class EndOfRibReceived:
    family: families.Family


@dataclass(frozen=True, slots=True)
class RoutesSkipped:
    """Desired routes not announced: neither the route nor the session gives a next hop."""

    family: families.Family
    prefixes: tuple[families.Prefix, ...]


SessionEvent = (
    ConnectRequested
    | CloseRequested
    | SessionUp
    | SessionDown
    | NotificationSent
    | NotificationReceived
    | RouteRefreshRequested
    | EndOfRibReceived
    | RoutesSkipped
)


@dataclass(slots=True)
class Counters:
    messages_received: collections.Counter[messages.MessageType] = field(
        default_factory=collections.Counter
    )
    messages_sent: collections.Counter[messages.MessageType] = field(
        default_factory=collections.Counter
    )
    prefixes_received: collections.Counter[families.Family] = field(
        default_factory=collections.Counter
    )
    """Announced prefixes received (and dropped: ironlb imports nothing)."""
    withdrawals_received: collections.Counter[families.Family] = field(
        default_factory=collections.Counter
    )
    treated_as_withdraw: int = 0
    """UPDATEs with malformed attributes handled by RFC 7606 treat-as-withdraw."""


# A decoding error becomes the FSM event for its message kind. ROUTE-REFRESH errors join UPDATE
# errors: in Established both send their own NOTIFICATION, elsewhere both are unexpected.
_ERROR_EVENTS = {
    errors.ErrorCode.MESSAGE_HEADER: fsm.Event.BGP_HEADER_ERR,
    errors.ErrorCode.OPEN_MESSAGE: fsm.Event.BGP_OPEN_MSG_ERR,
}


class Session:
    def __init__(self, config: SessionConfig, jitter: Callable[[], float]) -> None:
        """`jitter` returns a number in [0, 1] (random.random in production)."""
        self.config = config
        self.counters = Counters()
        self._fsm = fsm.Fsm(config.timers, jitter)
        self._reader = messages.FrameReader()
        self._rib = rib.AdjRibOut()
        self._out = bytearray()
        self._events: list[SessionEvent] = []
        self._negotiated: Negotiated | None = None
        self._peering: rib.Peering | None = None
        self._local_address: IPv4Address | IPv6Address | None = None
        self._restarting = False
        self._cease = (errors.CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, "")
        self._down_reason = ""

    # -- inspection -------------------------------------------------------------------------

    @property
    def state(self) -> fsm.State:
        return self._fsm.state

    @property
    def negotiated(self) -> Negotiated | None:
        """Set from OpenConfirm until the connection ends."""
        return self._negotiated

    def advertised(self, family: families.Family) -> Mapping[families.Prefix, rib.RouteAttributes]:
        """What the peer was told, for status reporting."""
        return self._rib.advertised(family)

    def events(self) -> list[SessionEvent]:
        """Events since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def next_deadline(self) -> float | None:
        return self._fsm.next_deadline()

    # -- driven by the shell ----------------------------------------------------------------

    def start(self, now: float, *, restarting: bool = False) -> None:
        """Begin connecting. `restarting`: ironlb itself restarted, so the OPEN carries the
        Graceful Restart R bit until the session is first established."""
        self._restarting = restarting
        passive = self.config.passive
        self._fire(fsm.Event.MANUAL_START_PASSIVE if passive else fsm.Event.MANUAL_START, now)

    def stop(self, now: float, reason: str = "") -> None:
        """Close the session for good (until `start`), telling the peer `reason` (RFC 9003)."""
        self._cease = (errors.CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, reason)
        self._fire(fsm.Event.MANUAL_STOP, now)

    def dump_collision(self, now: float) -> None:
        """End this connection as the loser of a connection collision (RFC 4271 §6.8)."""
        self._cease = (errors.CeaseSubcode.CONNECTION_COLLISION_RESOLUTION, "")
        self._fire(fsm.Event.OPEN_COLLISION_DUMP, now)

    def connection_made(
        self, now: float, local_address: IPv4Address | IPv6Address | None = None
    ) -> None:
        """A TCP connection to the peer is up. `local_address`, our end of it, is the default
        next hop of its family."""
        self._fire(fsm.Event.TCP_CONNECTION_CONFIRMED, now)
        self._local_address = local_address

    def connection_lost(self, now: float) -> None:
        self._out.clear()
        self._down_reason = "connection lost"
        self._fire(fsm.Event.TCP_CONNECTION_FAILS, now)

    def on_timer(self, now: float) -> None:
        for step in self._fsm.on_timer(now):
            self._apply(step)

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the peer, in any chunking. Every whole message is handled before this
        returns, so at most one partial message stays buffered; a single chunk over 1 MiB
        raises BufferError (read in smaller pieces)."""
        if self.state not in _CONNECTED:
            return  # Late bytes of a connection already dropped.
        self._reader.receive_data(data)
        while self.state in _CONNECTED:
            try:
                frame = self._reader.next_frame()
            except errors.BgpError as e:
                self._fire(fsm.Event.BGP_HEADER_ERR, now, error=e)
                return
            if frame is None:
                return
            self._receive_frame(frame, now)

    def set_routes(
        self, family: families.Family, routes: Mapping[families.Prefix, rib.RouteAttributes]
    ) -> None:
        """Make `routes` the whole set announced for `family`; the peer gets the difference."""
        self._check(family, routes)
        self._rib.set_routes(family, routes)
        self._sync_if_established(family)

    def update_routes(
        self,
        family: families.Family,
        changes: Mapping[families.Prefix, rib.RouteAttributes | None],
    ) -> None:
        """Change only these routes of `family` (None: withdraw); the peer gets the
        difference."""
        self._check(family, changes)
        self._rib.update_routes(family, changes)
        self._sync_if_established(family)

    def _check(self, family: families.Family, prefixes: Iterable[families.Prefix]) -> None:
        """ValueError unless `family` is enabled and every prefix is of it."""
        if family not in self.config.families:
            raise ValueError(f"{family} is not enabled on this session")
        stray = [p for p in prefixes if families.Family.of(p) is not family]
        if stray:
            raise ValueError(f"not {family} prefixes: {', '.join(map(str, stray))}")

    def _sync_if_established(self, family: families.Family) -> None:
        negotiated = self._negotiated
        if self.state is fsm.State.ESTABLISHED and negotiated and family in negotiated.families:
            self._sync(family)

    # -- receiving --------------------------------------------------------------------------

    def _receive_frame(self, frame: bytes, now: float) -> None:
        kind = frame[messages.HEADER_SIZE - 1]
        try:
            message = messages.decode(frame, self._context())
        except errors.BgpError as e:
            event = _ERROR_EVENTS.get(e.code, fsm.Event.UPDATE_MSG_ERR)
            self._fire(event, now, error=e, message_type=kind)
            return
        self.counters.messages_received[messages.MessageType(kind)] += 1
        match message:
            case messages.Open():
                self._receive_open(message, now)
            case messages.Keepalive():
                self._fire(fsm.Event.KEEPALIVE_MSG, now, message_type=kind)
            case messages.Update():
                self._receive_update(message, now)
            case messages.Notification():
                self._down_reason = f"peer sent {message}"
                self._events.append(NotificationReceived(message))
                self._fire(fsm.Event.NOTIF_MSG, now, message_type=kind)
            case messages.RouteRefresh():
                self._receive_route_refresh(message, now)

    def _receive_open(self, message: messages.Open, now: float) -> None:
        if self.state is fsm.State.OPEN_SENT:
            try:
                self._negotiated = self._negotiate(message)
            except errors.BgpError as e:
                self._fire(fsm.Event.BGP_OPEN_MSG_ERR, now, error=e)
                return
        self._fire(fsm.Event.BGP_OPEN, now, message_type=messages.MessageType.OPEN)

    def _negotiate(self, message: messages.Open) -> Negotiated:
        config = self.config
        peer_asn = message.asn
        ibgp = peer_asn == config.local_asn
        if config.peer_asn is not None:
            acceptable = peer_asn == config.peer_asn
        else:
            acceptable = ibgp is (config.dynamic_asn is DynamicAsn.INTERNAL)
        if peer_asn == 0 or not acceptable:
            raise errors.BgpError(
                errors.ErrorCode.OPEN_MESSAGE,
                errors.OpenSubcode.BAD_PEER_AS,
                reason=f"AS {peer_asn}",
            )
        # RFC 6286 §2.2: zero, or our own identifier on an internal session, is refused.
        if int(message.router_id) == 0 or (ibgp and message.router_id == config.router_id):
            raise errors.BgpError(
                errors.ErrorCode.OPEN_MESSAGE,
                errors.OpenSubcode.BAD_BGP_IDENTIFIER,
                reason=f"BGP identifier {message.router_id}",
            )
        self._fsm.negotiate(message.hold_time)
        multiprotocol = [
            c for c in message.capabilities if isinstance(c, capabilities.Multiprotocol)
        ]
        # A speaker without Multiprotocol capabilities speaks IPv4 unicast only (RFC 4760 §8).
        offered = (
            {families.Family.lookup(c.afi, c.safi) for c in multiprotocol}
            if multiprotocol
            else {families.Family.IPV4_UNICAST}
        )
        return Negotiated(
            peer_asn=peer_asn,
            peer_router_id=message.router_id,
            ibgp=ibgp,
            hold_time=self._fsm.hold_time,
            keepalive_time=self._fsm.keepalive_time,
            families=frozenset(f for f in config.families if f in offered),
            four_octet_as=message.capability(capabilities.FourOctetAs) is not None,
            route_refresh=message.capability(capabilities.RouteRefresh) is not None,
            peer_graceful_restart=message.capability(capabilities.GracefulRestart),
        )

    def _receive_update(self, update: messages.Update, now: float) -> None:
        if self._negotiated is not None and self.state is fsm.State.ESTABLISHED:
            self._count(update, self._negotiated.families)
        self._fire(fsm.Event.UPDATE_MSG, now, message_type=messages.MessageType.UPDATE)

    def _count(self, update: messages.Update, negotiated: frozenset[families.Family]) -> None:
        eor = update.end_of_rib()
        if eor is not None:
            if eor in negotiated:
                self._events.append(EndOfRibReceived(eor))
            return
        reach = update.attribute(attributes.MpReachNlri)
        unreach = update.attribute(attributes.MpUnreachNlri)
        announced = [(families.Family.IPV4_UNICAST, len(update.nlri))]
        withdrawn = [(families.Family.IPV4_UNICAST, len(update.withdrawn))]
        if reach is not None:
            announced.append((reach.family, len(reach.nlri)))
        if unreach is not None:
            withdrawn.append((unreach.family, len(unreach.withdrawn)))
        if update.malformed is not None:
            # Treat-as-withdraw: the announced prefixes count as withdrawn (RFC 7606 §2).
            self.counters.treated_as_withdraw += 1
            withdrawn += announced
            announced = []
        for counter, counts in (
            (self.counters.prefixes_received, announced),
            (self.counters.withdrawals_received, withdrawn),
        ):
            for family, count in counts:
                if count and family in negotiated:
                    counter[family] += count

    def _receive_route_refresh(self, message: messages.RouteRefresh, now: float) -> None:
        self._fire(
            fsm.Event.ROUTE_REFRESH_MSG, now, message_type=messages.MessageType.ROUTE_REFRESH
        )
        family = families.Family.lookup(message.afi, message.safi)
        # RFC 2918 §4: a family not negotiated is ignored; RFC 7313 §5: so are other subtypes.
        if (
            self._negotiated is None
            or self.state is not fsm.State.ESTABLISHED
            or message.subtype != 0
            or family not in self._negotiated.families
        ):
            return
        self._events.append(RouteRefreshRequested(family))
        self._rib.refresh(family)
        self._sync(family)

    # -- acting on FSM steps ----------------------------------------------------------------

    def _fire(
        self,
        event: fsm.Event,
        now: float,
        *,
        error: errors.BgpError | None = None,
        message_type: int | None = None,
    ) -> None:
        self._apply(self._fsm.handle(event, now), error, message_type)

    def _apply(
        self, step: fsm.Step, error: errors.BgpError | None = None, message_type: int | None = None
    ) -> None:
        for action in step.actions:
            match action:
                case fsm.Action.INITIATE_TCP:
                    self._events.append(ConnectRequested())
                case fsm.Action.DROP_TCP if step.event is not fsm.Event.TCP_CONNECTION_FAILS:
                    # Only for connections the core ends; a failed one is gone already.
                    self._events.append(CloseRequested())
                case fsm.Action.SEND_OPEN:
                    self._send(self._open())
                case fsm.Action.SEND_KEEPALIVE:
                    self._send(messages.KEEPALIVE)
                case fsm.Action.NOTIFY_ERROR:
                    assert error is not None, f"{step.event.name} carries its error"
                    self._notify(messages.Notification.from_error(error))
                case fsm.Action.NOTIFY_FSM_ERROR:
                    fsm_error = fsm.fsm_error(step.previous, message_type)
                    self._notify(messages.Notification.from_error(fsm_error))
                case fsm.Action.NOTIFY_CEASE:
                    self._notify(messages.Notification.cease(*self._cease))
                case fsm.Action.NOTIFY_HOLD_TIMER_EXPIRED:
                    self._notify(messages.Notification(errors.ErrorCode.HOLD_TIMER_EXPIRED, 0))
        if step.state is fsm.State.ESTABLISHED and step.previous is not fsm.State.ESTABLISHED:
            self._established()
        if step.previous in _CONNECTED and step.state not in _CONNECTED:
            self._disconnected(step)

    def _established(self) -> None:
        assert self._negotiated is not None, "negotiated in OpenSent"
        negotiated = self._negotiated
        self._restarting = False
        self._peering = rib.Peering(
            local_asn=self.config.local_asn,
            ibgp=negotiated.ibgp,
            four_octet_as=negotiated.four_octet_as,
            next_hop_v4=self.config.next_hop_v4 or _of_type(self._local_address, IPv4Address),
            next_hop_v6=self.config.next_hop_v6 or _of_type(self._local_address, IPv6Address),
            link_local_v6=self.config.link_local_v6,
        )
        self._events.append(SessionUp(negotiated))
        for family in families.Family:
            if family in negotiated.families:
                self._sync(family)
                self._send(messages.end_of_rib(family))

    def _disconnected(self, step: fsm.Step) -> None:
        if step.previous is fsm.State.ESTABLISHED:
            assert self._negotiated is not None, "negotiated in OpenSent"
            lost = step.event is fsm.Event.TCP_CONNECTION_FAILS
            restarting = lost and self._negotiated.peer_graceful_restart is not None
            self._events.append(SessionDown(self._down_reason, peer_restarting=restarting))
        self._negotiated = None
        self._peering = None
        self._rib.reset()
        self._reader.clear()

    # -- sending ----------------------------------------------------------------------------

    def _context(self) -> attributes.Context:
        negotiated = self._negotiated
        return attributes.Context(four_octet_as=negotiated is None or negotiated.four_octet_as)

    def _send(self, message: messages.Message) -> None:
        self._out += messages.encode(message, self._context())
        self.counters.messages_sent[message.TYPE] += 1

    def _notify(self, notification: messages.Notification) -> None:
        self._send(notification)
        self._down_reason = f"sent {notification}"
        self._events.append(NotificationSent(notification))

    def _open(self) -> messages.Open:
        config = self.config
        enabled = [f for f in families.Family if f in config.families]
        caps: list[capabilities.Capability] = [
            capabilities.Multiprotocol(f.afi, f.safi) for f in enabled
        ]
        caps += [capabilities.RouteRefresh(), capabilities.FourOctetAs(config.local_asn)]
        gr = config.graceful_restart
        if gr is not None:
            preserved = tuple(
                capabilities.GracefulRestartFamily(f.afi, f.safi, gr.preserve_forwarding_state)
                for f in enabled
            )
            caps.append(
                capabilities.GracefulRestart(
                    gr.restart_time, restarting=self._restarting, families=preserved
                )
            )
        my_as = config.local_asn if config.local_asn <= 0xFFFF else capabilities.AS_TRANS
        return messages.Open(my_as, config.timers.hold_time, config.router_id, tuple(caps))

    def _sync(self, family: families.Family) -> None:
        assert self._peering is not None, "only called when established"
        changes = self._rib.updates(family, self._peering)
        for update in changes.updates:
            self._send(update)
        if changes.skipped:
            self._events.append(RoutesSkipped(family, tuple(changes.skipped)))


_T = TypeVar("_T")


def _of_type(address: object, kind: type[_T]) -> _T | None:
    return address if isinstance(address, kind) else None
