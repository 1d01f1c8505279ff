import struct
import tracemalloc
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import TypeVar

import pytest

from ironlb.bgp import attributes, capabilities, errors, families, fsm, messages, rib, session

V4, V6 = families.Family.IPV4_UNICAST, families.Family.IPV6_UNICAST
LEFT_ADDRESS, RIGHT_ADDRESS = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
LEFT_ID, RIGHT_ID = IPv4Address("198.51.100.1"), IPv4Address("198.51.100.2")
ROUTE = rib.RouteAttributes()
FOUR = attributes.Context(four_octet_as=True)
TWO = attributes.Context(four_octet_as=False)
CONNECTED = {fsm.State.OPEN_SENT, fsm.State.OPEN_CONFIRM, fsm.State.ESTABLISHED}
Ev = TypeVar("Ev")


def config(local_asn: int, router_id: IPv4Address, **kwargs: object) -> session.SessionConfig:
    kwargs.setdefault("next_hop_v6", IPv6Address("2001:db8::1"))
    return session.SessionConfig(local_asn, router_id, **kwargs)  # type: ignore[arg-type]


class Link:
    """Two session cores joined by an in-memory TCP connection under one fake clock (the way
    h11's tests/helpers.py wires two connections), with a tap recording what each side sent."""

    def __init__(self, left: session.Session, right: session.Session) -> None:
        self.now = 0.0
        self.left, self.right = left, right
        self.address = {left: LEFT_ADDRESS, right: RIGHT_ADDRESS}
        self.connected = False
        self.silent: set[session.Session] = set()
        self.log: dict[session.Session, list[session.SessionEvent]] = {left: [], right: []}
        self.sent: dict[session.Session, list[messages.Message]] = {left: [], right: []}
        self._taps = {left: messages.FrameReader(), right: messages.FrameReader()}

    def peer(self, side: session.Session) -> session.Session:
        return self.right if side is self.left else self.left

    def start(self) -> None:
        self.left.start(self.now)
        self.right.start(self.now)
        self.run()

    def run(self) -> None:
        busy = True
        while busy:
            busy = False
            for side in (self.left, self.right):
                for event in side.events():
                    busy = True
                    self.log[side].append(event)
                    if isinstance(event, session.ConnectRequested):
                        self._dial(side)
                    elif isinstance(event, session.CloseRequested):
                        self._hang_up(side)
                busy |= self._deliver(side)

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [d for s in (self.left, self.right) if (d := s.next_deadline()) is not None]
            if not due or min(due) > end:
                break
            self.now = max(self.now, min(due))
            for side in (self.left, self.right):
                side.on_timer(self.now)
            self.run()
        self.now = end

    def inject(self, side: session.Session, data: bytes) -> None:
        """Bytes arriving at `side` as if its peer had sent them."""
        side.receive_data(data, self.now)
        self.run()

    def cut(self) -> None:
        """The connection dies without a word (cable pulled, process killed)."""
        self.connected = False
        for side in (self.left, self.right):
            side.connection_lost(self.now)
        self.run()

    def events(self, side: session.Session, kind: type[Ev]) -> list[Ev]:
        return [e for e in self.log[side] if isinstance(e, kind)]

    def updates(self, side: session.Session) -> list[messages.Update]:
        return [m for m in self.sent[side] if isinstance(m, messages.Update)]

    def _dial(self, side: session.Session) -> None:
        if self.connected:
            return  # The peer's connection won; this attempt is abandoned.
        other = self.peer(side)
        if other.state in (fsm.State.CONNECT, fsm.State.ACTIVE):
            self.connected = True
            side.connection_made(self.now, self.address[side])
            other.connection_made(self.now, self.address[other])
        else:
            side.connection_lost(self.now)  # Refused.

    def _hang_up(self, side: session.Session) -> None:
        if not self.connected:
            return
        self._deliver(side)
        self.connected = False
        other = self.peer(side)
        if other.state in CONNECTED:
            other.connection_lost(self.now)

    def _deliver(self, side: session.Session) -> bool:
        data = side.data_to_send()
        if not data or not self.connected or side in self.silent:
            return False
        tap = self._taps[side]
        tap.receive_data(data)
        negotiated = side.negotiated
        ctx = attributes.Context(negotiated is None or negotiated.four_octet_as)
        while (frame := tap.next_frame()) is not None:
            self.sent[side].append(messages.decode(frame, ctx))
        self.peer(side).receive_data(data, self.now)
        return True


