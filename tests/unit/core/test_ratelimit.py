"""Per-key token buckets with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import ratelimit


def test_a_burst_then_the_rate() -> None:
    limiter: ratelimit.PerKey[str] = ratelimit.PerKey(ratelimit.Limit(burst=3, rate=0.1))
    assert [limiter.allow("a", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert not limiter.allow("a", 9.0)  # 0.9 of a token
    assert limiter.allow("a", 10.0)
    assert not limiter.allow("a", 10.0)


def test_keys_have_their_own_buckets() -> None:
    limiter: ratelimit.PerKey[str] = ratelimit.PerKey(ratelimit.Limit(burst=1, rate=0.0))
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 1.0)
    assert limiter.allow("b", 1.0)


def test_a_quiet_key_refills_to_the_burst_only() -> None:
    limiter: ratelimit.PerKey[str] = ratelimit.PerKey(ratelimit.Limit(burst=2, rate=1.0))
    assert limiter.allow("a", 0.0)
    assert limiter.allow("a", 0.0)
    allowed = [limiter.allow("a", 1000.0) for _ in range(4)]
    assert allowed == [True, True, False, False]


def test_the_table_is_bounded_and_forgets_the_least_recent() -> None:
    limiter: ratelimit.PerKey[int] = ratelimit.PerKey(ratelimit.Limit(1, 0.0), max_keys=3)
    for key in range(100):
        assert limiter.allow(key, float(key))
    assert len(limiter) == 3
    assert not limiter.allow(99, 200.0)  # remembered: spent
    assert limiter.allow(0, 200.0)  # forgotten: a fresh bucket


def test_a_clock_going_backwards_grants_nothing() -> None:
    limiter: ratelimit.PerKey[str] = ratelimit.PerKey(ratelimit.Limit(1, 1.0))
    assert limiter.allow("a", 10.0)
    assert not limiter.allow("a", 5.0)


@pytest.mark.parametrize("limit", [(0.5, 1.0), (1.0, -1.0)])
def test_nonsense_limits_are_refused(limit: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        ratelimit.Limit(*limit)


@given(
    burst=st.integers(1, 10),
    rate=st.floats(0.0, 5.0),
    times=st.lists(st.floats(0.0, 100.0), max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    burst: int, rate: float, times: list[float]
) -> None:
    limiter: ratelimit.PerKey[str] = ratelimit.PerKey(ratelimit.Limit(burst, rate))
    times.sort()
    allowed = sum(limiter.allow("k", t) for t in times)
    span = (times[-1] - times[0]) if times else 0.0
    assert allowed <= burst + rate * span + 1e-9
