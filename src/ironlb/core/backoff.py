"""The one retry policy of ironlb, as data.

Every API call that may be retried and every reconnect (watch, BGP session, membership join)
asks a `Backoff` how long to wait. The policy is pure: the caller passes randomness in (jitter)
and does the sleeping, so tests drive it without a clock.

Invariants: delays never exceed `cap`; a server-sent Retry-After wins when it is longer than our
own delay (but is still capped), so we never hammer an API server that asked us to slow down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# HTTP statuses worth retrying: the request may succeed unchanged later.
RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Policy:
    """Exponential backoff with full jitter, capped."""

    initial: float = 0.1
    """First delay in seconds."""
    factor: float = 2.0
    """Multiplier between attempts."""
    cap: float = 10.0
    """Longest delay in seconds."""
    max_attempts: int | None = None
    """Give up after this many failed attempts (None: retry for ever)."""

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.cap < self.initial:
            raise ValueError(f"invalid backoff policy {self!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")


@dataclass(slots=True)
class Backoff:
    """Attempt counter for one retried operation. `reset()` after a success."""

    policy: Policy = field(default_factory=Policy)
    attempts: int = 0

    def next_delay(self, jitter: float, retry_after: float | None = None) -> float | None:
        """Delay before the next attempt, or None when the policy says give up.

        `jitter` is a number in [0, 1] supplied by the caller (random.random() in production,
        fixed in tests); the delay is spread over [base/2, base] so that many clients restarting
        together do not retry in lockstep.
        """
        if not 0.0 <= jitter <= 1.0:
            raise ValueError("jitter must be in [0, 1]")
        self.attempts += 1
        if self.policy.max_attempts is not None and self.attempts > self.policy.max_attempts:
            return None
        base = min(self.policy.cap, self.policy.initial * self.policy.factor ** (self.attempts - 1))
        delay = base * (0.5 + 0.5 * jitter)
        if retry_after is not None and retry_after > delay:
            delay = min(retry_after, self.policy.cap)
        return delay

    def next_wait(self, jitter: float) -> float:
        """`next_delay` for a policy that never gives up (no `max_attempts`)."""
        if self.policy.max_attempts is not None:
            raise ValueError("next_wait is for policies without max_attempts")
        delay = self.next_delay(jitter)
        assert delay is not None
        return delay

    def reset(self) -> None:
        self.attempts = 0


# The named policies. Who retries is part of each: a single API request is retried by the
# client (`API_CALL`), so its callers never loop around it; a caller that retries a whole pass
# (a status writer, a controller's start-up step) uses `RECONCILE` with calls of its own that
# fail fast, never a fixed sleep.

API_CALL = Policy(initial=0.1, cap=5.0, max_attempts=6)
"""One API request (the client's own retries): a few, then the error goes to the caller."""
WATCH = Policy(initial=0.2, cap=10.0)
"""A list+watch reconnecting, for ever."""
RECONCILE = Policy(initial=0.5, cap=10.0)
"""A whole pass (status writers, start-up steps) tried again, for ever."""
BGP_IDLE_HOLD = Policy(initial=1.0, factor=2.0, cap=60.0)
"""A BGP session's automatic restarts (RFC 4271 IdleHoldTimer)."""


def is_retriable_status(status: int) -> bool:
    return status in RETRIABLE_STATUSES