def pair(
    left: session.SessionConfig, right: session.SessionConfig, jitter: float = 1.0
) -> tuple[Link, session.Session, session.Session]:
    a = session.Session(left, lambda: jitter)
    b = session.Session(right, lambda: jitter)
    return Link(a, b), a, b


def ebgp(**right: object) -> tuple[Link, session.Session, session.Session]:
    return pair(
        config(4200000001, LEFT_ID, peer_asn=4200000002),
        config(4200000002, RIGHT_ID, peer_asn=4200000001, passive=True, **right),
    )


def hosts(count: int, base: int = 0xC6120000) -> dict[IPv4Network, rib.RouteAttributes]:
    return {IPv4Network((base + i, 32)): ROUTE for i in range(count)}


class Script:
    """A hand-driven peer speaking raw messages to one session, for what a Session never
    sends by itself (malformed data, old 2-octet speakers, unexpected messages)."""

    def __init__(self, core: session.Session, ctx: attributes.Context = FOUR) -> None:
        self.core = core
        self.ctx = ctx
        self.now = 0.0
        self._reader = messages.FrameReader()
        core.start(self.now)
        core.connection_made(self.now, LEFT_ADDRESS)

    def send(self, *items: messages.Message | bytes) -> None:
        for item in items:
            data = item if isinstance(item, bytes) else messages.encode(item, self.ctx)
            self.core.receive_data(data, self.now)

    def received(self) -> list[messages.Message]:
        self._reader.receive_data(self.core.data_to_send())
        found = []
        while (frame := self._reader.next_frame()) is not None:
            found.append(messages.decode(frame, self.ctx))
        return found

    def establish(self, peer_open: messages.Open) -> list[messages.Message]:
        self.send(peer_open, messages.KEEPALIVE)
        assert self.core.state is fsm.State.ESTABLISHED
        return self.received()

    def notification(self) -> messages.Notification:
        (notification,) = [m for m in self.received() if isinstance(m, messages.Notification)]
        return notification


def peer_open(
    asn: int = 65002,
    router_id: IPv4Address = RIGHT_ID,
    hold_time: int = 90,
    extra: tuple[capabilities.Capability, ...] = (),
    four_octet: bool = True,
) -> messages.Open:
    caps: tuple[capabilities.Capability, ...] = (
        capabilities.Multiprotocol(1, 1),
        capabilities.Multiprotocol(2, 1),
        capabilities.RouteRefresh(),
    )
    if four_octet:
        caps += (capabilities.FourOctetAs(asn),)
    my_as = asn if asn <= 0xFFFF else capabilities.AS_TRANS
    return messages.Open(my_as, hold_time, router_id, caps + extra)


# -- establishment --------------------------------------------------------------------------


