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
        self._entitled: Mapping[model.ServiceKey, set[str]] = {}
        self._dirty = asyncio.Event()

    def object_name(self, service: model.ServiceKey) -> str:
        digest = hashlib.sha256(f"{self._node}/{service}".encode()).hexdigest()[:20]
        return f"{self._prefix}-{digest}"

    def recorded_by(self, services: Iterable[model.ServiceKey]) -> set[str]:
        """Nodes that recorded announcing any of `services`."""
        wanted = set(services)
        return {
            s.status.node
            for s in self.cache.items.values()
            if s.status.node and service_of(s) in wanted
        }

    def set(
        self,
        desired: Mapping[model.ServiceKey, Iterable[str]],
        entitled: Mapping[model.ServiceKey, set[str]],
    ) -> None:
        """`desired`: Service -> what this node announces it with (interfaces or peers).
        `entitled`: Service -> the nodes that should have an object for it."""
        self._desired = {key: sorted(set(items)) for key, items in desired.items()}
        self._entitled = entitled
        self._dirty.set()

    def changed(self, _key: str = "") -> None:
        self._dirty.set()

    async def run(self) -> None:
        retry = backoff.Backoff(backoff.RECONCILE)
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile()
                retry.reset()
            except (k8s.ApiError, k8s.Unreachable) as e:
                delay = retry.next_delay(random.random()) or backoff.RECONCILE.cap
                log.warning(
                    "%s update failed (retrying in %.1f s): %s", self._resource.kind, delay, e
                )
                await asyncio.sleep(delay)
                self._dirty.set()

    async def _reconcile(self) -> None:
        existing = self.cache.items
        for key, want in sorted(self._desired.items()):
            have = existing.get(f"{self._namespace}/{self.object_name(key)}")
            if have is not None and _items(have) == want:
                continue
            await self._write(key, want)
            if have is None:
                self._on_new(key)
        for status in list(existing.values()):
            key, node = service_of(status), status.status.node
            stale_mine = node == self._node and key not in self._desired
            orphan = (
                node != self._node
                and key in self._desired
                and node not in self._entitled.get(key, set())
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
