import contextlib
import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.bgp import bfd

S, In, D = bfd.State, bfd.Input, bfd.Diagnostic
PACKET = bfd.ControlPacket(
    state=S.UP,
    diagnostic=D.NO_DIAGNOSTIC,
    detect_mult=3,
    my_discriminator=0x11111111,
    your_discriminator=0x22222222,
    desired_min_tx=300_000,
    required_min_rx=300_000,
)


class BfdLink:
    """Two BFD cores exchanging datagrams under one fake clock; `silent` sides send nothing."""

    def __init__(self, left: bfd.SessionConfig, right: bfd.SessionConfig, jitter: float = 0.0):
        self.now = 0.0
        self.left = bfd.Session(left, self.now, lambda: jitter)
        self.right = bfd.Session(right, self.now, lambda: jitter)
        self.silent: set[bfd.Session] = set()
        self.sent: dict[bfd.Session, list[tuple[float, bfd.ControlPacket]]] = {
            self.left: [],
            self.right: [],
        }
        self.changes: dict[bfd.Session, list[bfd.StateChanged]] = {self.left: [], self.right: []}

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = [d for s in self.sides if (d := s.next_deadline()) is not None]
            if not due or min(due) > end:
                break
            self.now = max(self.now, min(due))
            for side in self.sides:
                for packet in side.poll(self.now):
                    self.sent[side].append((self.now, bfd.decode(packet)))
                    if side not in self.silent:
                        self.peer(side).receive(packet, self.now, ttl=bfd.TTL)
            for side in self.sides:
                self.changes[side] += side.events()
        self.now = end

    @property
    def sides(self) -> tuple[bfd.Session, bfd.Session]:
        return self.left, self.right

    def peer(self, side: bfd.Session) -> bfd.Session:
        return self.right if side is self.left else self.left


DEFAULT = bfd.Profile()


def configs(
    profile: bfd.Profile = DEFAULT, **right: object
) -> tuple[bfd.SessionConfig, bfd.SessionConfig]:
    return (
        bfd.SessionConfig(1, profile),
        bfd.SessionConfig(2, right.pop("profile", profile), **right),  # type: ignore[arg-type]
    )


def up_link(profile: bfd.Profile = DEFAULT) -> BfdLink:
    link = BfdLink(*configs(profile))
    link.advance(3)
    assert link.left.state is link.right.state is S.UP
    return link


# -- codec ----------------------------------------------------------------------------------


def test_known_vector() -> None:
    wire = bytes.fromhex("20c003181111111122222222000493e0000493e000000000")
    assert bfd.decode(wire) == PACKET
    assert bfd.encode(PACKET) == wire
    polled = replace(PACKET, poll=True, diagnostic=D.CONTROL_DETECTION_TIME_EXPIRED)
    assert bfd.encode(polled)[:2] == bytes.fromhex("21e0")


def test_authentication_section_is_parsed() -> None:
    auth = bfd.Authentication(type=1, data=b"\x01secret")
    packet = replace(PACKET, authentication=auth)
    wire = bfd.encode(packet)
    assert wire[3] == 24 + 2 + 7
    assert wire[24:26] == bytes((1, 9))
    assert bfd.decode(wire) == packet


@given(
    st.builds(
        bfd.ControlPacket,
        state=st.sampled_from(S),
        diagnostic=st.integers(0, 31),
        detect_mult=st.integers(1, 255),
        my_discriminator=st.integers(1, 2**32 - 1),
        your_discriminator=st.integers(1, 2**32 - 1),
        desired_min_tx=st.integers(0, 2**32 - 1),
        required_min_rx=st.integers(0, 2**32 - 1),
        required_min_echo_rx=st.integers(0, 2**32 - 1),
        poll=st.booleans(),
        final=st.booleans(),
        control_plane_independent=st.booleans(),
        demand=st.booleans(),
        authentication=st.none()
        | st.builds(bfd.Authentication, st.integers(0, 255), st.binary(max_size=30)),
    )
)
def test_round_trip(packet: bfd.ControlPacket) -> None:
    assert bfd.decode(bfd.encode(packet)) == packet