def test_ebgp_four_octet_session_comes_up_and_announces_both_families() -> None:
    link, left, right = ebgp(timers=fsm.Timers(hold_time=30))
    left.set_routes(V4, {ip_network("198.18.0.1/32"): ROUTE, ip_network("198.18.0.2/32"): ROUTE})
    left.set_routes(V6, {ip_network("2001:db8:5::1/128"): ROUTE})
    link.start()
    assert left.state is right.state is fsm.State.ESTABLISHED
    (up,) = link.events(left, session.SessionUp)
    assert up.negotiated == session.Negotiated(
        peer_asn=4200000002,
        peer_router_id=RIGHT_ID,
        ibgp=False,
        hold_time=30,
        keepalive_time=10,
        families=frozenset({V4, V6}),
        four_octet_as=True,
        route_refresh=True,
        peer_graceful_restart=None,
    )
    first, first_eor, second, second_eor = link.updates(left)
    assert first.nlri == (ip_network("198.18.0.1/32"), ip_network("198.18.0.2/32"))
    assert first.attribute(attributes.AsPath) == attributes.AsPath.sequence(4200000001)
    assert first.attribute(attributes.NextHop) == attributes.NextHop(LEFT_ADDRESS)
    assert first.attribute(attributes.LocalPref) is None
    reach = second.attribute(attributes.MpReachNlri)
    assert reach == attributes.MpReachNlri(
        V6, (IPv6Address("2001:db8::1"),), (ip_network("2001:db8:5::1/128"),)
    )
    assert (first_eor.end_of_rib(), second_eor.end_of_rib()) == (V4, V6)
    assert right.counters.prefixes_received == {V4: 2, V6: 1}
    assert [e.family for e in link.events(right, session.EndOfRibReceived)] == [V4, V6]
    assert [e.family for e in link.events(left, session.EndOfRibReceived)] == [V4, V6]


def test_ibgp_two_octet_session_sends_local_pref_and_an_empty_path() -> None:
    link, left, right = pair(
        config(65001, LEFT_ID, peer_asn=65001),
        config(65001, RIGHT_ID, peer_asn=65001, passive=True),
    )
    route = rib.RouteAttributes(
        local_pref=300, communities=frozenset({attributes.Community.parse("65001:7")})
    )
    left.set_routes(V4, {ip_network("198.18.0.1/32"): route})
    link.start()
    (up,) = link.events(right, session.SessionUp)
    assert up.negotiated.ibgp
    assert up.negotiated.peer_asn == 65001
    update = link.updates(left)[0]
    assert update.attribute(attributes.AsPath) == attributes.AsPath()
    assert update.attribute(attributes.LocalPref) == attributes.LocalPref(300)
    assert update.attribute(attributes.Communities) == attributes.Communities(
        (attributes.Community.parse("65001:7"),)
    )
    (open_message,) = [m for m in link.sent[left] if isinstance(m, messages.Open)]
    assert open_message.my_as == 65001


