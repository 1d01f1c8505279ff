"""The BGP session state machine of RFC 4271 §8, as one table, and its timers.

`TABLE` maps (state, event) to the next state and the actions to take. An event a state does not
list follows that state's "any other event" rule (`ANY_OTHER`): ignored in Idle, back to Idle in
Connect/Active, FSM Error NOTIFICATION and Idle once a connection is open. `ILLEGAL` pairs raise
`IllegalTransition`: they can only come from a caller bug (a second TCP connection handed to a
core that already has one).

`Fsm` owns the timers (ConnectRetry, Hold, Keepalive, IdleHold): it performs timer actions itself
and returns the others in a `Step` for the session to carry out. Time is passed in as monotonic
seconds; jitter (RFC 4271 §10: 75-100% of ConnectRetry and Keepalive) comes from a callable the
caller supplies.

Deliberate choices, all within what RFC 4271 allows:
- No DelayOpen, no DampPeerOscillations. Instead of an unbounded immediate restart, every
  automatic drop to Idle arms the IdleHoldTimer from `ironlb.core.backoff`, whose expiry is an
  AutomaticStart (RFC 4271 §8.1.1 optional attributes). The backoff starts over only after a
  session stayed Established for `Timers.stable_time` (30 s): a peer that ends every session
  right after it came up (a malformed UPDATE, a NOTIFICATION after our first routes) is retried
  ever more slowly, not at the shortest interval for ever. ManualStop never restarts by itself.
- RFC events 14, 16 and 17 (a TCP connection came up, whoever opened it) are one event: the
  table treats them alike. Events 24 and 25 (NOTIFICATION received) are one event too: a
  NOTIFICATION is never answered with a NOTIFICATION, also in OpenSent.
- A message-header error in Established sends the header error (RFC 4271 §6.1), not the FSM
  error the §8.2.2 Established table lists under "any other event".
- ROUTE-REFRESH (RFC 2918) is an extra event: refreshes the hold timer in Established, is an
  unexpected message elsewhere.
- Passive start (event 4/5) waits in Active and, like RFC 4271, connects after ConnectRetryTime.
- Connection collisions (§6.8) need two connections, hence two session cores; the shell resolves
  them with `keep_locally_initiated` and ends the loser with an OpenCollisionDump event.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from ironlb.bgp import errors
from ironlb.core import backoff


class State(enum.Enum):
    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


class Event(enum.Enum):
    """RFC 4271 §8.1 events (numbers in the values) that ironlb generates."""

    MANUAL_START = 1
    MANUAL_STOP = 2
    AUTOMATIC_START = 3
    MANUAL_START_PASSIVE = 4
    AUTOMATIC_START_PASSIVE = 5
    CONNECT_RETRY_TIMER_EXPIRES = 9
    HOLD_TIMER_EXPIRES = 10
    KEEPALIVE_TIMER_EXPIRES = 11
    TCP_CONNECTION_CONFIRMED = 17
    TCP_CONNECTION_FAILS = 18
    BGP_OPEN = 19
    BGP_HEADER_ERR = 21
    BGP_OPEN_MSG_ERR = 22
    OPEN_COLLISION_DUMP = 23
    NOTIF_MSG = 25
    KEEPALIVE_MSG = 26
    UPDATE_MSG = 27
    UPDATE_MSG_ERR = 28
    ROUTE_REFRESH_MSG = 100


class Action(enum.Enum):
    # Carried out by the session.
    INITIATE_TCP = enum.auto()
    DROP_TCP = enum.auto()
    SEND_OPEN = enum.auto()
    SEND_KEEPALIVE = enum.auto()
    NOTIFY_ERROR = enum.auto()
    """Send the NOTIFICATION for the error that caused the event."""
    NOTIFY_FSM_ERROR = enum.auto()
    NOTIFY_CEASE = enum.auto()
    NOTIFY_HOLD_TIMER_EXPIRED = enum.auto()
    # Carried out by the FSM itself.
    START_CONNECT_RETRY = enum.auto()
    START_HOLD_LARGE = enum.auto()
    START_NEGOTIATED_TIMERS = enum.auto()
    RESTART_HOLD = enum.auto()
    RESTART_KEEPALIVE = enum.auto()
    STOP_TIMERS = enum.auto()
    START_IDLE_HOLD = enum.auto()


_TIMER_ACTIONS = frozenset(
    {
        Action.START_CONNECT_RETRY,
        Action.START_HOLD_LARGE,
        Action.START_NEGOTIATED_TIMERS,
        Action.RESTART_HOLD,
        Action.RESTART_KEEPALIVE,
        Action.STOP_TIMERS,
        Action.START_IDLE_HOLD,
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    state: State
    actions: tuple[Action, ...] = ()


S, E, A = State, Event, Action
_CONNECT = (A.START_CONNECT_RETRY, A.INITIATE_TCP)
_SEND_OPEN = (A.STOP_TIMERS, A.SEND_OPEN, A.START_HOLD_LARGE)
# "Release all BGP resources, drop the TCP connection": automatic drops restart later, manual
# stops and collision dumps do not.
_DOWN = (A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD)
_STOPPED = (A.STOP_TIMERS, A.DROP_TCP)
_STARTS = (E.MANUAL_START, E.AUTOMATIC_START, E.MANUAL_START_PASSIVE, E.AUTOMATIC_START_PASSIVE)

TABLE: dict[tuple[State, Event], Transition] = {
    (S.IDLE, E.MANUAL_START): Transition(S.CONNECT, (A.STOP_TIMERS, *_CONNECT)),
    (S.IDLE, E.AUTOMATIC_START): Transition(S.CONNECT, (A.STOP_TIMERS, *_CONNECT)),
    (S.IDLE, E.MANUAL_START_PASSIVE): Transition(S.ACTIVE, (A.STOP_TIMERS, A.START_CONNECT_RETRY)),
    (S.IDLE, E.AUTOMATIC_START_PASSIVE): Transition(
        S.ACTIVE, (A.STOP_TIMERS, A.START_CONNECT_RETRY)
    ),
    (S.IDLE, E.MANUAL_STOP): Transition(S.IDLE, (A.STOP_TIMERS,)),
    # Idle refuses connections.
    (S.IDLE, E.TCP_CONNECTION_CONFIRMED): Transition(S.IDLE, (A.DROP_TCP,)),
    (S.CONNECT, E.MANUAL_STOP): Transition(S.IDLE, _STOPPED),
    (S.CONNECT, E.CONNECT_RETRY_TIMER_EXPIRES): Transition(S.CONNECT, (A.DROP_TCP, *_CONNECT)),
    (S.CONNECT, E.TCP_CONNECTION_CONFIRMED): Transition(S.OPEN_SENT, _SEND_OPEN),
    (S.CONNECT, E.TCP_CONNECTION_FAILS): Transition(S.IDLE, _DOWN),
    (S.ACTIVE, E.MANUAL_STOP): Transition(S.IDLE, _STOPPED),
    (S.ACTIVE, E.CONNECT_RETRY_TIMER_EXPIRES): Transition(S.CONNECT, _CONNECT),
    (S.ACTIVE, E.TCP_CONNECTION_CONFIRMED): Transition(S.OPEN_SENT, _SEND_OPEN),
    (S.ACTIVE, E.TCP_CONNECTION_FAILS): Transition(S.IDLE, _DOWN),
    (S.OPEN_SENT, E.MANUAL_STOP): Transition(S.IDLE, (A.NOTIFY_CEASE, *_STOPPED)),
    (S.OPEN_SENT, E.HOLD_TIMER_EXPIRES): Transition(S.IDLE, (A.NOTIFY_HOLD_TIMER_EXPIRED, *_DOWN)),
    (S.OPEN_SENT, E.TCP_CONNECTION_FAILS): Transition(
        S.ACTIVE, (A.STOP_TIMERS, A.DROP_TCP, A.START_CONNECT_RETRY)
    ),
    (S.OPEN_SENT, E.BGP_OPEN): Transition(
        S.OPEN_CONFIRM, (A.SEND_KEEPALIVE, A.START_NEGOTIATED_TIMERS)
    ),
    (S.OPEN_SENT, E.BGP_HEADER_ERR): Transition(S.IDLE, (A.NOTIFY_ERROR, *_DOWN)),
    (S.OPEN_SENT, E.BGP_OPEN_MSG_ERR): Transition(S.IDLE, (A.NOTIFY_ERROR, *_DOWN)),
    (S.OPEN_SENT, E.OPEN_COLLISION_DUMP): Transition(S.IDLE, (A.NOTIFY_CEASE, *_STOPPED)),
    (S.OPEN_SENT, E.NOTIF_MSG): Transition(S.IDLE, _DOWN),
    (S.OPEN_CONFIRM, E.MANUAL_STOP): Transition(S.IDLE, (A.NOTIFY_CEASE, *_STOPPED)),
    (S.OPEN_CONFIRM, E.HOLD_TIMER_EXPIRES): Transition(
        S.IDLE, (A.NOTIFY_HOLD_TIMER_EXPIRED, *_DOWN)
    ),
    (S.OPEN_CONFIRM, E.KEEPALIVE_TIMER_EXPIRES): Transition(
        S.OPEN_CONFIRM, (A.SEND_KEEPALIVE, A.RESTART_KEEPALIVE)
    ),
    (S.OPEN_CONFIRM, E.TCP_CONNECTION_FAILS): Transition(S.IDLE, _DOWN),
    (S.OPEN_CONFIRM, E.NOTIF_MSG): Transition(S.IDLE, _DOWN),
    (S.OPEN_CONFIRM, E.BGP_HEADER_ERR): Transition(S.IDLE, (A.NOTIFY_ERROR, *_DOWN)),
    (S.OPEN_CONFIRM, E.BGP_OPEN_MSG_ERR): Transition(S.IDLE, (A.NOTIFY_ERROR, *_DOWN)),
    (S.OPEN_CONFIRM, E.OPEN_COLLISION_DUMP): Transition(S.IDLE, (A.NOTIFY_CEASE, *_STOPPED)),
    (S.OPEN_CONFIRM, E.KEEPALIVE_MSG): Transition(S.ESTABLISHED, (A.RESTART_HOLD,)),
    (S.ESTABLISHED, E.MANUAL_STOP): Transition(S.IDLE, (A.NOTIFY_CEASE, *_STOPPED)),
    (S.ESTABLISHED, E.HOLD_TIMER_EXPIRES): Transition(
        S.IDLE, (A.NOTIFY_HOLD_TIMER_EXPIRED, *_DOWN)
    ),
    (S.ESTABLISHED, E.KEEPALIVE_TIMER_EXPIRES): Transition(
        S.ESTABLISHED, (A.SEND_KEEPALIVE, A.RESTART_KEEPALIVE)
    ),
    (S.ESTABLISHED, E.OPEN_COLLISION_DUMP): Transition(S.IDLE, (A.NOTIFY_CEASE, *_STOPPED)),
    (S.ESTABLISHED, E.TCP_CONNECTION_FAILS): Transition(S.IDLE, _DOWN),
    (S.ESTABLISHED, E.NOTIF_MSG): Transition(S.IDLE, _DOWN),
    (S.ESTABLISHED, E.KEEPALIVE_MSG): Transition(S.ESTABLISHED, (A.RESTART_HOLD,)),
    (S.ESTABLISHED, E.UPDATE_MSG): Transition(S.ESTABLISHED, (A.RESTART_HOLD,)),
    (S.ESTABLISHED, E.ROUTE_REFRESH_MSG): Transition(S.ESTABLISHED, (A.RESTART_HOLD,)),
    (S.ESTABLISHED, E.UPDATE_MSG_ERR): Transition(S.IDLE, (A.NOTIFY_ERROR, *_DOWN)),
    (S.ESTABLISHED, E.BGP_HEADER_ERR): Transition(S.IDLE, (A.NOTIFY_ERROR, *_DOWN)),
    # Start events are ignored once started.
    **{
        (state, event): Transition(state)
        for state in State
        if state is not S.IDLE
        for event in _STARTS
    },
}

ANY_OTHER: dict[State, Transition] = {
    S.IDLE: Transition(S.IDLE),
    S.CONNECT: Transition(S.IDLE, _DOWN),
    S.ACTIVE: Transition(S.IDLE, _DOWN),
    S.OPEN_SENT: Transition(S.IDLE, (A.NOTIFY_FSM_ERROR, *_DOWN)),
    S.OPEN_CONFIRM: Transition(S.IDLE, (A.NOTIFY_FSM_ERROR, *_DOWN)),
    S.ESTABLISHED: Transition(S.IDLE, (A.NOTIFY_FSM_ERROR, *_DOWN)),
}

ILLEGAL = frozenset(
    (state, E.TCP_CONNECTION_CONFIRMED) for state in (S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED)
)

del S, E, A


class IllegalTransition(RuntimeError):
    """The caller drove the FSM in a way no peer can cause."""


def transition(state: State, event: Event) -> Transition:
    if (state, event) in ILLEGAL:
        raise IllegalTransition(f"{event.name} in {state.value}")
    return TABLE.get((state, event)) or ANY_OTHER[state]


_UNEXPECTED_MESSAGE = {
    State.OPEN_SENT: errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_SENT,
    State.OPEN_CONFIRM: errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
    State.ESTABLISHED: errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_ESTABLISHED,
}


def fsm_error(state: State, message_type: int | None) -> errors.BgpError:
    """The FSM Error for an unexpected event in `state`; for an unexpected message, the
    RFC 6608 subcode with the message type as data."""
    if message_type is None:
        return errors.BgpError(errors.ErrorCode.FSM, reason=f"unexpected event in {state.value}")
    return errors.BgpError(
        errors.ErrorCode.FSM,
        _UNEXPECTED_MESSAGE.get(state, errors.FsmSubcode.UNSPECIFIED),
        bytes((message_type,)),
        f"unexpected message type {message_type} in {state.value}",
    )


def keep_locally_initiated(local_id: IPv4Address, remote_id: IPv4Address) -> bool:
    """Connection collision (RFC 4271 §6.8): the connection opened by the speaker with the higher
    BGP Identifier survives. True: keep ours, dump the one the peer opened."""
    return int(local_id) > int(remote_id)


LARGE_HOLD_TIME = 240.0
"""Hold time while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes)."""


_IDLE_HOLD = backoff.BGP_IDLE_HOLD


@dataclass(frozen=True, slots=True)
class Timers:
    hold_time: int = 90
    """Hold time proposed in our OPEN: 0 (no keepalives) or 3-65535 seconds."""
    keepalive_time: int | None = None
    """Keepalive interval; None means a third of the negotiated hold time."""
    connect_retry_time: float = 30.0
    """Seconds before a connection attempt is abandoned and retried (MetalLB connectTime)."""
    idle_hold: backoff.Policy = _IDLE_HOLD
    """Wait in Idle before restarting automatically after a drop; grows with each failure."""
    stable_time: float = 30.0
    """Seconds a session must stay Established before the idle-hold backoff starts over."""

    def __post_init__(self) -> None:
        if self.hold_time != 0 and not 3 <= self.hold_time <= 0xFFFF:
            raise ValueError(f"hold time {self.hold_time}: must be 0 or 3-65535 seconds")
        keepalive = self.keepalive_time
        if keepalive is not None and not (
            1 <= keepalive <= self.hold_time or keepalive == self.hold_time == 0
        ):
            raise ValueError(
                f"keepalive time {keepalive}: must be 1 to the hold time (0 if the hold time is 0)"
            )
        if self.connect_retry_time <= 0:
            raise ValueError("connect retry time must be positive")
        if self.stable_time < 0:
            raise ValueError("stable time must not be negative")


class Timer(enum.Enum):
    CONNECT_RETRY = "ConnectRetry"
    HOLD = "Hold"
    KEEPALIVE = "Keepalive"
    IDLE_HOLD = "IdleHold"


_EXPIRY = {
    Timer.CONNECT_RETRY: Event.CONNECT_RETRY_TIMER_EXPIRES,
    Timer.HOLD: Event.HOLD_TIMER_EXPIRES,
    Timer.KEEPALIVE: Event.KEEPALIVE_TIMER_EXPIRES,
}


@dataclass(frozen=True, slots=True)
class Step:
    """One transition taken: what happened and what the session must now do."""

    event: Event
    previous: State
    state: State
    actions: tuple[Action, ...]


class Fsm:
    def __init__(self, timers: Timers, jitter: Callable[[], float]) -> None:
        self.state = State.IDLE
        self.passive = False
        """Started with passive TCP establishment; automatic restarts stay passive."""
        self.hold_time = 0
        """Negotiated hold time (valid from OpenConfirm on)."""
        self.keepalive_time = 0
        self._timers = timers
        self._jitter = jitter
        self._deadlines: dict[Timer, float] = {}
        self._idle_backoff = backoff.Backoff(timers.idle_hold)
        self._established_at: float | None = None
        """When the current session reached Established (None when it is not)."""

    def negotiate(self, peer_hold_time: int) -> None:
        """Adopt the smaller hold time (RFC 4271 §4.2); 1 and 2 seconds are refused."""
        if peer_hold_time in (1, 2):
            raise errors.BgpError(
                errors.ErrorCode.OPEN_MESSAGE,
                errors.OpenSubcode.UNACCEPTABLE_HOLD_TIME,
                reason=f"hold time {peer_hold_time}",
            )
        self.hold_time = min(self._timers.hold_time, peer_hold_time)
        configured = self._timers.keepalive_time
        third = self.hold_time // 3
        self.keepalive_time = third if configured is None else min(configured, third)

    def deadline(self, timer: Timer) -> float | None:
        return self._deadlines.get(timer)

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def handle(self, event: Event, now: float) -> Step:
        step = transition(self.state, event)
        if event in (Event.MANUAL_START, Event.MANUAL_START_PASSIVE):
            self.passive = event is Event.MANUAL_START_PASSIVE
        for action in step.actions:
            if action in _TIMER_ACTIONS:
                self._run(action, now)
        previous, self.state = self.state, step.state
        if self.state is not State.ESTABLISHED:
            self._established_at = None
        elif previous is not State.ESTABLISHED:
            self._established_at = now
        external = tuple(a for a in step.actions if a not in _TIMER_ACTIONS)
        return Step(event, previous, self.state, external)

    def on_timer(self, now: float) -> list[Step]:
        """Fire every timer due at `now`, earliest first."""
        steps: list[Step] = []
        while True:
            due = [t for t, at in self._deadlines.items() if at <= now]
            if not due:
                return steps
            timer = min(due, key=self._deadlines.__getitem__)
            del self._deadlines[timer]
            steps.append(self.handle(self._expiry_event(timer), now))

    def _expiry_event(self, timer: Timer) -> Event:
        if timer is Timer.IDLE_HOLD:
            return Event.AUTOMATIC_START_PASSIVE if self.passive else Event.AUTOMATIC_START
        return _EXPIRY[timer]

    def _set(self, timer: Timer, deadline: float | None) -> None:
        if deadline is None:
            self._deadlines.pop(timer, None)
        else:
            self._deadlines[timer] = deadline

    def _jittered(self, seconds: float) -> float:
        return seconds * (0.75 + 0.25 * self._jitter())

    def _run(self, action: Action, now: float) -> None:
        match action:
            case Action.START_CONNECT_RETRY:
                self._deadlines[Timer.CONNECT_RETRY] = now + self._jittered(
                    self._timers.connect_retry_time
                )
            case Action.START_HOLD_LARGE:
                self._deadlines[Timer.HOLD] = now + LARGE_HOLD_TIME
            case Action.START_NEGOTIATED_TIMERS:
                self._run(Action.RESTART_HOLD, now)
                self._run(Action.RESTART_KEEPALIVE, now)
            case Action.RESTART_HOLD:
                # A negotiated hold time of 0 runs neither timer (RFC 4271 §4.4).
                self._set(Timer.HOLD, now + self.hold_time if self.hold_time else None)
            case Action.RESTART_KEEPALIVE:
                interval = self.keepalive_time
                self._set(Timer.KEEPALIVE, now + self._jittered(interval) if interval else None)
            case Action.STOP_TIMERS:
                self._deadlines.clear()
            case Action.START_IDLE_HOLD:
                up_since = self._established_at
                if up_since is not None and now - up_since >= self._timers.stable_time:
                    # The session was stable: the peer is fine, the next restart comes quickly.
                    self._idle_backoff.reset()
                delay = self._idle_backoff.next_delay(jitter=self._jitter())
                if delay is not None:
                    self._deadlines[Timer.IDLE_HOLD] = now + delay
