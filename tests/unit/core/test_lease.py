from ironlb.core import lease

A, B = "controller-a", "controller-b"


def held_by(holder: str | None, transitions: int = 0) -> lease.Record:
    return lease.Record(holder, 15, transitions)


def test_no_lease_or_no_holder_is_acquired() -> None:
    assert lease.decide(A, lease.observe(None, None, 0.0), 0.0, 15) is lease.Action.ACQUIRE
    seen = lease.observe(None, held_by(None), 0.0)
    assert lease.decide(A, seen, 0.0, 15) is lease.Action.ACQUIRE


def test_holder_renews_its_own_lease() -> None:
    seen = lease.observe(None, held_by(A), 0.0)
    assert lease.decide(A, seen, 100.0, 15) is lease.Action.RENEW


def test_live_foreign_lease_is_respected_until_it_stops_changing_for_a_whole_duration() -> None:
    seen = lease.observe(None, held_by(B), 10.0)
    assert lease.decide(A, seen, 24.9, 15) is lease.Action.WAIT
    # The holder renewed (the record changed): the clock starts again.
    renewed = lease.observe(seen, lease.Record(B, 15, 1), 20.0)
    assert lease.decide(A, renewed, 30.0, 15) is lease.Action.WAIT
    assert lease.decide(A, renewed, 35.0, 15) is lease.Action.ACQUIRE


def test_observing_an_unchanged_record_does_not_reset_the_clock() -> None:
    seen = lease.observe(None, held_by(B), 10.0)
    again = lease.observe(seen, held_by(B), 20.0)
    assert again.changed_at == 10.0
    assert lease.decide(A, again, 25.0, 15) is lease.Action.ACQUIRE


def test_a_longer_duration_asked_by_the_holder_wins() -> None:
    seen = lease.observe(None, lease.Record(B, 60, 0), 0.0)
    assert lease.decide(A, seen, 30.0, 15) is lease.Action.WAIT
    assert lease.decide(A, seen, 60.0, 15) is lease.Action.ACQUIRE


def test_transitions_count_changes_of_holder_only() -> None:
    assert lease.next_record(A, None, 15, stamp="t") == lease.Record(A, 15, 0, "t", "t")
    assert lease.next_record(A, held_by(A, 3), 15, stamp="t").transitions == 3
    assert lease.next_record(A, held_by(B, 3), 15, stamp="t").transitions == 4


def test_a_change_of_renew_time_alone_restarts_the_clock() -> None:
    seen = lease.observe(None, lease.Record(B, 15, 0, "t0", "t0"), 0.0)
    renewed = lease.observe(seen, lease.Record(B, 15, 0, "t0", "t2"), 2.0)
    assert renewed.changed_at == 2.0
    assert lease.decide(A, renewed, 16.0, 15) is lease.Action.WAIT


def test_a_holder_renewing_every_two_seconds_is_never_taken_over() -> None:
    """Renewals change only renewTime (holder, duration and transitions stay the same): each
    one must still count as a change, as it does for client-go, or the follower takes a live
    lease after one duration (issue 8: transitions climbed every 15 s)."""
    record: lease.Record | None = None
    seen: lease.Observation | None = None
    acquired = []
    for tick in range(60):
        now = float(tick)
        if tick % 2 == 0:  # the holder renews every 2 s, writing the wall-clock time
            record = lease.next_record(A, record, 15, stamp=f"2026-01-01T00:00:{tick:02d}.000000Z")
        seen = lease.observe(seen, record, now)  # the follower reads every second
        if lease.decide(B, seen, now, 15) is not lease.Action.WAIT:
            acquired.append(now)
    assert acquired == []
    assert record is not None
    assert record.transitions == 0


def test_the_follower_takes_over_one_duration_after_the_last_renewal() -> None:
    record = lease.next_record(A, None, 15, stamp="t0")
    seen = lease.observe(None, record, 0.0)
    record = lease.next_record(A, record, 15, stamp="t2")
    seen = lease.observe(seen, record, 2.0)
    assert lease.decide(B, lease.observe(seen, record, 16.9), 16.9, 15) is lease.Action.WAIT
    assert lease.decide(B, lease.observe(seen, record, 17.0), 17.0, 15) is lease.Action.ACQUIRE
    taken = lease.next_record(B, record, 15, stamp="t17")
    assert (taken.holder, taken.transitions, taken.acquire_time) == (B, 1, "t17")
    # A renewal keeps the acquire time; only renewTime moves.
    renewed = lease.next_record(B, taken, 15, stamp="t19")
    assert (renewed.acquire_time, renewed.renew_time) == ("t17", "t19")