def test_old_two_octet_peer_gets_as_trans_and_as4_path() -> None:
    core = session.Session(config(4200000001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core, TWO)
    (our_open,) = script.received()
    assert isinstance(our_open, messages.Open)
    assert our_open.my_as == capabilities.AS_TRANS
    assert our_open.asn == 4200000001
    core.set_routes(V4, {ip_network("198.18.0.1/32"): ROUTE})
    sent = script.establish(peer_open(65002, four_octet=False))
    assert core.negotiated is not None
    assert not core.negotiated.four_octet_as
    update = next(m for m in sent if isinstance(m, messages.Update))
    assert update.attribute(attributes.AsPath) == attributes.AsPath.sequence(23456)
    assert update.attribute(attributes.As4Path) == attributes.As4Path(
        attributes.AsPath.sequence(4200000001).segments
    )


@pytest.mark.parametrize(
    ("mode", "peer_asn", "accepted"),
    [
        (session.DynamicAsn.INTERNAL, 65001, True),
        (session.DynamicAsn.INTERNAL, 65002, False),
        (session.DynamicAsn.EXTERNAL, 4200000000, True),
        (session.DynamicAsn.EXTERNAL, 65001, False),
    ],
)
def test_dynamic_asn(mode: session.DynamicAsn, peer_asn: int, accepted: bool) -> None:
    link, left, right = pair(
        config(65001, LEFT_ID, dynamic_asn=mode),
        config(peer_asn, RIGHT_ID, peer_asn=65001, passive=True),
    )
    link.start()
    if accepted:
        assert left.state is fsm.State.ESTABLISHED
        assert left.negotiated is not None
        assert left.negotiated.peer_asn == peer_asn
        return
    assert left.state is right.state is fsm.State.IDLE
    (refusal,) = link.events(right, session.NotificationReceived)
    assert (refusal.notification.code, refusal.notification.subcode) == (
        errors.ErrorCode.OPEN_MESSAGE,
        errors.OpenSubcode.BAD_PEER_AS,
    )
    assert link.events(left, session.NotificationSent)[0].notification == refusal.notification
    assert not link.events(left, session.SessionDown)  # it never was up


def test_families_are_the_intersection_and_no_mp_capability_means_ipv4() -> None:
    link, left, _ = ebgp(families=frozenset({V4}))
    left.set_routes(V6, {ip_network("2001:db8::1/128"): ROUTE})
    link.start()
    assert left.negotiated is not None
    assert left.negotiated.families == {V4}
    assert all(u.attribute(attributes.MpReachNlri) is None for u in link.updates(left))

    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    script.received()
    script.establish(messages.Open(65002, 90, RIGHT_ID))
    assert core.negotiated is not None
    assert core.negotiated.families == {V4}


# -- routes ---------------------------------------------------------------------------------


def test_changes_send_only_differences_and_withdrawals() -> None:
    link, left, right = ebgp()
    a, b, c = ip_network("198.18.0.1/32"), ip_network("198.18.0.2/32"), ip_network("198.18.0.3/32")
    six = ip_network("2001:db8::7/128")
    left.set_routes(V4, {a: ROUTE, b: ROUTE})
    left.set_routes(V6, {six: ROUTE})
    link.start()
    before = len(link.updates(left))
    left.set_routes(V4, {b: ROUTE, c: ROUTE})
    left.set_routes(V6, {})
    link.run()
    withdraw_a, announce_c, withdraw_six = link.updates(left)[before:]
    assert withdraw_a.withdrawn == (a,)
    assert announce_c.nlri == (c,)
    assert withdraw_six.attribute(attributes.MpUnreachNlri) == attributes.MpUnreachNlri(V6, (six,))
    assert right.counters.withdrawals_received == {V4: 1, V6: 1}
    assert dict(left.advertised(V4)) == {b: ROUTE, c: ROUTE}
    left.set_routes(V4, {b: ROUTE, c: ROUTE})
    link.run()
    assert len(link.updates(left)) == before + 3


def test_routes_without_a_next_hop_are_reported_not_sent() -> None:
    link, left, _ = pair(
        config(65001, LEFT_ID, peer_asn=65002, next_hop_v6=None),
        config(65002, RIGHT_ID, peer_asn=65001, passive=True),
    )
    left.set_routes(V6, {ip_network("2001:db8::1/128"): ROUTE})
    link.start()
    (skipped,) = link.events(left, session.RoutesSkipped)
    assert skipped == session.RoutesSkipped(V6, (ip_network("2001:db8::1/128"),))


def test_set_routes_checks_family() -> None:
    core = session.Session(
        config(65001, LEFT_ID, peer_asn=65002, families=frozenset({V4})), lambda: 0.5
    )
    with pytest.raises(ValueError, match="not enabled"):
        core.set_routes(V6, {})
    with pytest.raises(ValueError, match="not ipv4-unicast prefixes: 2001:db8::/32"):
        core.set_routes(V4, {ip_network("2001:db8::/32"): ROUTE})


def test_route_refresh_resends_the_family() -> None:
    link, left, right = ebgp()
    left.set_routes(V4, hosts(3))
    link.start()
    assert right.counters.prefixes_received[V4] == 3
    link.inject(left, messages.encode(messages.RouteRefresh(1, 1)))
    assert link.events(left, session.RouteRefreshRequested) == [session.RouteRefreshRequested(V4)]
    assert right.counters.prefixes_received[V4] == 6
    # Ignored: an unknown family and enhanced route refresh subtypes (RFC 7313 §5).
    link.inject(left, messages.encode(messages.RouteRefresh(25, 70)))
    link.inject(left, messages.encode(messages.RouteRefresh(1, 1, subtype=1)))
    assert right.counters.prefixes_received[V4] == 6
    assert left.state is fsm.State.ESTABLISHED


# -- timers and failures --------------------------------------------------------------------


def test_keepalives_keep_the_session_up() -> None:
    link, left, right = ebgp(timers=fsm.Timers(hold_time=30))
    link.start()
    link.advance(3600)
    assert left.state is right.state is fsm.State.ESTABLISHED
    assert right.counters.messages_received[messages.MessageType.KEEPALIVE] == 1 + 3600 // 10


def test_hold_timer_expires_exactly_and_the_session_recovers() -> None:
    link, left, right = ebgp(timers=fsm.Timers(hold_time=30))
    link.start()
    link.silent.add(right)
    link.advance(29.999)
    assert left.state is fsm.State.ESTABLISHED
    link.advance(0.001)
    assert left.state is fsm.State.IDLE
    (sent,) = link.events(left, session.NotificationSent)
    assert sent.notification.code == errors.ErrorCode.HOLD_TIMER_EXPIRED
    (down,) = link.events(left, session.SessionDown)
    assert down == session.SessionDown("sent HOLD_TIMER_EXPIRED/0", peer_restarting=False)
    assert right.state is fsm.State.IDLE  # it heard the NOTIFICATION
    link.silent.clear()
    link.advance(2)
    assert left.state is right.state is fsm.State.ESTABLISHED
    assert len(link.events(left, session.SessionUp)) == 2


def test_malformed_message_notifies_both_go_idle_and_reconnect() -> None:
    link, left, right = ebgp()
    left.set_routes(V4, hosts(2))
    link.start()
    link.inject(left, b"\x00" * 19)
    assert left.state is right.state is fsm.State.IDLE
    (received,) = link.events(right, session.NotificationReceived)
    assert (received.notification.code, received.notification.subcode) == (
        errors.ErrorCode.MESSAGE_HEADER,
        errors.HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED,
    )
    (down,) = link.events(right, session.SessionDown)
    assert down.reason == "peer sent MESSAGE_HEADER/CONNECTION_NOT_SYNCHRONIZED"
    link.advance(1.0)  # the idle hold of a first failure
    assert left.state is right.state is fsm.State.ESTABLISHED
    assert right.counters.prefixes_received[V4] == 4  # announced again


def test_malformed_update_sends_an_update_error() -> None:
    link, left, right = ebgp()
    link.start()
    bad_nlri = messages.MARKER + bytes.fromhex("0018020000000021")
    link.inject(left, bad_nlri)
    (sent,) = link.events(left, session.NotificationSent)
    assert (sent.notification.code, sent.notification.subcode) == (
        errors.ErrorCode.UPDATE_MESSAGE,
        errors.UpdateSubcode.INVALID_NETWORK_FIELD,
    )
    assert right.state is fsm.State.IDLE


def test_stop_tells_the_reason_and_stays_down() -> None:
    link, left, right = ebgp()
    link.start()
    left.stop(link.now, "node drained")
    link.run()
    (received,) = link.events(right, session.NotificationReceived)
    assert received.notification.communication == "node drained"
    link.advance(600)
    assert left.state is fsm.State.IDLE
    assert left.next_deadline() is None
    assert right.state is not fsm.State.ESTABLISHED
    left.start(link.now)
    link.advance(60)
    assert left.state is right.state is fsm.State.ESTABLISHED


def test_graceful_restart_bits_and_helper_report() -> None:
    gr = session.GracefulRestartConfig(restart_time=300)
    link, left, right = pair(
        config(65001, LEFT_ID, peer_asn=65002, graceful_restart=gr),
        config(65002, RIGHT_ID, peer_asn=65001, passive=True),
    )
    link.left.start(link.now, restarting=True)
    link.right.start(link.now)
    link.run()
    (first_open,) = [m for m in link.sent[left] if isinstance(m, messages.Open)]
    assert first_open.capability(capabilities.GracefulRestart) == capabilities.GracefulRestart(
        300,
        restarting=True,
        families=(
            capabilities.GracefulRestartFamily(1, 1, forwarding_preserved=True),
            capabilities.GracefulRestartFamily(2, 1, forwarding_preserved=True),
        ),
    )
    link.cut()
    (down,) = link.events(right, session.SessionDown)
    assert down == session.SessionDown("connection lost", peer_restarting=True)
    assert not link.events(left, session.SessionDown)[0].peer_restarting  # right has no GR
    link.advance(5)
    assert left.state is fsm.State.ESTABLISHED
    second_open = [m for m in link.sent[left] if isinstance(m, messages.Open)][1]
    restart = second_open.capability(capabilities.GracefulRestart)
    assert restart is not None
    assert not restart.restarting


# -- protocol errors from a scripted peer ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "subcode"),
    [
        (peer_open(hold_time=2), errors.OpenSubcode.UNACCEPTABLE_HOLD_TIME),
        (peer_open(router_id=IPv4Address("0.0.0.0")), errors.OpenSubcode.BAD_BGP_IDENTIFIER),
        (peer_open(asn=65003), errors.OpenSubcode.BAD_PEER_AS),
        (peer_open(asn=0, four_octet=False), errors.OpenSubcode.BAD_PEER_AS),
        (
            messages.MARKER + bytes.fromhex("001d0103fde9005ac633640200"),
            errors.OpenSubcode.UNSUPPORTED_VERSION_NUMBER,
        ),
    ],
)
def test_open_is_refused(message: messages.Open | bytes, subcode: errors.OpenSubcode) -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    script.received()
    script.send(message)
    notification = script.notification()
    assert (notification.code, notification.subcode) == (errors.ErrorCode.OPEN_MESSAGE, subcode)
    assert core.state is fsm.State.IDLE
    assert core.events()[-1] == session.CloseRequested()