@given(st.binary(max_size=80))
def test_decode_raises_nothing_but_bfd_errors(data: bytes) -> None:
    with contextlib.suppress(bfd.BfdError):
        bfd.decode(data)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:23], bfd.Discard.TRUNCATED),
        (lambda b: b"\x40" + b[1:], bfd.Discard.BAD_VERSION),
        (lambda b: b[:3] + b"\x17" + b[4:], bfd.Discard.BAD_LENGTH),
        (lambda b: b[:3] + b"\x19" + b[4:], bfd.Discard.BAD_LENGTH),  # longer than the datagram
        (lambda b: b[:1] + b"\xc4" + b[2:], bfd.Discard.BAD_LENGTH),  # A bit, no auth section
        (lambda b: b[:2] + b"\x00" + b[3:], bfd.Discard.ZERO_DETECT_MULT),
        (lambda b: b[:1] + b"\xc1" + b[2:], bfd.Discard.MULTIPOINT),
        (lambda b: b[:4] + bytes(4) + b[8:], bfd.Discard.ZERO_MY_DISCRIMINATOR),
        (lambda b: b[:8] + bytes(4) + b[12:], bfd.Discard.ZERO_YOUR_DISCRIMINATOR),
    ],
)
def test_rfc5880_section_6_8_6_discards(mutate: object, reason: bfd.Discard) -> None:
    with pytest.raises(bfd.BfdError) as caught:
        bfd.decode(mutate(bfd.encode(PACKET)))  # type: ignore[operator]
    assert caught.value.reason is reason


