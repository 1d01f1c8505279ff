"""The cpvip bgp-mode core: when the VIP's host route is advertised and when the VIP is on the
node, with an injected clock (every transition of its table)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.cpvip import advertise, election
from ironlb.cpvip.advertise import Input, State


def healthy(a: advertise.Advertiser, now: float = 0.0) -> advertise.Decision:
    a.checked(now, True)
    return a.checked(now + 0.15, True)


def test_table_is_total() -> None:
    assert set(advertise.TABLE) == {(s, i) for s in State for i in Input}


def test_nothing_before_rise_good_checks_then_address_and_route() -> None:
    a = advertise.Advertiser(rise=2, fall=2, drain=1.0)
    d = a.checked(0.0, True)
    assert (d.advertise, d.address, d.health) == (False, False, election.Health.UNKNOWN)
    d = a.checked(0.15, True)
    assert (d.advertise, d.address, d.health) == (True, True, election.Health.UP)
    assert d.transitions == 1
    assert a.next_deadline() is None


def test_one_failed_check_withdraws_nothing_fall_failed_ones_withdraw_and_drain() -> None:
    a = advertise.Advertiser(rise=2, fall=2, drain=1.0)
    healthy(a)
    assert a.checked(1.0, False).advertise
    d = a.checked(1.15, False)
    assert (d.state, d.advertise, d.address) == (State.DRAINING, False, True)
    assert a.next_deadline() == pytest.approx(2.15)
    # The address stays until the drain time is over, and only then goes.
    assert a.tick(2.1).address
    assert a.checked(2.12, False).address
    d = a.tick(2.15)
    assert (d.state, d.advertise, d.address) == (State.WITHDRAWN, False, False)
    assert a.next_deadline() is None
    assert d.transitions == 2


def test_healthy_again_while_draining_advertises_at_once() -> None:
    a = advertise.Advertiser(rise=1, fall=1, drain=5.0)
    a.checked(0.0, True)
    assert a.checked(1.0, False).state is State.DRAINING
    d = a.checked(1.1, True)
    assert (d.state, d.advertise, d.address) == (State.ADVERTISED, True, True)
    assert a.next_deadline() is None
    assert a.tick(10.0).advertise


def test_never_healthy_never_advertises() -> None:
    a = advertise.Advertiser(rise=2, fall=2)
    for i in range(20):
        d = a.checked(i * 0.15, False)
        assert not d.advertise
        assert not d.address
    assert d.health is election.Health.DOWN


def test_stop_withdraws_at_once_keeps_the_address_for_the_drain_then_stops() -> None:
    a = advertise.Advertiser(drain=1.0)
    healthy(a)
    d = a.stop(3.0)
    assert (d.state, d.advertise, d.address, d.stopped) == (State.STOPPING, False, True, False)
    # Health news cannot advertise again once stopping.
    assert not a.checked(3.1, True).advertise
    assert not a.tick(3.9).stopped
    d = a.tick(4.0)
    assert (d.stopped, d.address) == (True, False)


def test_stop_while_draining_keeps_the_drain_deadline() -> None:
    a = advertise.Advertiser(rise=1, fall=1, drain=1.0)
    a.checked(0.0, True)
    a.checked(1.0, False)
    assert a.stop(1.5).state is State.STOPPING
    assert a.next_deadline() == pytest.approx(2.0)
    assert a.tick(2.0).stopped


def test_stop_without_the_address_stops_at_once_and_zero_drain_needs_no_tick() -> None:
    assert advertise.Advertiser().stop(0.0).stopped
    a = advertise.Advertiser(rise=1, fall=1, drain=0.0)
    a.checked(0.0, True)
    d = a.checked(1.0, False)
    assert (d.state, d.address) == (State.WITHDRAWN, False)
    a.checked(2.0, True)
    assert a.stop(3.0).stopped


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="rise and fall"):
        advertise.Advertiser(rise=0)
    with pytest.raises(ValueError, match="drain"):
        advertise.Advertiser(drain=-1.0)
    with pytest.raises(election.IllegalTransition):
        advertise.next_state(State.WITHDRAWN, "nonsense")  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(st.sampled_from(["ok", "fail", "tick", "stop"]), st.floats(0.0, 0.7)),
        max_size=60,
    ),
    st.integers(1, 3),
    st.integers(1, 3),
    st.floats(0.0, 2.0),
)
def test_invariants(steps: list[tuple[str, float]], rise: int, fall: int, drain: float) -> None:
    """A route is advertised only with the address on the node, only while the apiserver is UP
    and not stopping; the address never outlives a withdrawal by more than the drain time."""
    a = advertise.Advertiser(rise=rise, fall=fall, drain=drain)
    now, stopped_at, withdrawn_at = 0.0, None, None
    for kind, dt in steps:
        now += dt
        if kind == "ok":
            d = a.checked(now, True)
        elif kind == "fail":
            d = a.checked(now, False)
        elif kind == "stop":
            d = a.stop(now)
            stopped_at = now if stopped_at is None else stopped_at
        else:
            d = a.tick(now)
        if d.advertise:
            assert d.address
            assert d.health is election.Health.UP
            assert stopped_at is None
            withdrawn_at = None
        elif withdrawn_at is None:
            withdrawn_at = now
        deadline = a.next_deadline()
        if d.address and not d.advertise:
            assert deadline is not None
            assert deadline <= withdrawn_at + drain + 1e-9
        if deadline is not None and now >= deadline:
            assert not a.tick(now).address