def test_ibgp_peer_with_our_router_id_is_refused() -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65001), lambda: 0.5)
    script = Script(core)
    script.received()
    script.send(peer_open(asn=65001, router_id=LEFT_ID))
    assert script.notification().subcode == errors.OpenSubcode.BAD_BGP_IDENTIFIER


@pytest.mark.parametrize(
    ("reach", "unexpected", "subcode"),
    [
        (
            fsm.State.OPEN_SENT,
            messages.KEEPALIVE,
            errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_SENT,
        ),
        (
            fsm.State.OPEN_CONFIRM,
            messages.Update(),
            errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
        ),
        (fsm.State.ESTABLISHED, peer_open(), errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_ESTABLISHED),
        (
            fsm.State.OPEN_CONFIRM,
            messages.RouteRefresh(1, 1),
            errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
        ),
    ],
)
def test_unexpected_messages_get_rfc6608_fsm_errors(
    reach: fsm.State, unexpected: messages.Message, subcode: errors.FsmSubcode
) -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    if reach is not fsm.State.OPEN_SENT:
        script.send(peer_open())
    if reach is fsm.State.ESTABLISHED:
        script.send(messages.KEEPALIVE)
    assert core.state is reach
    script.received()
    script.send(unexpected)
    notification = script.notification()
    assert (notification.code, notification.subcode) == (errors.ErrorCode.FSM, subcode)
    assert notification.data == bytes((unexpected.TYPE,))


