"""ServiceL2Status objects: which node announces which Service, on which interfaces.

Kept exact across failovers: each speaker keeps one object per Service it announces (named
after node and Service, labelled like MetalLB's: `metallb.io/node`, `metallb.io/service-name`,
`metallb.io/service-namespace`) and deletes its own when it stops; the new owner of a Service's
address also deletes the objects of nodes that no longer announce any of that Service's
addresses (a dead node cannot clean up after itself). When this node starts announcing a
Service it records a `nodeAssigned` Event on it.

Writes run in their own task (`run`), from the latest plan: announcing never waits for the API.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping

from ironlb.core import addresses, announce, config, model
from ironlb.k8s import client as k8s
from ironlb.k8s import events, reflector

log = logging.getLogger(__name__)

NODE_LABEL = "metallb.io/node"
NAME_LABEL = "metallb.io/service-name"
NAMESPACE_LABEL = "metallb.io/service-namespace"
FIELD_MANAGER = "ironlb-speaker"


def parse(raw: k8s.Obj) -> config.ServiceL2Status:
    return config.parse_as(raw, config.ServiceL2Status)


def object_name(node: str, service: model.ServiceKey) -> str:
    digest = hashlib.sha256(f"{node}/{service}".encode()).hexdigest()[:20]
    return f"l2-{digest}"


class L2Statuses:
    def __init__(
        self,
        client: k8s.Client,
        node: str,
        namespace: str,
        recorder: events.Recorder,
        cache: reflector.Reflector[config.ServiceL2Status],
        service: Callable[[model.ServiceKey], model.Service | None],
    ) -> None:
        self._client = client
        self._node = node
        self._namespace = namespace
        self._events = recorder
        self.cache = cache
        self._service = service
        self._plan: Mapping[addresses.IP, announce.Announcement] = {}
        self._announced: Mapping[addresses.IP, tuple[str, ...]] = {}
        self._dirty = asyncio.Event()

    def announced_by(self, services: Iterable[model.ServiceKey]) -> set[str]:
        """Nodes that recorded announcing any of `services`."""
        wanted = set(services)
        return {
            s.status.node
            for s in self.cache.items.values()
            if f"{s.status.service_namespace}/{s.status.service_name}" in wanted and s.status.node
        }

    def update(
        self,
        plan: Mapping[addresses.IP, announce.Announcement],
        announced: Mapping[addresses.IP, tuple[str, ...]],
    ) -> None:
        self._plan, self._announced = plan, dict(announced)
        self._dirty.set()

    def changed(self, _key: str = "") -> None:
        self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._reconcile()
            except (k8s.ApiError, k8s.Unreachable) as e:
                log.warning("ServiceL2Status update failed (retrying): %s", e)
                await asyncio.sleep(1.0)
                self._dirty.set()

    def _desired(self) -> dict[model.ServiceKey, set[str]]:
        """Service -> interfaces, for what this node announces now."""
        out: dict[model.ServiceKey, set[str]] = {}
        for ip, names in self._announced.items():
            a = self._plan.get(ip)
            if a is None:
                continue
            for key in a.services:
                out.setdefault(key, set()).update(names)
        return out

    def _owners(self) -> dict[model.ServiceKey, set[str]]:
        owners: dict[model.ServiceKey, set[str]] = {}
        for a in self._plan.values():
            for key in a.services:
                owners.setdefault(key, set())
                if a.owner:
                    owners[key].add(a.owner)
        return owners

    async def _reconcile(self) -> None:
        desired = self._desired()
        owners = self._owners()
        existing = self.cache.items
        for key, names in sorted(desired.items()):
            name = object_name(self._node, key)
            have = existing.get(f"{self._namespace}/{name}")
            want = sorted(names)
            if have is not None and [i.name for i in have.status.interfaces] == want:
                continue
            await self._write(name, key, want)
            if have is None:
                svc = self._service(key)
                if svc is not None:
                    self._events.record(
                        events.Regarding(
                            "v1", "Service", svc.namespace, svc.name, svc.metadata.uid
                        ),
                        "Normal",
                        "nodeAssigned",
                        f'announcing from node "{self._node}" with protocol "layer2"',
                    )
        for status in list(existing.values()):
            key = model.ServiceKey(
                f"{status.status.service_namespace}/{status.status.service_name}"
            )
            node = status.status.node
            mine_and_stale = node == self._node and key not in desired
            # A node that announces none of the Service's addresses any more, while this node
            # announces one of them: it will not clean up (it may be dead), so we do.
            orphaned = node != self._node and key in desired and node not in owners.get(key, set())
            if mine_and_stale or orphaned:
                await self._client.delete(k8s.SERVICE_L2_STATUSES, status.name, self._namespace)

    async def _write(self, name: str, key: model.ServiceKey, interfaces: list[str]) -> None:
        namespace, svc_name = key.split("/", 1)
        meta = {
            "name": name,
            "namespace": self._namespace,
            "labels": {NODE_LABEL: self._node, NAME_LABEL: svc_name, NAMESPACE_LABEL: namespace},
        }
        await self._client.apply(
            k8s.SERVICE_L2_STATUSES, {"metadata": meta, "spec": {}}, field_manager=FIELD_MANAGER
        )
        status = {
            "node": self._node,
            "serviceName": svc_name,
            "serviceNamespace": namespace,
            "interfaces": [{"name": n} for n in interfaces],
        }
        await self._client.apply(
            k8s.SERVICE_L2_STATUSES,
            {"metadata": {"name": name, "namespace": self._namespace}, "status": status},
            field_manager=FIELD_MANAGER,
            sub="status",
        )
