"""Member states and every transition between them, in one table.

A member's state changes only through `next_state`: news heard from the network (an update
piggy-backed on a packet, or an ACK, which is news that the member is alive) or one of our own
timers. News carries the member's incarnation, a counter only the member itself increases (to
refute a suspicion, or to publish new meta); the guard of a rule compares it with the one we know,
so stale news can never undo fresh news. Pairs missing from the table leave the member as it is:
gossip may be arbitrarily late, so "not applicable" is normal, not an error.

UNCONFIRMED is where a peer seeded from the Kubernetes API starts: it is probed, but it is not an
election candidate (nor part of the monitoring ring) until something proves it runs, so a node
whose speaker never started cannot win addresses. ALIVE and SUSPECT members are candidates: a
suspicion is not a failure, and moving addresses on one lost packet would be worse than waiting
out the suspicion timeout.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, TypeAlias


class MemberState(enum.Enum):
    UNCONFIRMED = "unconfirmed"
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"

    @property
    def is_live(self) -> bool:
        """Counts as running: an election candidate, and probed by its ring predecessor."""
        return self in (MemberState.ALIVE, MemberState.SUSPECT)


class Timer(enum.Enum):
    PROBE_FAILED = "probe_failed"
    """Our probe got no ACK, direct or relayed, within its protocol period."""
    SUSPICION_EXPIRED = "suspicion_expired"
    """The member did not refute our suspicion in time."""


Input: TypeAlias = MemberState | Timer
"""News that a member is in a state (at an incarnation), or one of our timers firing."""


class Guard(enum.Enum):
    ANY = "any"
    NEWER = "incarnation > known"
    NOT_OLDER = "incarnation >= known"


_U, _A, _S, _D, _L = (
    MemberState.UNCONFIRMED,
    MemberState.ALIVE,
    MemberState.SUSPECT,
    MemberState.DEAD,
    MemberState.LEFT,
)

TRANSITIONS: Final[Mapping[tuple[MemberState, Input], tuple[Guard, MemberState]]] = {
    # (state, input):              (guard, next state)
    (_U, _A): (Guard.ANY, _A),  # first sign of life: confirmed
    (_U, _S): (Guard.NOT_OLDER, _S),
    (_U, _D): (Guard.NOT_OLDER, _D),
    (_U, _L): (Guard.NOT_OLDER, _L),
    (_A, _A): (Guard.NEWER, _A),  # new meta
    (_A, _S): (Guard.NOT_OLDER, _S),
    (_A, _D): (Guard.NOT_OLDER, _D),
    (_A, _L): (Guard.NOT_OLDER, _L),
    (_A, Timer.PROBE_FAILED): (Guard.ANY, _S),
    (_S, _A): (Guard.NEWER, _A),  # refuted
    (_S, _S): (Guard.NEWER, _S),  # refuted and suspected again: the suspicion timer restarts
    (_S, _D): (Guard.NOT_OLDER, _D),
    (_S, _L): (Guard.NOT_OLDER, _L),
    (_S, Timer.SUSPICION_EXPIRED): (Guard.ANY, _D),
    (_D, _A): (Guard.NEWER, _A),  # back (restarted, or a partition healed) and refuted
    (_D, _L): (Guard.NOT_OLDER, _L),
    (_L, _A): (Guard.NEWER, _A),  # rejoined
}


def next_state(
    state: MemberState, known_incarnation: int, event: Input, incarnation: int
) -> MemberState | None:
    """The state after `event` about a member at `incarnation`, or None if nothing changes."""
    rule = TRANSITIONS.get((state, event))
    if rule is None:
        return None
    guard, target = rule
    if guard is Guard.NEWER and incarnation <= known_incarnation:
        return None
    if guard is Guard.NOT_OLDER and incarnation < known_incarnation:
        return None
    return target