def test_a_notification_is_never_answered_with_one() -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    script.received()
    script.send(
        messages.Notification(errors.ErrorCode.CEASE, errors.CeaseSubcode.CONNECTION_REJECTED)
    )
    assert script.received() == []
    assert core.state is fsm.State.IDLE


def test_treat_as_withdraw_counts_and_keeps_the_session() -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    script.establish(peer_open())
    origin_9 = bytes.fromhex("40010109")  # ORIGIN has no value 9: treat-as-withdraw
    path = origin_9 + b"".join(
        attributes.pack(a, FOUR)
        for a in (attributes.AsPath.sequence(65002), attributes.NextHop(RIGHT_ADDRESS))
    )
    body = struct.pack("!HH", 0, len(path)) + path + bytes.fromhex("18cb0071")
    script.send(messages.MARKER + struct.pack("!HB", 19 + len(body), 2) + body)
    assert core.state is fsm.State.ESTABLISHED
    assert core.counters.treated_as_withdraw == 1
    assert core.counters.withdrawals_received[V4] == 1
    assert script.received() == []


def test_received_routes_are_counted_and_never_stored() -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    script.establish(peer_open())

    def flood(count: int, start: int) -> Iterator[bytes]:
        for n in range(start, start + count):
            prefixes = tuple(IPv6Network((0x20010DB8 << 96 | n << 16 | i, 128)) for i in range(200))
            reach = attributes.MpReachNlri(V6, (IPv6Address("2001:db8::2"),), prefixes)
            update = messages.Update(
                path_attributes=(reach, attributes.Origin(), attributes.AsPath.sequence(65002))
            )
            yield messages.encode(update)

    script.send(*flood(20, 0))  # warm up caches and counters
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        script.send(*flood(100, 20))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert core.counters.prefixes_received[V6] == 120 * 200
    assert grown < 64 * 1024, f"memory grew by {grown} bytes for 20000 received prefixes"


