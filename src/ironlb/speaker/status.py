"""ServiceL2Status and ServiceBGPStatus: which node announces which Service, and how.

One object per (node, Service), named after both and labelled like MetalLB's
(`metallb.io/node`, `metallb.io/service-name`, `metallb.io/service-namespace`): for layer 2 the
interfaces, for BGP the peers the Service is advertised to. Kept exact: each speaker writes its
own objects and deletes them when it stops announcing; a node that still announces a Service
also deletes other nodes' objects for it when those nodes no longer should have one (a dead node
cannot clean up after itself).

Writes run in their own task (`run`), from the latest desired state: announcing never waits for
the API server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

from ironlb.core import backoff, config, model
from ironlb.k8s import client as k8s
from ironlb.k8s import reflector

log = logging.getLogger(__name__)

NODE_LABEL = "metallb.io/node"
NAME_LABEL = "metallb.io/service-name"
NAMESPACE_LABEL = "metallb.io/service-namespace"
FIELD_MANAGER = "ironlb-speaker"

S = TypeVar("S", config.ServiceL2Status, config.ServiceBGPStatus)


def parse_l2(raw: k8s.Obj) -> config.ServiceL2Status:
    return config.parse_as(raw, config.ServiceL2Status)


def parse_bgp(raw: k8s.Obj) -> config.ServiceBGPStatus:
    return config.parse_as(raw, config.ServiceBGPStatus)


def _items(status: config.ServiceL2Status | config.ServiceBGPStatus) -> list[str]:
    if isinstance(status, config.ServiceL2Status):
        return [i.name for i in status.status.interfaces]
    return list(status.status.peers)


def service_of(status: config.ServiceL2Status | config.ServiceBGPStatus) -> model.ServiceKey:
    return model.service_key(status.status.service_namespace, status.status.service_name)


class Statuses(Generic[S]):
    """The status objects of one kind that this node keeps."""

    def __init__(
        self,
        client: k8s.Client,
        node: str,
        namespace: str,
        cache: reflector.Reflector[S],
        *,
        resource: k8s.Resource,
        prefix: str,
        on_new: Callable[[model.ServiceKey], None] = lambda _key: None,
    ) -> None:
        self._client = client
        self._node = node
        self._namespace = namespace
        self.cache: reflector.Reflector[S] = cache
        self._resource = resource
        self._prefix = prefix
        self._on_new = on_new
        self._desired: dict[model.ServiceKey, list[str]] = {}
        self._entitled: dict[model.ServiceKey, frozenset[str]] = {}
        self._entitled_all: frozenset[str] | None = None
        """Set instead of `_entitled` when every Service's entitled nodes are the same."""
        self._dirty = asyncio.Event()
        self._stale: set[model.ServiceKey] | None = None
        """Services to compare again; None: all of them (the first pass, after an error)."""
        # The cache by Service: object key -> (Service, node), and Service -> object keys, kept
        # from the cache's own change events (every store and delete passes through `changed`).
        self._object_of: dict[str, tuple[model.ServiceKey, str]] = {}
        self._objects: dict[model.ServiceKey, set[str]] = {}

    def object_name(self, service: model.ServiceKey) -> str:
        digest = hashlib.sha256(f"{self._node}/{service}".encode()).hexdigest()[:20]
        return f"{self._prefix}-{digest}"

    def recorded_by(self, services: Iterable[model.ServiceKey]) -> set[str]:
        """Nodes that recorded announcing any of `services`."""
        return {
            node
            for service in services
            for key in self._objects.get(service, ())
            if (node := self._object_of[key][1])
        }

    def set(
        self,
        desired: Mapping[model.ServiceKey, Iterable[str]],
        entitled: Mapping[model.ServiceKey, Iterable[str]] | frozenset[str],
    ) -> None:
        """All of it: `desired`: Service -> what this node announces it with (interfaces or
        peers); `entitled`: Service -> the nodes that should have an object for it, or one set
        of nodes for every Service."""
        new_desired = {key: sorted(set(items)) for key, items in desired.items()}
        if isinstance(entitled, frozenset):
            keys = new_desired.keys() | self._desired.keys()
            if entitled == self._entitled_all:
                stale = {key for key in keys if new_desired.get(key) != self._desired.get(key)}
            else:
                stale = set(keys)
            self._entitled, self._entitled_all = {}, entitled
        else:
            new_entitled = {key: frozenset(nodes) for key, nodes in entitled.items()}
            stale = {
                key
                for key in new_desired.keys() | self._desired.keys() | self._entitled.keys()
                if new_desired.get(key) != self._desired.get(key)
                or new_entitled.get(key) != self._entitled.get(key)
            }
            if self._entitled_all is not None:
                stale |= new_desired.keys() | self._desired.keys()
            self._entitled, self._entitled_all = new_entitled, None
        self._desired = new_desired
        self._mark(stale)

    def _entitled_to(self, key: model.ServiceKey) -> frozenset[str]:
        if self._entitled_all is not None:
            return self._entitled_all
        return self._entitled.get(key, frozenset())

    def update(
        self,
        desired: Mapping[model.ServiceKey, Iterable[str] | None],
        entitled: Mapping[model.ServiceKey, Iterable[str] | None] | None = None,
    ) -> None:
        """Only these Services changed (None: this node has nothing for it / nobody is
        entitled); the others stay as they are. `entitled` None: unchanged (as when the last
        `set` gave one set of nodes for every Service)."""
        stale = set()
        for key, items in desired.items():
            want = sorted(set(items)) if items is not None else None
            if want != self._desired.get(key):
                stale.add(key)
                if want is None:
                    del self._desired[key]
                else:
                    self._desired[key] = want
        if entitled is None:
            self._mark(stale)
            return
        assert self._entitled_all is None, "update() with entitled nodes per Service"
        for key, nodes in entitled.items():
            allowed = frozenset(nodes) if nodes is not None else None
            if allowed != self._entitled.get(key):
                stale.add(key)
                if allowed is None:
                    del self._entitled[key]
                else:
                    self._entitled[key] = allowed
        self._mark(stale)

    def _mark(self, stale: Iterable[model.ServiceKey]) -> None:
        if self._stale is not None:
            before = len(self._stale)
            self._stale.update(stale)
            if len(self._stale) == before:
                return
        self._dirty.set()

    def changed(self, key: str = "") -> None:
        """The cache's change event for object `key`: compare its Service again."""
        found = self.cache.items.get(key)
        before = self._object_of.pop(key, None)
        if before is not None:
            keys = self._objects[before[0]]
            keys.discard(key)
            if not keys:
                del self._objects[before[0]]
        if found is not None:
            service = service_of(found)
            self._object_of[key] = (service, found.status.node)
            self._objects.setdefault(service, set()).add(key)
            self._mark([service])
        elif before is not None:
            self._mark([before[0]])

    async def run(self) -> None:
        retry = backoff.Backoff(backoff.RECONCILE)
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile()
                retry.reset()
            except (k8s.ApiError, k8s.Unreachable) as e:
                self._stale = None  # what was not done yet is not known: compare everything
                delay = retry.next_delay(random.random()) or backoff.RECONCILE.cap
                log.warning(
                    "%s update failed (retrying in %.1f s): %s", self._resource.kind, delay, e
                )
                await asyncio.sleep(delay)
                self._dirty.set()

    async def _reconcile(self) -> None:
        """Compare the stale Services' objects with what is desired (all, after `run` started
        or an error), write what differs, delete this node's objects it no longer wants and
        other nodes' objects for Services it announces whose nodes are not entitled."""
        if self._stale is None:
            services = self._desired.keys() | self._objects.keys()
        else:
            services = self._stale
        self._stale = set()
        existing = self.cache.items
        for key in sorted(services):
            want = self._desired.get(key)
            if want is not None:
                have = existing.get(f"{self._namespace}/{self.object_name(key)}")
                if have is None or _items(have) != want:
                    await self._write(key, want)
                    if have is None:
                        self._on_new(key)
            for object_key in sorted(self._objects.get(key, ())):
                status = existing.get(object_key)
                if status is None:
                    continue
                node = status.status.node
                stale_mine = node == self._node and want is None
                orphan = (
                    node != self._node and want is not None and node not in self._entitled_to(key)
                )
                if stale_mine or orphan:
                    await self._client.delete(self._resource, status.name, self._namespace)

    async def _write(self, key: model.ServiceKey, items: list[str]) -> None:
        namespace, name = key.split("/", 1)
        meta = {
            "name": self.object_name(key),
            "namespace": self._namespace,
            "labels": {NODE_LABEL: self._node, NAME_LABEL: name, NAMESPACE_LABEL: namespace},
        }
        await self._client.apply(
            self._resource, {"metadata": meta, "spec": {}}, field_manager=FIELD_MANAGER
        )
        detail: k8s.Obj = (
            {"interfaces": [{"name": n} for n in items]}
            if self._resource == k8s.SERVICE_L2_STATUSES
            else {"peers": items}
        )
        status = {"node": self._node, "serviceName": name, "serviceNamespace": namespace, **detail}
        await self._client.apply(
            self._resource,
            {"metadata": {"name": meta["name"], "namespace": self._namespace}, "status": status},
            field_manager=FIELD_MANAGER,
            sub="status",
        )
