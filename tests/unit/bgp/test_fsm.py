from ipaddress import IPv4Address

import pytest

from ironlb.bgp import errors, fsm
from ironlb.core import backoff

S, E, A = fsm.State, fsm.Event, fsm.Action
CONNECTED = {S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED}
STARTS = {E.MANUAL_START, E.AUTOMATIC_START, E.MANUAL_START_PASSIVE, E.AUTOMATIC_START_PASSIVE}
NOTIFY = {A.NOTIFY_ERROR, A.NOTIFY_FSM_ERROR, A.NOTIFY_CEASE, A.NOTIFY_HOLD_TIMER_EXPIRED}
ALL_PAIRS = [(state, event) for state in S for event in E]


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda x: x.name)
def test_every_pair_follows_the_rfc_invariants(state: fsm.State, event: fsm.Event) -> None:
    if (state, event) in fsm.ILLEGAL:
        with pytest.raises(fsm.IllegalTransition):
            fsm.transition(state, event)
        return
    step = fsm.transition(state, event)
    actions = step.actions
    if NOTIFY & set(actions):
        # A NOTIFICATION needs a connection, and is followed by closing it.
        assert state in CONNECTED
        assert A.DROP_TCP in actions
        assert actions.index(A.DROP_TCP) > max(actions.index(n) for n in NOTIFY & set(actions))
    if state in CONNECTED and step.state not in CONNECTED:
        assert A.DROP_TCP in actions
    if event in STARTS:
        assert (step.state is state) == (state is not S.IDLE)
    if step.state is S.IDLE and state is not S.IDLE:
        # Automatic restarts follow every drop but the ones asked for.
        collision = event is E.OPEN_COLLISION_DUMP and state in CONNECTED
        deliberate = event is E.MANUAL_STOP or collision
        assert (A.START_IDLE_HOLD in actions) is not deliberate
    if step.state is S.IDLE:
        assert A.INITIATE_TCP not in actions
        assert A.SEND_OPEN not in actions
    if event is E.MANUAL_STOP:
        assert step.state is S.IDLE
        assert A.START_IDLE_HOLD not in actions