def test_connect_retry_abandons_a_hanging_connection_attempt() -> None:
    core = session.Session(
        config(65001, LEFT_ID, peer_asn=65002, timers=fsm.Timers(connect_retry_time=10)),
        lambda: 1.0,
    )
    core.start(0.0)
    assert core.events() == [session.ConnectRequested()]
    assert core.next_deadline() == 10.0
    core.on_timer(10.0)
    assert core.events() == [session.CloseRequested(), session.ConnectRequested()]
    core.connection_lost(11.0)  # refused
    assert core.state is fsm.State.IDLE
    core.on_timer(12.0)  # first idle hold: 1 s
    assert core.events() == [session.ConnectRequested()]


def test_collision_loser_is_dumped_with_a_cease() -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    script = Script(core)
    script.send(peer_open())
    assert core.state is fsm.State.OPEN_CONFIRM
    assert core.negotiated is not None
    assert not fsm.keep_locally_initiated(LEFT_ID, core.negotiated.peer_router_id)
    script.received()
    core.dump_collision(0.0)
    notification = script.notification()
    assert (notification.code, notification.subcode) == (
        errors.ErrorCode.CEASE,
        errors.CeaseSubcode.CONNECTION_COLLISION_RESOLUTION,
    )
    assert core.next_deadline() is None  # no automatic restart for a dumped connection


def test_shell_bugs_and_late_bytes() -> None:
    core = session.Session(config(65001, LEFT_ID, peer_asn=65002), lambda: 0.5)
    core.receive_data(b"\x00" * 40, 0.0)  # late bytes of a dropped connection: ignored
    assert core.data_to_send() == b""
    assert core.state is fsm.State.IDLE
    core.connection_made(0.0)  # Idle refuses connections
    assert core.events() == [session.CloseRequested()]
    Script(core)
    with pytest.raises(fsm.IllegalTransition):
        core.connection_made(0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"peer_asn": 65002, "dynamic_asn": session.DynamicAsn.EXTERNAL}, "exactly one"),
        ({}, "exactly one"),
        ({"peer_asn": 0}, "peer_asn 0"),
        ({"peer_asn": 2**32}, "peer_asn"),
        ({"peer_asn": 1, "families": frozenset()}, "address family"),
        ({"peer_asn": 1, "link_local_v6": IPv6Address("2001:db8::1")}, "link-local"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        session.SessionConfig(65001, LEFT_ID, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="router id"):
        session.SessionConfig(65001, IPv4Address("0.0.0.0"), peer_asn=1)
    with pytest.raises(ValueError, match="restart time"):
        session.GracefulRestartConfig(restart_time=4096)
