"""A work queue of object keys, as level-triggered controllers use them (client-go's semantics).

- A key waiting in the queue is there once, however often it is added (events coalesce).
- A key is handed to one worker at a time; added again while being processed, it is queued
  again when that worker calls `done`, so the newest state is always reconciled.
- `add_after` requeues later (retries with backoff); an earlier `add` wins over a pending delay.
- `close()` makes `get` return None once the queue is empty, so workers finish their current
  key and stop: shutdown never abandons a half-written change.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")


class WorkQueue(Generic[K]):
    def __init__(self) -> None:
        self._queued: OrderedDict[K, None] = OrderedDict()
        self._active: set[K] = set()
        self._dirty: set[K] = set()  # added again while active
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._ready = asyncio.Event()  # set whenever a waiter may find work (or the end)
        self._closed = False

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def closed(self) -> bool:
        return self._closed

    def add(self, key: K) -> None:
        if self._closed:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued[key] = None
            self._ready.set()

    def add_after(self, key: K, delay: float) -> None:
        if self._closed or key in self._queued or key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K | None:
        """The next key to process (mark it `done` afterwards), or None once closed and empty."""
        while not self._queued:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        key, _ = self._queued.popitem(last=False)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._ready.set()
