import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import backoff


def test_grows_exponentially_then_caps() -> None:
    b = backoff.Backoff(backoff.Policy(initial=0.1, factor=2, cap=1.0))
    delays = [b.next_delay(jitter=1.0) for _ in range(6)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_jitter_spreads_between_half_and_full() -> None:
    b = backoff.Backoff(backoff.Policy(initial=1.0, cap=8.0))
    assert b.next_delay(jitter=0.0) == pytest.approx(0.5)


def test_retry_after_wins_when_longer_but_is_capped() -> None:
    b = backoff.Backoff(backoff.Policy(initial=0.1, cap=5.0))
    assert b.next_delay(jitter=1.0, retry_after=3.0) == pytest.approx(3.0)
    assert b.next_delay(jitter=1.0, retry_after=60.0) == pytest.approx(5.0)


def test_gives_up_after_max_attempts_and_reset_restarts() -> None:
    b = backoff.Backoff(backoff.Policy(max_attempts=2))
    assert b.next_delay(jitter=0.5) is not None
    assert b.next_delay(jitter=0.5) is not None
    assert b.next_delay(jitter=0.5) is None
    b.reset()
    assert b.next_delay(jitter=0.5) is not None


def test_rejects_bad_policy_and_jitter() -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        backoff.Policy(initial=2.0, cap=1.0)
    with pytest.raises(ValueError, match="jitter"):
        backoff.Backoff().next_delay(jitter=1.5)


@given(st.integers(min_value=1, max_value=60), st.floats(min_value=0, max_value=1))
def test_never_exceeds_cap(n: int, jitter: float) -> None:
    b = backoff.Backoff(backoff.Policy(initial=0.05, factor=3, cap=2.0))
    for _ in range(n):
        d = b.next_delay(jitter=jitter, retry_after=jitter * 100)
        assert d is not None
        assert 0 < d <= 2.0


def test_retriable_statuses() -> None:
    assert backoff.is_retriable_status(503)
    assert backoff.is_retriable_status(429)
    assert not backoff.is_retriable_status(404)
    assert not backoff.is_retriable_status(410)


def test_named_policies_say_who_gives_up() -> None:
    # A single request gives up (its caller decides); watches and whole passes never do.
    api = backoff.Backoff(backoff.API_CALL)
    delays = [api.next_delay(1.0) for _ in range(7)]
    assert delays[-1] is None
    assert all(d is not None and d <= backoff.API_CALL.cap for d in delays[:-1])
    for policy in (backoff.WATCH, backoff.RECONCILE, backoff.BGP_IDLE_HOLD):
        forever = backoff.Backoff(policy)
        assert all(forever.next_delay(1.0) == min(policy.cap, d) for d in _bases(policy, 30))


def _bases(policy: backoff.Policy, n: int) -> list[float]:
    return [policy.initial * policy.factor**i for i in range(n)]


def test_next_wait_is_for_policies_that_never_give_up() -> None:
    forever = backoff.Backoff(backoff.RECONCILE)
    assert [forever.next_wait(1.0) for _ in range(3)] == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="max_attempts"):
        backoff.Backoff(backoff.API_CALL).next_wait(1.0)
