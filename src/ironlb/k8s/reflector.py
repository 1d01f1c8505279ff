"""A reflector: one resource kept in a local cache by list -> watch -> (relist on 410).

Objects are parsed once, here, into the caller's typed models (`parse`); an object that does not
parse is kept out of the cache and recorded in `invalid` with the parser's message, so a
controller can tell "no pools" from "a pool is broken" and keep its last good configuration.

Invariants:
- `listed` is set once the first full list is in the cache; readers must wait for it before
  acting on absence (a restarted controller must not treat "not yet listed" as "deleted").
- A watch that ends or breaks resumes from the last resourceVersion seen (bookmarks keep it
  fresh); only 410 Gone forces a new list, after which the cache is replaced and every key that
  changed, appeared or vanished is reported. Nothing is reported twice for an unchanged object.
- Every retry follows `core.backoff`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Generic, TypeVar

from prometheus_client import Counter

from ironlb.core import backoff
from ironlb.k8s import client as k8s

log = logging.getLogger(__name__)
T = TypeVar("T")

RELISTS = Counter(
    "ironlb_k8s_relists_total", "Full lists of a resource (first list included).", ["resource"]
)
WATCH_RESTARTS = Counter(
    "ironlb_k8s_watch_restarts_total",
    "Watches re-established after ending or failing.",
    ["resource", "reason"],
)
PARSE_ERRORS = Counter(
    "ironlb_k8s_parse_errors_total",
    "Objects that could not be parsed into ironlb's models.",
    ["resource"],
)


def object_key(obj: k8s.Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else str(meta["name"])


class Reflector(Generic[T]):
    """Keeps `items` equal to the API server's view of one resource."""

    def __init__(
        self,
        client: k8s.Client,
        resource: k8s.Resource,
        parse: Callable[[k8s.Obj], T],
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        on_change: Callable[[str], None] | None = None,
        watch_timeout: int = 300,
        retry: backoff.Policy | None = None,
    ) -> None:
        self._client = client
        self.resource = resource
        self._parse = parse
        self._namespace = namespace
        self._selector = label_selector
        self._field_selector = field_selector
        self._on_change = on_change or (lambda _key: None)
        self._watch_timeout = watch_timeout
        self._retry = retry or backoff.WATCH
        self.items: dict[str, T] = {}
        self.invalid: dict[str, str] = {}
        self._versions: dict[str, str] = {}
        self._rv = ""
        self.listed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.resource.plural

    def _store(self, key: str, obj: k8s.Obj) -> bool:
        """Parse and store one object; True if the cache changed."""
        version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if version and self._versions.get(key) == version:
            return False
        self._versions[key] = version
        try:
            value = self._parse(obj)
        except ValueError as e:
            PARSE_ERRORS.labels(self.name).inc()
            log.warning("%s %s does not parse: %s", self.resource.kind, key, e)
            self.items.pop(key, None)
            self.invalid[key] = str(e)
            return True
        was_invalid = self.invalid.pop(key, None) is not None
        before = self.items.get(key)
        self.items[key] = value
        # A write that changed nothing the parser keeps (a pool's status counters, which the
        # controller updates as it allocates) is no change: consumers re-plan on changes.
        return was_invalid or before is None or before != value

    def _forget(self, key: str) -> bool:
        self._versions.pop(key, None)
        gone = self.items.pop(key, None) is not None
        return self.invalid.pop(key, None) is not None or gone

    async def relist(self) -> None:
        seen: set[str] = set()
        changed: list[str] = []
        # Page by page: raw JSON of one page at a time, never of the whole list.
        async for page, rv in self._client.list_pages(
            self.resource,
            self._namespace,
            label_selector=self._selector,
            field_selector=self._field_selector,
        ):
            self._rv = rv
            for obj in page:
                key = object_key(obj)
                seen.add(key)
                if self._store(key, obj):
                    changed.append(key)
        RELISTS.labels(self.name).inc()
        for key in [k for k in self._versions if k not in seen]:
            if self._forget(key):
                changed.append(key)
        self.listed.set()
        for key in changed:
            self._on_change(key)

    def _apply(self, event: k8s.WatchEvent) -> None:
        meta = event.object.get("metadata") or {}
        if meta.get("resourceVersion"):
            self._rv = str(meta["resourceVersion"])
        if event.type == "BOOKMARK":
            return
        key = object_key(event.object)
        changed = self._forget(key) if event.type == "DELETED" else self._store(key, event.object)
        if changed:
            self._on_change(key)

    async def run(self) -> None:
        """List, then watch for ever. Cancel to stop."""
        attempt = backoff.Backoff(self._retry)
        need_list = True
        while True:
            try:
                if need_list:
                    await self.relist()
                    need_list = False
                # Spread the watch renewals of many reflectors over time.
                timeout = int(self._watch_timeout * (0.8 + 0.4 * random.random()))
                async for event in self._client.watch(
                    self.resource,
                    self._rv,
                    self._namespace,
                    label_selector=self._selector,
                    field_selector=self._field_selector,
                    timeout_seconds=timeout,
                ):
                    self._apply(event)
                    attempt.reset()
                WATCH_RESTARTS.labels(self.name, "ended").inc()
                continue
            except k8s.Gone:
                log.info("%s: resourceVersion %s is gone, listing again", self.name, self._rv)
                WATCH_RESTARTS.labels(self.name, "gone").inc()
                need_list = True
                continue
            except k8s.ApiError as e:
                reason = f"http {e.status}"
                log.warning("%s: watch failed: %s", self.name, e)
            except k8s.Unreachable as e:
                reason = "unreachable"
                log.warning("%s: API server unreachable: %s", self.name, e)
            WATCH_RESTARTS.labels(self.name, reason).inc()
            delay = attempt.next_delay(random.random())
            await asyncio.sleep(delay if delay is not None else self._retry.cap)
