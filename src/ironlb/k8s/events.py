"""Kubernetes Events (events.k8s.io/v1), recorded without ever blocking a reconcile.

`record()` only enqueues; a few workers write. The same event repeated for the same object
within `series_window` becomes one Event whose `series.count` grows (as client-go does), so a
Service that fails allocation on every retry does not spray the API server with objects. When the
queue is full the event is dropped and counted: Events are best-effort, allocations are not.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter

from ironlb.k8s import client as k8s

log = logging.getLogger(__name__)

EVENTS_DROPPED = Counter(
    "ironlb_k8s_events_dropped_total", "Events not written (queue full or API error)."
)

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class Regarding:
    """The object an Event is about."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    def as_ref(self) -> k8s.Obj:
        ref: k8s.Obj = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclass(frozen=True, slots=True)
class _Pending:
    regarding: Regarding
    type: EventType
    reason: str
    action: str
    note: str


def _microtime() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Recorder:
    def __init__(
        self,
        client: k8s.Client,
        controller: str,
        instance: str,
        *,
        queue_size: int = 10_000,
        workers: int = 4,
        series_window: float = 600.0,
        remembered: int = 4096,
    ) -> None:
        self._client = client
        self._controller = controller
        self._instance = instance
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self._workers = workers
        self._window = series_window
        self._remembered = remembered
        # (uid or ns/name, reason, note) -> (event namespace, event name, count, first seen)
        self._series: OrderedDict[tuple[str, str, str], tuple[str, str, int, float]] = OrderedDict()

    def record(
        self, regarding: Regarding, type_: EventType, reason: str, note: str, action: str = ""
    ) -> None:
        try:
            self._queue.put_nowait(
                _Pending(regarding, type_, reason, action or reason, note[:1024])
            )
        except asyncio.QueueFull:
            EVENTS_DROPPED.inc()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self._workers):
                tg.create_task(self._work())

    async def flush(self) -> None:
        """Wait until everything queued so far is written (shutdown; callers bound the wait)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            pending = await self._queue.get()
            try:
                await self._write(pending)
            except (k8s.ApiError, k8s.Unreachable) as e:
                EVENTS_DROPPED.inc()
                log.debug(
                    "event %s for %s not written: %s", pending.reason, pending.regarding.name, e
                )
            finally:
                self._queue.task_done()

    async def _write(self, p: _Pending) -> None:
        reg = p.regarding
        key = (reg.uid or f"{reg.namespace}/{reg.name}", p.reason, p.note)
        now = time.monotonic()
        known = self._series.get(key)
        namespace = reg.namespace or "default"
        if known is not None and now - known[3] < self._window:
            ns, name, count, first = known
            self._series[key] = (ns, name, count + 1, first)
            self._series.move_to_end(key)
            try:
                await self._client.patch(
                    k8s.EVENTS,
                    name,
                    {"series": {"count": count + 1, "lastObservedTime": _microtime()}},
                    ns,
                )
                return
            except k8s.NotFound:
                pass  # the Event expired meanwhile: a new one
        name = f"{reg.name}.{secrets.token_hex(8)}"
        body: k8s.Obj = {
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": _microtime(),
            "reportingController": self._controller,
            "reportingInstance": self._instance,
            "action": p.action,
            "reason": p.reason,
            "note": p.note,
            "type": p.type,
            "regarding": reg.as_ref(),
        }
        await self._client.create(k8s.EVENTS, body, namespace)
        self._series[key] = (namespace, name, 1, now)
        self._series.move_to_end(key)
        while len(self._series) > self._remembered:
            self._series.popitem(last=False)