def test_trailing_bytes_beyond_length_are_ignored_and_zero_your_discriminator_ok_when_down() -> (
    None
):
    down = replace(PACKET, state=S.DOWN, your_discriminator=0)
    assert bfd.decode(bfd.encode(down) + b"pad") == down


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("receive_interval", 9),
        ("transmit_interval", 60001),
        ("detect_multiplier", 1),
        ("detect_multiplier", 256),
        ("echo_interval", 5),
        ("minimum_ttl", 255),
    ],
)
def test_profile_ranges(field: str, value: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        bfd.Profile(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="discriminator"):
        bfd.SessionConfig(0)


# -- state table ----------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, In)), ids=str)
def test_every_pair_is_in_the_table_or_illegal(state: bfd.State, event: bfd.Input) -> None:
    step = bfd.TABLE.get((state, event))
    if step is None:
        # AdminDown discards packets before the state machine (§6.8.6) and runs no detection
        # timer: these inputs cannot reach the table.
        assert state is S.ADMIN_DOWN
        assert event not in (In.ADMIN_DOWN, In.ADMIN_UP)
        return
    if state is S.ADMIN_DOWN:
        assert step.state is (S.DOWN if event is In.ADMIN_UP else S.ADMIN_DOWN)
    if step.state is S.UP and state is not S.UP:
        assert step.diagnostic is D.NO_DIAGNOSTIC
    if step.state is S.DOWN and state in (S.INIT, S.UP):
        assert step.diagnostic in (
            D.CONTROL_DETECTION_TIME_EXPIRED,
            D.NEIGHBOR_SIGNALED_SESSION_DOWN,
        )


def test_rfc5880_three_way_handshake_rows() -> None:
    assert bfd.TABLE[S.DOWN, In.RECEIVED_DOWN].state is S.INIT
    assert bfd.TABLE[S.DOWN, In.RECEIVED_INIT].state is S.UP
    assert bfd.TABLE[S.DOWN, In.RECEIVED_UP].state is S.DOWN
    assert bfd.TABLE[S.INIT, In.RECEIVED_UP].state is S.UP
    assert bfd.TABLE[S.UP, In.RECEIVED_DOWN] == bfd.Transition(
        S.DOWN, D.NEIGHBOR_SIGNALED_SESSION_DOWN
    )


# -- two sessions ---------------------------------------------------------------------------


def test_two_sessions_come_up_with_slow_start_then_speed_up_by_poll_and_final() -> None:
    link = BfdLink(*configs())
    link.advance(3)
    assert link.left.state is link.right.state is S.UP
    # Three-way handshake: one side passes through Init, the other hears Init and goes Up.
    assert [c.state for c in link.changes[link.right]] == [S.INIT, S.UP]
    assert [c.state for c in link.changes[link.left]] == [S.UP]
    before_up = [p for _, p in link.sent[link.left] if p.state is not S.UP]
    assert {p.desired_min_tx for p in before_up} == {1_000_000}
    # Going Up lowered our Desired Min TX: a Poll Sequence told the peer, the Final ended it.
    assert any(p.poll for _, p in link.sent[link.left])
    assert any(p.final for _, p in link.sent[link.right])
    assert not link.left.polling
    assert not link.right.polling
    assert link.left.transmit_interval() == 0.3
    assert link.left.detection_time() == pytest.approx(0.9)


def test_silence_is_detected_exactly_at_the_detection_time() -> None:
    link = up_link()
    link.silent.add(link.right)
    last_heard = max(t for t, _ in link.sent[link.right])
    detect = link.left.detection_time()
    link.advance(last_heard + detect - link.now - 1e-6)
    assert link.left.state is S.UP
    link.advance(1e-6)
    assert link.left.state is S.DOWN
    down = link.changes[link.left][-1]
    assert down == bfd.StateChanged(S.UP, S.DOWN, D.CONTROL_DETECTION_TIME_EXPIRED)
    assert link.left.remote_discriminator == 0
    # The silent peer still hears us say Down and follows; once it speaks again both recover.
    link.advance(1.5)
    assert (
        bfd.StateChanged(S.UP, S.DOWN, D.NEIGHBOR_SIGNALED_SESSION_DOWN) in link.changes[link.right]
    )
    link.silent.clear()
    link.advance(4)
    assert link.left.state is link.right.state is S.UP


def test_slower_interval_waits_for_the_final() -> None:
    link = up_link()
    link.silent.add(link.right)  # hold back the Final
    link.left.set_profile(bfd.Profile(transmit_interval=1000, receive_interval=50))
    assert link.left.polling
    assert link.left.transmit_interval() == 0.3  # old, faster rate until the Final
    assert link.left.detection_time() == pytest.approx(0.9)  # old, longer detection too
    link.advance(0.5)
    polls = [p for t, p in link.sent[link.left] if t > link.now - 0.5]
    assert polls
    assert all(p.poll and p.desired_min_tx == 1_000_000 for p in polls)
    link.silent.clear()
    link.advance(1)
    assert not link.left.polling
    assert link.left.transmit_interval() == 1.0
    assert link.left.detection_time() == pytest.approx(0.9)  # the peer still sends every 300 ms
    assert link.left.state is link.right.state is S.UP
    assert link.right.detection_time() == pytest.approx(3.0)


def test_transmit_jitter_stays_within_75_to_100_percent() -> None:
    for jitter, factor in [(0.0, 1.0), (1.0, 0.75)]:
        link = BfdLink(*configs(), jitter=jitter)
        link.advance(5)
        times = [t for t, p in link.sent[link.left] if p.state is S.UP and not p.final][-5:]
        gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
        assert gaps == {round(0.3 * factor, 6)}


def test_passive_session_waits_to_hear_the_peer() -> None:
    passive = bfd.Profile(passive_mode=True)
    link = BfdLink(bfd.SessionConfig(1, passive), bfd.SessionConfig(2, passive))
    link.advance(10)
    assert link.sent[link.left] == link.sent[link.right] == []
    assert link.left.next_deadline() is None
    link = BfdLink(bfd.SessionConfig(1, passive), bfd.SessionConfig(2))
    link.advance(3)
    assert link.left.state is link.right.state is S.UP
    first_reply = link.sent[link.left][0][1]
    assert first_reply.your_discriminator == 2  # spoke only after hearing the peer


def test_admin_down_is_signalled_to_the_peer() -> None:
    link = up_link()
    link.left.admin_down()
    link.advance(2)
    assert link.left.state is S.ADMIN_DOWN
    assert link.right.state is S.DOWN
    assert link.right.diagnostic is D.NEIGHBOR_SIGNALED_SESSION_DOWN
    assert link.sent[link.left][-1][1].diagnostic == D.ADMINISTRATIVELY_DOWN
    link.left.admin_up()
    link.advance(4)
    assert link.left.state is link.right.state is S.UP


def test_peer_in_demand_mode_gets_no_periodic_packets() -> None:
    core = bfd.Session(bfd.SessionConfig(1), 0.0, lambda: 0.0)
    # The third packet is the peer's Final: it closes the Poll Sequence our going Up started,
    # after which a peer in Demand mode gets no periodic packets.
    for state, final in ((S.DOWN, False), (S.UP, False), (S.UP, True)):
        hello = replace(
            PACKET, my_discriminator=9, your_discriminator=1, state=state, demand=True, final=final
        )
        core.receive(bfd.encode(hello), 0.0, ttl=255)
        core.poll(0.0)
    assert core.state is S.UP
    assert core.next_deadline() == pytest.approx(0.9)  # only the detection timer runs
    polled = replace(PACKET, my_discriminator=9, your_discriminator=1, demand=True, poll=True)
    core.receive(bfd.encode(polled), 0.5, ttl=255)
    (final,) = core.poll(0.5)
    assert bfd.decode(final).final
    assert not bfd.decode(final).poll


def test_bad_packets_are_counted_and_dropped() -> None:
    core = bfd.Session(bfd.SessionConfig(1), 0.0, lambda: 0.0)
    hello = replace(PACKET, state=S.DOWN, my_discriminator=9, your_discriminator=0)
    core.receive(bfd.encode(hello), 0.0, ttl=254)  # single-hop needs TTL 255 (RFC 5881)
    core.receive(b"\x00" * 10, 0.0, ttl=255)
    core.receive(bfd.encode(replace(hello, your_discriminator=77)), 0.0, ttl=255)
    auth = replace(hello, authentication=bfd.Authentication(1, b"\x01pw"))
    core.receive(bfd.encode(auth), 0.0, ttl=255)
    assert core.counters.dropped == {
        bfd.Discard.BAD_TTL: 1,
        bfd.Discard.TRUNCATED: 1,
        bfd.Discard.UNKNOWN_DISCRIMINATOR: 1,
        bfd.Discard.AUTHENTICATION: 1,
    }
    assert core.counters.received == 0
    assert core.state is S.DOWN
    assert core.remote_discriminator == 0


def test_multihop_checks_the_configured_minimum_ttl_and_never_offers_echo() -> None:
    profile = bfd.Profile(minimum_ttl=250, echo_mode=True)
    core = bfd.Session(bfd.SessionConfig(1, profile, multihop=True), 0.0, lambda: 0.0)
    hello = bfd.encode(replace(PACKET, state=S.DOWN, my_discriminator=9, your_discriminator=0))
    core.receive(hello, 0.0, ttl=249)
    core.receive(hello, 0.0, ttl=250)
    assert core.counters.dropped == {bfd.Discard.BAD_TTL: 1}
    assert core.state is S.INIT
    (packet,) = core.poll(0.0)
    assert bfd.decode(packet).required_min_echo_rx == 0
    single = bfd.Session(bfd.SessionConfig(1, profile), 0.0, lambda: 0.0)
    assert bfd.decode(single.poll(0.0)[0]).required_min_echo_rx == 50_000


def test_ports_and_ttl_constants() -> None:
    assert (bfd.CONTROL_PORT, bfd.ECHO_PORT, bfd.MULTIHOP_PORT, bfd.TTL) == (3784, 3785, 4784, 255)
    assert bfd.SOURCE_PORTS[0] == 49152
    assert bfd.SOURCE_PORTS[-1] == 65535
