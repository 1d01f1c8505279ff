"""BFD (RFC 5880) for BGP peers: control packet codec and session state machine, sans-IO.

`decode`/`encode` handle the version 1 control packet (§4.1) and parse the authentication
section header (§4.2). `decode` applies the packet-level reception checks of §6.8.6 and raises
`BfdError` (one type, with a `Discard` reason) for anything to be dropped.

`Session` runs one asynchronous-mode session: `receive(packet, now, ttl)` takes a datagram,
`poll(now)` returns the packets due, `next_deadline()` says when to call `poll` again. States
move by one table, `TABLE` (AdminDown, Down, Init, Up; §6.2 and §6.8.6); a move the table lacks
raises `IllegalTransition`. Time is monotonic seconds passed in, jitter a callable passed in.

Implemented: slow start (at least 1 s Desired Min TX while not Up, §6.8.3); Poll/Final whenever
our timers change while Up, with the old transmit interval and detection time kept until Final
(§6.8.3); answering Poll with Final at once; detection time = remote Detect Mult x
max(our Required Min RX, remote Desired Min TX), in Init and Up (§6.8.4); 0-25% transmit jitter
(§6.8.7); passive mode (silent until the peer is heard); honouring a peer in Demand mode;
single-hop GTSM (TTL 255, RFC 5881) or a configured minimum TTL for multihop (RFC 5883).

Not implemented: authentication (packets with the A bit are dropped), our own Demand mode, and
the Echo function: the echo fields are modelled and Required Min Echo RX is advertised when the
profile enables echo on a single-hop session (the kernel loops the peer's echo packets back), but
ironlb sends no echo packets itself.
"""

from __future__ import annotations

import collections
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ironlb.core import config

CONTROL_PORT = 3784
"""Single-hop control packets (RFC 5881 §4)."""
ECHO_PORT = 3785
MULTIHOP_PORT = 4784
"""Multihop control packets (RFC 5883 §5)."""
SOURCE_PORTS = range(49152, 65536)
"""Source ports a session must send from (RFC 5881 §4)."""
TTL = 255
"""Every control packet is sent with this TTL/Hop Limit; single-hop ones must arrive with it."""

VERSION = 1
_HEADER = struct.Struct("!BBBBIIIII")
_SLOW_START_US = 1_000_000
_US_PER_MS = 1000


class State(enum.IntEnum):
    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diagnostic(enum.IntEnum):
    NO_DIAGNOSTIC = 0
    CONTROL_DETECTION_TIME_EXPIRED = 1
    ECHO_FUNCTION_FAILED = 2
    NEIGHBOR_SIGNALED_SESSION_DOWN = 3
    FORWARDING_PLANE_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8


class Discard(enum.Enum):
    """Why a received packet was dropped (RFC 5880 §6.8.6, RFC 5881 §5)."""

    TRUNCATED = "truncated"
    BAD_VERSION = "bad version"
    BAD_LENGTH = "bad length"
    ZERO_DETECT_MULT = "zero detect multiplier"
    MULTIPOINT = "multipoint bit set"
    ZERO_MY_DISCRIMINATOR = "zero my discriminator"
    ZERO_YOUR_DISCRIMINATOR = "zero your discriminator outside Down"
    BAD_TTL = "TTL below the minimum"
    UNKNOWN_DISCRIMINATOR = "your discriminator is not ours"
    AUTHENTICATION = "authentication not configured"


