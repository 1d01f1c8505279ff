"""Leader election over one Lease: the decision, without I/O or clocks.

Like client-go, a candidate never compares its clock with the holder's timestamps (clocks on
different nodes disagree): it records *when it last saw the Lease record change*, on its own
monotonic clock, and considers the lease expired only after `lease_duration` seconds without a
change. A change is a change of *any* field of the record, renewTime included (a renewal moves
nothing else): comparing fewer fields makes a follower take over a lease its holder keeps
renewing. The holder renews well before that; an update that loses a race (resourceVersion
conflict) is simply retried after observing again, so two candidates can never both win.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.Enum):
    WAIT = "wait"  # someone else holds a live lease
    ACQUIRE = "acquire"  # no holder, or the holder let it expire: take it over
    RENEW = "renew"  # we hold it: extend it


@dataclass(frozen=True, slots=True)
class Record:
    """A Lease's spec: the whole leader-election record, so that a renewal is a change."""

    holder: str | None
    duration_seconds: int
    transitions: int
    acquire_time: str | None = None
    renew_time: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    record: Record | None  # None: there is no Lease object yet
    changed_at: float  # our monotonic time when `record` last changed


def observe(previous: Observation | None, record: Record | None, now: float) -> Observation:
    """Fold a freshly read record into what we know; the clock only moves on change."""
    if previous is not None and previous.record == record:
        return previous
    return Observation(record, now)


def decide(identity: str, seen: Observation, now: float, lease_duration: float) -> Action:
    record = seen.record
    if record is None or not record.holder:
        return Action.ACQUIRE
    if record.holder == identity:
        return Action.RENEW
    # Trust the holder's own duration if it asked for longer than our default.
    ttl = max(lease_duration, float(record.duration_seconds))
    return Action.ACQUIRE if now - seen.changed_at >= ttl else Action.WAIT


def next_record(
    identity: str, current: Record | None, lease_duration: float, *, stamp: str
) -> Record:
    """The record we write when acquiring or renewing; `stamp` is the writer's wall-clock time
    (renewTime, and acquireTime when the holder changes), opaque to the decision."""
    transitions = 0 if current is None else current.transitions
    acquired = current.acquire_time if current is not None else None
    if current is None or current.holder != identity:
        acquired = stamp
        if current is not None:
            transitions += 1
    return Record(identity, int(lease_duration), transitions, acquired, stamp)
