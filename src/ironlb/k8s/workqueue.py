"""A work queue of object keys, as level-triggered controllers use them (client-go's semantics).

- A key waiting in the queue is there once, however often it is added (events coalesce).
- A key is handed to one worker at a time; added again while being processed, it is queued
  again when that worker calls `done`, so the newest state is always reconciled.
- `add_after` requeues later (retries with backoff); an earlier `add` wins over a pending delay.
- `close()` drops what is waiting and makes `get` return None: workers finish the key in hand
  and stop (`active` counts those), so shutdown never abandons a half-written change. Keys not
  yet started need nothing: whoever leads next reconciles everything from the API.
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
        self._idle = asyncio.Event()  # set while no key is in a worker's hands
        self._idle.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def active(self) -> int:
        """Keys handed to workers and not yet `done`."""
        return len(self._active)

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
        """The next key to process (mark it `done` afterwards), or None once closed."""
        while not self._queued:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        key, _ = self._queued.popitem(last=False)
        self._active.add(key)
        self._idle.clear()
        return key

    async def idle(self) -> None:
        """Return once no key is being processed."""
        await self._idle.wait()

    def done(self, key: K) -> None:
        self._active.discard(key)
        if not self._active:
            self._idle.set()
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        self._closed = True
        self._queued.clear()
        self._dirty.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._ready.set()