class BfdError(Exception):
    def __init__(self, reason: Discard, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass(frozen=True, slots=True)
class Authentication:
    """The authentication section, unverified (ironlb configures no authentication)."""

    type: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ControlPacket:
    state: State
    diagnostic: int
    """A `Diagnostic`; kept as an integer because codes 9-31 are reserved, not invalid."""
    detect_mult: int
    my_discriminator: int
    your_discriminator: int
    desired_min_tx: int
    """Microseconds, like every interval on the wire."""
    required_min_rx: int
    required_min_echo_rx: int = 0
    poll: bool = False
    final: bool = False
    control_plane_independent: bool = False
    demand: bool = False
    authentication: Authentication | None = None


_POLL, _FINAL, _CPI, _AUTH, _DEMAND, _MULTIPOINT = 0x20, 0x10, 0x08, 0x04, 0x02, 0x01


def encode(packet: ControlPacket) -> bytes:
    auth = b""
    if packet.authentication is not None:
        data = packet.authentication.data
        auth = struct.pack("!BB", packet.authentication.type, 2 + len(data)) + data
    flags = (
        (_POLL if packet.poll else 0)
        | (_FINAL if packet.final else 0)
        | (_CPI if packet.control_plane_independent else 0)
        | (_AUTH if packet.authentication is not None else 0)
        | (_DEMAND if packet.demand else 0)
    )
    header = _HEADER.pack(
        VERSION << 5 | packet.diagnostic,
        packet.state << 6 | flags,
        packet.detect_mult,
        _HEADER.size + len(auth),
        packet.my_discriminator,
        packet.your_discriminator,
        packet.desired_min_tx,
        packet.required_min_rx,
        packet.required_min_echo_rx,
    )
    return header + auth


def decode(data: bytes) -> ControlPacket:
    """Decode one control packet, rejecting what RFC 5880 §6.8.6 says to discard."""
    if len(data) < _HEADER.size:
        raise BfdError(Discard.TRUNCATED, f"{len(data)} bytes")
    vers_diag, state_flags, mult, length, mine, yours, tx, rx, echo = _HEADER.unpack_from(data)
    if vers_diag >> 5 != VERSION:
        raise BfdError(Discard.BAD_VERSION, str(vers_diag >> 5))
    authenticated = bool(state_flags & _AUTH)
    # The Length field may not exceed what arrived; bytes beyond it are ignored.
    if length < _HEADER.size + (2 if authenticated else 0) or length > len(data):
        raise BfdError(Discard.BAD_LENGTH, f"length {length} in {len(data)} bytes")
    if mult == 0:
        raise BfdError(Discard.ZERO_DETECT_MULT)
    if state_flags & _MULTIPOINT:
        raise BfdError(Discard.MULTIPOINT)
    if mine == 0:
        raise BfdError(Discard.ZERO_MY_DISCRIMINATOR)
    state = State(state_flags >> 6)
    if yours == 0 and state not in (State.DOWN, State.ADMIN_DOWN):
        raise BfdError(Discard.ZERO_YOUR_DISCRIMINATOR, state.name)
    authentication = None
    if authenticated:
        auth_type, auth_length = data[24], data[25]
        if auth_length < 2 or _HEADER.size + auth_length != length:
            raise BfdError(Discard.BAD_LENGTH, f"authentication length {auth_length}")
        authentication = Authentication(auth_type, bytes(data[26:length]))
    return ControlPacket(
        state=state,
        diagnostic=vers_diag & 0x1F,
        detect_mult=mult,
        my_discriminator=mine,
        your_discriminator=yours,
        desired_min_tx=tx,
        required_min_rx=rx,
        required_min_echo_rx=echo,
        poll=bool(state_flags & _POLL),
        final=bool(state_flags & _FINAL),
        control_plane_independent=bool(state_flags & _CPI),
        demand=bool(state_flags & _DEMAND),
        authentication=authentication,
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} {value} out of range {low}-{high}")


@dataclass(frozen=True, slots=True)
class Profile:
    """A MetalLB BFDProfile: intervals in milliseconds, same names, ranges and defaults."""

    receive_interval: int = 300
    transmit_interval: int = 300
    detect_multiplier: int = 3
    echo_mode: bool = False
    echo_interval: int = 50
    passive_mode: bool = False
    minimum_ttl: int = 254
    """Multihop only: packets arriving with a lower TTL are dropped."""

    def __post_init__(self) -> None:
        _check_range("receiveInterval", self.receive_interval, *config.BFD_INTERVAL_MS)
        _check_range("transmitInterval", self.transmit_interval, *config.BFD_INTERVAL_MS)
        _check_range("detectMultiplier", self.detect_multiplier, *config.BFD_DETECT_MULTIPLIER)
        _check_range("echoInterval", self.echo_interval, *config.BFD_INTERVAL_MS)
        _check_range("minimumTtl", self.minimum_ttl, *config.BFD_MINIMUM_TTL)


_DEFAULT_PROFILE = Profile()


@dataclass(frozen=True, slots=True)
class SessionConfig:
    local_discriminator: int
    """Non-zero and unique among this host's sessions: the peer addresses us by it."""
    profile: Profile = _DEFAULT_PROFILE
    multihop: bool = False

    def __post_init__(self) -> None:
        _check_range("local discriminator", self.local_discriminator, 1, 0xFFFFFFFF)


class Input(enum.Enum):
    RECEIVED_ADMIN_DOWN = enum.auto()
    RECEIVED_DOWN = enum.auto()
    RECEIVED_INIT = enum.auto()
    RECEIVED_UP = enum.auto()
    DETECTION_TIMEOUT = enum.auto()
    ADMIN_DOWN = enum.auto()
    ADMIN_UP = enum.auto()


_RECEIVED = {
    State.ADMIN_DOWN: Input.RECEIVED_ADMIN_DOWN,
    State.DOWN: Input.RECEIVED_DOWN,
    State.INIT: Input.RECEIVED_INIT,
    State.UP: Input.RECEIVED_UP,
}


@dataclass(frozen=True, slots=True)
class Transition:
    state: State
    diagnostic: Diagnostic | None = None
    """The new bfd.LocalDiag; None leaves it as it is."""


S, E, D = State, Input, Diagnostic
TABLE: dict[tuple[State, Input], Transition] = {
    (S.DOWN, E.RECEIVED_ADMIN_DOWN): Transition(S.DOWN),
    (S.DOWN, E.RECEIVED_DOWN): Transition(S.INIT),
    (S.DOWN, E.RECEIVED_INIT): Transition(S.UP, D.NO_DIAGNOSTIC),
    (S.DOWN, E.RECEIVED_UP): Transition(S.DOWN),
    (S.DOWN, E.DETECTION_TIMEOUT): Transition(S.DOWN),
    (S.INIT, E.RECEIVED_ADMIN_DOWN): Transition(S.DOWN, D.NEIGHBOR_SIGNALED_SESSION_DOWN),
    (S.INIT, E.RECEIVED_DOWN): Transition(S.INIT),
    (S.INIT, E.RECEIVED_INIT): Transition(S.UP, D.NO_DIAGNOSTIC),
    (S.INIT, E.RECEIVED_UP): Transition(S.UP, D.NO_DIAGNOSTIC),
    (S.INIT, E.DETECTION_TIMEOUT): Transition(S.DOWN, D.CONTROL_DETECTION_TIME_EXPIRED),
    (S.UP, E.RECEIVED_ADMIN_DOWN): Transition(S.DOWN, D.NEIGHBOR_SIGNALED_SESSION_DOWN),
    (S.UP, E.RECEIVED_DOWN): Transition(S.DOWN, D.NEIGHBOR_SIGNALED_SESSION_DOWN),
    (S.UP, E.RECEIVED_INIT): Transition(S.UP),
    (S.UP, E.RECEIVED_UP): Transition(S.UP),
    (S.UP, E.DETECTION_TIMEOUT): Transition(S.DOWN, D.CONTROL_DETECTION_TIME_EXPIRED),
    # Administrative moves are idempotent.
    **{(s, E.ADMIN_DOWN): Transition(S.ADMIN_DOWN, D.ADMINISTRATIVELY_DOWN) for s in State},
    **{(s, E.ADMIN_UP): Transition(s) for s in (S.DOWN, S.INIT, S.UP)},
    (S.ADMIN_DOWN, E.ADMIN_UP): Transition(S.DOWN, D.NO_DIAGNOSTIC),
}
del S, E, D


class IllegalTransition(RuntimeError):
    """An input that cannot occur in a state, e.g. a detection timeout while AdminDown."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    previous: State
    state: State
    diagnostic: Diagnostic
    """Why: CONTROL_DETECTION_TIME_EXPIRED when the peer fell silent."""


@dataclass(slots=True)
class Counters:
    received: int = 0
    sent: int = 0
    dropped: collections.Counter[Discard] = field(default_factory=collections.Counter)


class Session:
    def __init__(self, config: SessionConfig, now: float, jitter: Callable[[], float]) -> None:
        """`jitter` returns a number in [0, 1] (random.random in production)."""
        self.config = config
        self.counters = Counters()
        self.state = State.DOWN
        self.diagnostic = Diagnostic.NO_DIAGNOSTIC
        self.remote_discriminator = 0
        self.remote_state = State.DOWN
        self._jitter = jitter
        self._remote_min_rx = 1  # µs; RFC 5880 §6.8.1 initial value
        self._remote_desired_tx = 0
        self._remote_detect_mult = 0
        self._remote_demand = False
        # Values we advertise, and the ones in force while a Poll Sequence is outstanding.
        self._desired_tx = self._required_rx = 0
        self._tx_in_force = self._rx_in_force = 0
        self.polling = False
        self._change_timers()
        self._next_tx = now
        self._final_at: float | None = None
        self._detect_at: float | None = None
        self._events: list[StateChanged] = []

    # -- inspection -------------------------------------------------------------------------

    def events(self) -> list[StateChanged]:
        events, self._events = self._events, []
        return events

    def detection_time(self) -> float:
        """Seconds of silence after which the peer is declared down (§6.8.4)."""
        interval = max(self._rx_in_force, self._remote_desired_tx)
        return self._remote_detect_mult * interval / 1_000_000

    def transmit_interval(self) -> float:
        """Seconds between our packets before jitter (§6.8.7)."""
        return max(self._tx_in_force, self._remote_min_rx) / 1_000_000

    def next_deadline(self) -> float | None:
        due = [self._detect_at, self._final_at, self._next_tx if self._may_transmit() else None]
        return min((d for d in due if d is not None), default=None)

    # -- driven by the shell ----------------------------------------------------------------

    def receive(self, packet: bytes, now: float, ttl: int) -> None:
        """One datagram from the peer with the TTL/Hop Limit it arrived with. Bad packets are
        counted in `counters.dropped` and otherwise ignored."""
        try:
            received = decode(packet)
            self._check(received, ttl)
        except BfdError as e:
            self.counters.dropped[e.reason] += 1
            return
        self.counters.received += 1
        self.remote_discriminator = received.my_discriminator
        self.remote_state = received.state
        self._remote_demand = received.demand
        self._remote_min_rx = received.required_min_rx
        self._remote_desired_tx = received.desired_min_tx
        self._remote_detect_mult = received.detect_mult
        if received.final and self.polling:
            self.polling = False
            self._tx_in_force, self._rx_in_force = self._desired_tx, self._required_rx
        if self.state is State.ADMIN_DOWN:
            return
        self._detect_at = now + self.detection_time()
        self._move(_RECEIVED[received.state])
        # A shorter interval (slow start over, or the peer wants packets sooner) applies now.
        self._next_tx = min(self._next_tx, now + self.transmit_interval())
        if received.poll:
            self._final_at = now

    def poll(self, now: float) -> list[bytes]:
        """Advance to `now`: declare the peer down if it has been silent for the detection
        time, and return the packets to send."""
        if self._detect_at is not None and now >= self._detect_at:
            self._detect_at = None
            self.remote_discriminator = 0
            self.remote_state = State.DOWN
            self._move(Input.DETECTION_TIMEOUT)
        packets = []
        if self._final_at is not None:
            packets.append(self._packet(final=True))
            self._final_at = None
        if self._may_transmit() and now >= self._next_tx:
            packets.append(self._packet(poll=self.polling))
            self._next_tx = now + self.transmit_interval() * (1 - 0.25 * self._jitter())
        self.counters.sent += len(packets)
        return packets

    def set_profile(self, profile: Profile) -> None:
        """New intervals take effect through a Poll Sequence when Up (§6.8.3)."""
        self.config = replace(self.config, profile=profile)
        self._change_timers()

    def admin_down(self) -> None:
        self._detect_at = None
        self._move(Input.ADMIN_DOWN)

    def admin_up(self) -> None:
        self._move(Input.ADMIN_UP)

    # -- internals --------------------------------------------------------------------------

    def _check(self, packet: ControlPacket, ttl: int) -> None:
        minimum = self.config.profile.minimum_ttl if self.config.multihop else TTL
        if ttl < minimum:
            raise BfdError(Discard.BAD_TTL, f"{ttl} < {minimum}")
        yours = packet.your_discriminator
        if yours and yours != self.config.local_discriminator:
            raise BfdError(Discard.UNKNOWN_DISCRIMINATOR, str(yours))
        if packet.authentication is not None:
            raise BfdError(Discard.AUTHENTICATION)

    def _move(self, event: Input) -> None:
        step = TABLE.get((self.state, event))
        if step is None:
            raise IllegalTransition(f"{event.name} in {self.state.name}")
        previous = self.state
        self.state = step.state
        if step.diagnostic is not None:
            self.diagnostic = step.diagnostic
        if self.state is not previous:
            self._events.append(StateChanged(previous, self.state, self.diagnostic))
            self._change_timers()

    def _change_timers(self) -> None:
        profile = self.config.profile
        up = self.state is State.UP
        desired_tx = profile.transmit_interval * _US_PER_MS
        if not up:
            desired_tx = max(desired_tx, _SLOW_START_US)  # slow start, §6.8.3
        required_rx = profile.receive_interval * _US_PER_MS
        if not up:
            # Nothing depends on the peer having seen our timers until the session is Up.
            self.polling = False
            self._tx_in_force, self._rx_in_force = desired_tx, required_rx
        elif (desired_tx, required_rx) != (self._desired_tx, self._required_rx):
            # Until the Final: a slower transmit rate and a faster receive rate wait (§6.8.3).
            self.polling = True
            self._tx_in_force = min(self._tx_in_force, desired_tx)
            self._rx_in_force = max(self._rx_in_force, required_rx)
        self._desired_tx, self._required_rx = desired_tx, required_rx

    def _may_transmit(self) -> bool:
        if self.config.profile.passive_mode and not self.remote_discriminator:
            return False
        if self._remote_min_rx == 0:
            return False
        # A peer in Demand mode wants no periodic packets once both are Up, Polls aside (§6.6).
        remote_demand = self._remote_demand and self.state is self.remote_state is State.UP
        return not remote_demand or self.polling

    def _packet(self, *, poll: bool = False, final: bool = False) -> bytes:
        profile = self.config.profile
        echo = profile.echo_mode and not self.config.multihop
        return encode(
            ControlPacket(
                state=self.state,
                diagnostic=self.diagnostic,
                detect_mult=profile.detect_multiplier,
                my_discriminator=self.config.local_discriminator,
                your_discriminator=self.remote_discriminator,
                desired_min_tx=self._desired_tx,
                required_min_rx=self._required_rx,
                required_min_echo_rx=profile.echo_interval * _US_PER_MS if echo else 0,
                poll=poll,
                final=final,
            )
        )