@pytest.mark.parametrize(
    ("state", "event", "next_state", "actions"),
    [
        (S.IDLE, E.MANUAL_START, S.CONNECT, (A.STOP_TIMERS, A.START_CONNECT_RETRY, A.INITIATE_TCP)),
        (S.IDLE, E.MANUAL_START_PASSIVE, S.ACTIVE, (A.STOP_TIMERS, A.START_CONNECT_RETRY)),
        (S.IDLE, E.TCP_CONNECTION_CONFIRMED, S.IDLE, (A.DROP_TCP,)),
        (S.IDLE, E.KEEPALIVE_MSG, S.IDLE, ()),
        (
            S.CONNECT,
            E.CONNECT_RETRY_TIMER_EXPIRES,
            S.CONNECT,
            (A.DROP_TCP, A.START_CONNECT_RETRY, A.INITIATE_TCP),
        ),
        (
            S.CONNECT,
            E.TCP_CONNECTION_CONFIRMED,
            S.OPEN_SENT,
            (A.STOP_TIMERS, A.SEND_OPEN, A.START_HOLD_LARGE),
        ),
        (S.CONNECT, E.HOLD_TIMER_EXPIRES, S.IDLE, (A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD)),
        (
            S.ACTIVE,
            E.CONNECT_RETRY_TIMER_EXPIRES,
            S.CONNECT,
            (A.START_CONNECT_RETRY, A.INITIATE_TCP),
        ),
        (
            S.ACTIVE,
            E.TCP_CONNECTION_CONFIRMED,
            S.OPEN_SENT,
            (A.STOP_TIMERS, A.SEND_OPEN, A.START_HOLD_LARGE),
        ),
        (S.OPEN_SENT, E.BGP_OPEN, S.OPEN_CONFIRM, (A.SEND_KEEPALIVE, A.START_NEGOTIATED_TIMERS)),
        (
            S.OPEN_SENT,
            E.TCP_CONNECTION_FAILS,
            S.ACTIVE,
            (A.STOP_TIMERS, A.DROP_TCP, A.START_CONNECT_RETRY),
        ),
        (
            S.OPEN_SENT,
            E.BGP_OPEN_MSG_ERR,
            S.IDLE,
            (A.NOTIFY_ERROR, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (
            S.OPEN_SENT,
            E.HOLD_TIMER_EXPIRES,
            S.IDLE,
            (A.NOTIFY_HOLD_TIMER_EXPIRED, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (
            S.OPEN_SENT,
            E.UPDATE_MSG,
            S.IDLE,
            (A.NOTIFY_FSM_ERROR, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (S.OPEN_SENT, E.NOTIF_MSG, S.IDLE, (A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD)),
        (S.OPEN_SENT, E.MANUAL_STOP, S.IDLE, (A.NOTIFY_CEASE, A.STOP_TIMERS, A.DROP_TCP)),
        (S.OPEN_CONFIRM, E.KEEPALIVE_MSG, S.ESTABLISHED, (A.RESTART_HOLD,)),
        (
            S.OPEN_CONFIRM,
            E.KEEPALIVE_TIMER_EXPIRES,
            S.OPEN_CONFIRM,
            (A.SEND_KEEPALIVE, A.RESTART_KEEPALIVE),
        ),
        (
            S.OPEN_CONFIRM,
            E.BGP_OPEN,
            S.IDLE,
            (A.NOTIFY_FSM_ERROR, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (
            S.OPEN_CONFIRM,
            E.OPEN_COLLISION_DUMP,
            S.IDLE,
            (A.NOTIFY_CEASE, A.STOP_TIMERS, A.DROP_TCP),
        ),
        (S.ESTABLISHED, E.UPDATE_MSG, S.ESTABLISHED, (A.RESTART_HOLD,)),
        (S.ESTABLISHED, E.ROUTE_REFRESH_MSG, S.ESTABLISHED, (A.RESTART_HOLD,)),
        (
            S.ESTABLISHED,
            E.KEEPALIVE_TIMER_EXPIRES,
            S.ESTABLISHED,
            (A.SEND_KEEPALIVE, A.RESTART_KEEPALIVE),
        ),
        (
            S.ESTABLISHED,
            E.UPDATE_MSG_ERR,
            S.IDLE,
            (A.NOTIFY_ERROR, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (
            S.ESTABLISHED,
            E.BGP_HEADER_ERR,
            S.IDLE,
            (A.NOTIFY_ERROR, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (
            S.ESTABLISHED,
            E.BGP_OPEN,
            S.IDLE,
            (A.NOTIFY_FSM_ERROR, A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
        (
            S.ESTABLISHED,
            E.TCP_CONNECTION_FAILS,
            S.IDLE,
            (A.STOP_TIMERS, A.DROP_TCP, A.START_IDLE_HOLD),
        ),
    ],
)
def test_rfc4271_rows(
    state: fsm.State, event: fsm.Event, next_state: fsm.State, actions: tuple[fsm.Action, ...]
) -> None:
    assert fsm.transition(state, event) == fsm.Transition(next_state, actions)


def test_table_only_names_real_states_and_events() -> None:
    assert set(fsm.ANY_OTHER) == set(S)
    assert all(isinstance(t, fsm.Transition) for t in fsm.TABLE.values())
    assert not fsm.ILLEGAL & set(fsm.TABLE)


def test_fsm_errors_name_the_unexpected_message() -> None:
    error = fsm.fsm_error(S.OPEN_CONFIRM, 2)
    assert (error.code, error.subcode, error.data) == (
        errors.ErrorCode.FSM,
        errors.FsmSubcode.UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM,
        b"\x02",
    )
    assert fsm.fsm_error(S.ESTABLISHED, None).subcode == errors.FsmSubcode.UNSPECIFIED


def test_collision_keeps_the_connection_of_the_higher_identifier() -> None:
    low, high = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.200")
    assert fsm.keep_locally_initiated(high, low)
    assert not fsm.keep_locally_initiated(low, high)


class TestTimers:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"hold_time": 2}, "hold time 2"),
            ({"hold_time": 70000}, "hold time"),
            ({"hold_time": 9, "keepalive_time": 10}, "keepalive time 10"),
            ({"hold_time": 9, "keepalive_time": 0}, "keepalive time 0"),
            ({"hold_time": 0, "keepalive_time": 3}, "keepalive time 3"),
            ({"connect_retry_time": 0}, "connect retry"),
            ({"stable_time": -1}, "stable time"),
        ],
    )
    def test_invalid(self, kwargs: dict[str, int], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            fsm.Timers(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("ours", "keepalive", "theirs", "hold", "interval"),
        [
            (90, None, 180, 90, 30),
            (90, None, 9, 9, 3),
            (90, 10, 180, 90, 10),
            (90, 30, 9, 9, 3),
            (90, None, 0, 0, 0),
            (0, 0, 90, 0, 0),
            (3, None, 3, 3, 1),
        ],
    )
    def test_negotiation(
        self, ours: int, keepalive: int | None, theirs: int, hold: int, interval: int
    ) -> None:
        machine = fsm.Fsm(fsm.Timers(hold_time=ours, keepalive_time=keepalive), lambda: 0.5)
        machine.negotiate(theirs)
        assert (machine.hold_time, machine.keepalive_time) == (hold, interval)

    @pytest.mark.parametrize("theirs", [1, 2])
    def test_unacceptable_hold_time(self, theirs: int) -> None:
        machine = fsm.Fsm(fsm.Timers(), lambda: 0.5)
        with pytest.raises(errors.BgpError) as caught:
            machine.negotiate(theirs)
        assert caught.value.subcode == errors.OpenSubcode.UNACCEPTABLE_HOLD_TIME


def open_session(machine: fsm.Fsm, peer_hold: int) -> None:
    machine.handle(E.MANUAL_START, 0.0)
    machine.handle(E.TCP_CONNECTION_CONFIRMED, 0.0)
    machine.negotiate(peer_hold)
    machine.handle(E.BGP_OPEN, 0.0)
    machine.handle(E.KEEPALIVE_MSG, 0.0)


def establish(machine: fsm.Fsm, now: float) -> None:
    """From Connect to Established at `now`."""
    machine.handle(E.TCP_CONNECTION_CONFIRMED, now)
    machine.negotiate(90)
    machine.handle(E.BGP_OPEN, now)
    machine.handle(E.KEEPALIVE_MSG, now)
    assert machine.state is S.ESTABLISHED


def restart_after_idle_hold(machine: fsm.Fsm, now: float) -> tuple[float, float]:
    """After a drop at `now`: fire the idle hold; returns when it fired and how long it was."""
    deadline = machine.deadline(fsm.Timer.IDLE_HOLD)
    assert deadline is not None
    (restart,) = machine.on_timer(deadline)
    assert (restart.event, restart.state) == (E.AUTOMATIC_START, S.CONNECT)
    return deadline, deadline - now


class TestClock:
    def test_connect_retry_is_jittered_and_retries_the_connection(self) -> None:
        for jitter, expected in [(0.0, 22.5), (1.0, 30.0)]:
            machine = fsm.Fsm(fsm.Timers(connect_retry_time=30), lambda j=jitter: j)
            step = machine.handle(E.MANUAL_START, 100.0)
            assert step.actions == (A.INITIATE_TCP,)
            assert machine.next_deadline() == 100.0 + expected
        assert machine.on_timer(129.9) == []
        (retry,) = machine.on_timer(130.0)
        assert retry.event is E.CONNECT_RETRY_TIMER_EXPIRES
        assert retry.actions == (A.DROP_TCP, A.INITIATE_TCP)

    def test_established_runs_hold_and_keepalive(self) -> None:
        machine = fsm.Fsm(fsm.Timers(hold_time=90), lambda: 1.0)
        open_session(machine, 90)
        assert machine.deadline(fsm.Timer.HOLD) == 90.0
        assert machine.deadline(fsm.Timer.KEEPALIVE) == 30.0
        (keepalive,) = machine.on_timer(30.0)
        assert keepalive.actions == (A.SEND_KEEPALIVE,)
        assert machine.deadline(fsm.Timer.KEEPALIVE) == 60.0
        machine.handle(E.KEEPALIVE_MSG, 50.0)
        assert machine.deadline(fsm.Timer.HOLD) == 140.0

    def test_hold_time_zero_runs_no_timers(self) -> None:
        machine = fsm.Fsm(fsm.Timers(hold_time=90), lambda: 0.5)
        open_session(machine, 0)
        assert machine.state is S.ESTABLISHED
        assert machine.next_deadline() is None

    def test_opensent_waits_four_minutes_for_the_open(self) -> None:
        machine = fsm.Fsm(fsm.Timers(), lambda: 0.5)
        machine.handle(E.MANUAL_START, 0.0)
        machine.handle(E.TCP_CONNECTION_CONFIRMED, 0.0)
        assert machine.next_deadline() == fsm.LARGE_HOLD_TIME
        (expired,) = machine.on_timer(fsm.LARGE_HOLD_TIME)
        assert expired.actions[0] is A.NOTIFY_HOLD_TIMER_EXPIRED
        assert expired.state is S.IDLE

    def test_drops_restart_after_a_growing_idle_hold(self) -> None:
        policy = backoff.Policy(initial=1.0, factor=2.0, cap=8.0)
        machine = fsm.Fsm(fsm.Timers(idle_hold=policy), lambda: 1.0)
        machine.handle(E.MANUAL_START, 0.0)
        now, waits = 0.0, []
        for _ in range(5):
            machine.handle(E.TCP_CONNECTION_FAILS, now)
            now, wait = restart_after_idle_hold(machine, now)
            waits.append(wait)
        assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]

    def test_a_session_that_drops_right_after_established_keeps_backing_off(self) -> None:
        # A peer that accepts the session and then ends it (a malformed UPDATE, a NOTIFICATION
        # after our first routes) must not be retried at the shortest interval for ever.
        policy = backoff.Policy(initial=1.0, factor=2.0, cap=60.0)
        machine = fsm.Fsm(fsm.Timers(idle_hold=policy), lambda: 1.0)
        machine.handle(E.MANUAL_START, 0.0)
        now, waits = 0.0, []
        for _ in range(6):
            establish(machine, now)
            now += 1.0
            machine.handle(E.NOTIF_MSG, now)
            now, wait = restart_after_idle_hold(machine, now)
            waits.append(wait)
        assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]

    def test_the_idle_hold_starts_over_once_a_session_was_stable(self) -> None:
        policy = backoff.Policy(initial=1.0, factor=2.0, cap=60.0)
        timers = fsm.Timers(idle_hold=policy)
        assert timers.stable_time == 30.0
        machine = fsm.Fsm(timers, lambda: 1.0)
        machine.handle(E.MANUAL_START, 0.0)
        now = 0.0
        for _ in range(3):  # backoff at 4 s
            machine.handle(E.TCP_CONNECTION_FAILS, now)
            now, _ = restart_after_idle_hold(machine, now)
        establish(machine, now)
        machine.handle(E.KEEPALIVE_MSG, now + 29.0)
        machine.handle(E.NOTIF_MSG, now + 29.9)  # not yet stable: the backoff goes on
        now, wait = restart_after_idle_hold(machine, now + 29.9)
        assert wait == 8.0
        establish(machine, now)
        for second in range(0, 30, 10):
            machine.handle(E.KEEPALIVE_MSG, now + second)
        machine.handle(E.HOLD_TIMER_EXPIRES, now + 30.0)  # stable for 30 s: starts over
        now, wait = restart_after_idle_hold(machine, now + 30.0)
        assert wait == 1.0
        # ... and grows again from there.
        machine.handle(E.TCP_CONNECTION_FAILS, now)
        assert machine.deadline(fsm.Timer.IDLE_HOLD) == now + 2.0

    def test_passive_sessions_restart_passive_and_manual_stop_stays_down(self) -> None:
        machine = fsm.Fsm(fsm.Timers(), lambda: 0.0)
        machine.handle(E.MANUAL_START_PASSIVE, 0.0)
        machine.handle(E.TCP_CONNECTION_CONFIRMED, 0.0)
        machine.handle(E.NOTIF_MSG, 0.0)
        deadline = machine.next_deadline()
        assert deadline is not None
        (restart,) = machine.on_timer(deadline)
        assert (restart.event, restart.state) == (E.AUTOMATIC_START_PASSIVE, S.ACTIVE)
        machine.handle(E.MANUAL_STOP, deadline)
        assert machine.state is S.IDLE
        assert machine.next_deadline() is None

    def test_a_second_connection_is_a_caller_bug(self) -> None:
        machine = fsm.Fsm(fsm.Timers(), lambda: 0.5)
        machine.handle(E.MANUAL_START, 0.0)
        machine.handle(E.TCP_CONNECTION_CONFIRMED, 0.0)
        with pytest.raises(fsm.IllegalTransition, match="TCP_CONNECTION_CONFIRMED in OpenSent"):
            machine.handle(E.TCP_CONNECTION_CONFIRMED, 0.0)
