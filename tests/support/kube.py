"""Helpers for tests against the real API server: objects, polling, events."""

from __future__ import annotations

from typing import Any, TypeVar

import yaml

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from support import poll

eventually = poll.eventually

T = TypeVar("T")
CONFIG_NS = lab_cluster.CONFIG_NAMESPACE


def service(
    name: str,
    *,
    ports: tuple[int, ...] = (80,),
    protocol: str = "TCP",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> k8s.Obj:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": name},
            "ports": [{"name": f"p{p}", "port": p, "protocol": protocol} for p in ports],
            **spec,
        },
    }


MODULE_LABEL = "ironlb.io/test-module"  # set on every test namespace (tests/conftest.py)


def pool(
    name: str, *addresses: str, namespaces: tuple[str, ...] = (), module: str = "", **spec: Any
) -> k8s.Obj:
    """An IPAddressPool; `namespaces` or `module` (the test module whose namespaces it serves)
    keep other tests' Services out of it."""
    body: dict[str, Any] = {"addresses": list(addresses), **spec}
    if namespaces:
        body["serviceAllocation"] = {"namespaces": list(namespaces)}
    elif module:
        body["serviceAllocation"] = {
            "namespaceSelectors": [{"matchLabels": {MODULE_LABEL: module}}]
        }
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": CONFIG_NS},
        "spec": body,
    }


def apply(cluster: lab_cluster.Cluster, *docs: k8s.Obj) -> None:
    """kubectl apply, as a user would (through the admission webhook)."""
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))


async def ingress(admin: k8s.Client, namespace: str, name: str) -> list[str]:
    svc = await admin.get(k8s.SERVICES, name, namespace)
    found = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in found]


async def ingress_is(admin: k8s.Client, namespace: str, name: str, expected: list[str]) -> bool:
    return await ingress(admin, namespace, name) == expected


async def reasons(admin: k8s.Client, namespace: str, name: str, reason: str) -> list[str]:
    """Notes of the Events with `reason` about object `name`."""
    return [note for r, note in await events_for(admin, namespace, name) if r == reason]


async def events_for(admin: k8s.Client, namespace: str, name: str) -> list[tuple[str, str]]:
    """(reason, note) of the Events about object `name`, oldest first."""
    items, _ = await admin.list_all(k8s.EVENTS, namespace)
    mine = [e for e in items if (e.get("regarding") or {}).get("name") == name]
    mine.sort(key=lambda e: e.get("eventTime") or "")
    return [(e.get("reason", ""), e.get("note", "")) for e in mine]
