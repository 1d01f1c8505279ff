"""Token buckets, one per key: how often something may happen for each address (or object),
as the kubelet's event recorder limits Events per object.

Pure: time is passed in. A bucket holds at most `burst` tokens, gains `rate` per second, and
each allowed occurrence takes one. Memory is bounded: at most `max_keys` buckets are kept; when
a new key needs room, the bucket untouched for longest goes (it would have been refilled the
soonest), so a flood of distinct keys cannot grow the table.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Limit:
    burst: float
    """Occurrences allowed at once (and after a long quiet time)."""
    rate: float
    """Occurrences allowed per second, in the long run."""

    def __post_init__(self) -> None:
        if self.burst < 1 or self.rate < 0:
            raise ValueError(f"a limit needs burst >= 1 and rate >= 0, got {self}")


class PerKey(Generic[K]):
    def __init__(self, limit: Limit, *, max_keys: int = 4096) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.limit = limit
        self._max_keys = max_keys
        self._buckets: OrderedDict[K, tuple[float, float]] = OrderedDict()
        """Key -> (tokens, when they were counted), least recently used first."""

    def allow(self, key: K, now: float) -> bool:
        """Take a token for `key` at time `now` if one is there."""
        tokens, then = self._buckets.pop(key, (self.limit.burst, now))
        tokens = min(self.limit.burst, tokens + max(0.0, now - then) * self.limit.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
