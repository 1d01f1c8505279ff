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
    assert lease.next_record(A, None, 15) == lease.Record(A, 15, 0)
    assert lease.next_record(A, held_by(A, 3), 15).transitions == 3
    assert lease.next_record(A, held_by(B, 3), 15).transitions == 4
