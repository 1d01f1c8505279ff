"""Reads the cluster into a `diagnosis.Snapshot`: one list per kind, nothing written.

Job: what `ironlb status` and `ironlb doctor` need, in a fixed number of requests whatever the
cluster's size (Services, EndpointSlices, Nodes, Namespaces, the metallb.io kinds, the
ConfigurationStates and SpeakerReports of the namespace, and a few single objects: kube-proxy's
ConfigMap, MetalLB's legacy ConfigMap, the webhook configuration, the controller Lease).

Invariants: a kind the cluster does not serve (a CRD not installed: 404) or the caller may not
read (403) leaves its part of the snapshot empty and is noted in `Gathered.notes`; any other API
error or an unreachable API server is raised as `GatherError` with one line saying which request.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ironlb.core import config, diagnosis, model, speakerreport
from ironlb.k8s import client as k8s

WEBHOOK_NAME = "ironlb-webhook"
LEASE_NAME = "ironlb-controller"
LEGACY_CONFIGMAP = "config"

_CONFIG_KINDS: tuple[tuple[k8s.Resource, type[config.ConfigKind]], ...] = (
    (k8s.IP_ADDRESS_POOLS, config.IPAddressPool),
    (k8s.L2_ADVERTISEMENTS, config.L2Advertisement),
    (k8s.BGP_ADVERTISEMENTS, config.BGPAdvertisement),
    (k8s.BGP_PEERS, config.BGPPeer),
    (k8s.BFD_PROFILES, config.BFDProfile),
    (k8s.COMMUNITIES, config.Community),
)


class GatherError(Exception):
    """The snapshot could not be read (one line: which request, why)."""


@dataclass
class Gathered:
    snapshot: diagnosis.Snapshot
    notes: list[str] = field(default_factory=list)
    """Parts left empty (kind not served, not allowed to read)."""
    requests: int = 0


def _time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def kube_proxy(raw: Mapping[str, Any]) -> diagnosis.KubeProxy | None:
    """kube-proxy's mode and strictARP from its ConfigMap (kubeadm's `config.conf` key)."""
    data = raw.get("data") or {}
    text = data.get("config.conf") or next(iter(data.values()), None)
    if not isinstance(text, str):
        return None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(parsed, dict):
        return None
    ipvs = parsed.get("ipvs") if isinstance(parsed.get("ipvs"), dict) else {}
    assert isinstance(ipvs, dict)
    return diagnosis.KubeProxy(str(parsed.get("mode") or ""), ipvs.get("strictARP") is True)


def webhook(raw: Mapping[str, Any], ready: int) -> diagnosis.Webhook | None:
    hooks = raw.get("webhooks") or []
    if not hooks:
        return None
    first = hooks[0]
    client_config = first.get("clientConfig") or {}
    svc = client_config.get("service") or {}
    return diagnosis.Webhook(
        name=raw.get("metadata", {}).get("name", ""),
        service=f"{svc.get('namespace', '')}/{svc.get('name', '')}",
        ca_bundle=bool(client_config.get("caBundle")),
        ready_endpoints=ready,
        failure_policy=str(first.get("failurePolicy") or "Fail"),
    )


def lease(raw: Mapping[str, Any] | None, namespace: str, name: str) -> diagnosis.Controller:
    spec = (raw or {}).get("spec") or {}
    return diagnosis.Controller(
        lease=f"{namespace}/{name}",
        holder=spec.get("holderIdentity") or None,
        renewed=_time(spec.get("renewTime")) or _time(spec.get("acquireTime")),
        duration=float(spec.get("leaseDurationSeconds") or 15),
    )


class _Reader:
    def __init__(self, client: k8s.Client, notes: list[str]) -> None:
        self.client = client
        self.notes = notes
        self.requests = 0

    async def list(self, res: k8s.Resource, namespace: str | None = None) -> list[k8s.Obj]:
        async def items() -> list[k8s.Obj]:
            found, _version = await self.client.list_all(res, namespace)
            return found

        listed: list[k8s.Obj] = await self._call(items(), res, [])
        return listed

    async def get(
        self, res: k8s.Resource, name: str, namespace: str | None = None
    ) -> k8s.Obj | None:
        found: k8s.Obj | None = await self._call(
            self.client.get(res, name, namespace), res, None, name
        )
        return found

    async def _call(
        self, call: Awaitable[Any], res: k8s.Resource, empty: Any, name: str = ""
    ) -> Any:
        self.requests += 1
        what = f"{res.plural}{'/' + name if name else ''}"
        try:
            return await call
        except k8s.ApiError as e:
            if e.not_found:
                # MetalLB's deprecated AddressPool kind is normally absent: no news.
                if not name and res is not k8s.ADDRESS_POOLS:
                    self.notes.append(f"{res.api_version} {res.plural} not served (CRD missing)")
                return empty
            if e.forbidden:
                self.notes.append(f"not allowed to read {what}")
                return empty
            raise GatherError(f"reading {what}: {e}") from None
        except k8s.Unreachable as e:
            raise GatherError(f"reading {what}: API server unreachable: {e}") from None


async def gather(
    client: k8s.Client,
    namespace: str,
    *,
    lb_class: str | None = None,
    lease_name: str = LEASE_NAME,
    webhook_name: str = WEBHOOK_NAME,
    now: float | None = None,
) -> Gathered:
    notes: list[str] = []
    r = _Reader(client, notes)
    (
        services,
        slices,
        nodes,
        namespaces,
        states,
        reports,
        old_pools,
        *config_lists,
    ) = await asyncio.gather(
        r.list(k8s.SERVICES),
        r.list(k8s.ENDPOINT_SLICES),
        r.list(k8s.NODES),
        r.list(k8s.NAMESPACES),
        r.list(k8s.CONFIGURATION_STATES, namespace),
        r.list(k8s.SPEAKER_REPORTS, namespace),
        r.list(k8s.ADDRESS_POOLS, namespace),
        *(r.list(res, namespace) for res, _ in _CONFIG_KINDS),
    )
    proxy_cm, legacy_cm, hook, lease_obj = await asyncio.gather(
        r.get(k8s.CONFIGMAPS, "kube-proxy", "kube-system"),
        r.get(k8s.CONFIGMAPS, LEGACY_CONFIGMAP, namespace),
        r.get(k8s.VALIDATING_WEBHOOKS, webhook_name),
        r.get(k8s.LEASES, lease_name, namespace),
    )
    errors: list[str] = []
    objects: list[config.ConfigKind] = []
    for (_, cls), raws in zip(_CONFIG_KINDS, config_lists, strict=True):
        for raw in raws:
            try:
                objects.append(
                    config.parse_as({k: v for k, v in raw.items() if k != "status"}, cls)
                )
            except config.ConfigError as e:
                errors.append(str(e))
    try:
        cfg = config.Config.from_objects(objects)
    except config.ConfigError as e:
        errors.append(str(e))
        cfg = config.Config()
    parsed_slices = [model.parse_endpoint_slice(s) for s in slices]
    endpoints: dict[model.ServiceKey, tuple[model.EndpointSlice, ...]] = {}
    for s in parsed_slices:
        key = s.service_key
        if key is not None:
            endpoints[key] = (*endpoints.get(key, ()), s)
    hook_model = None
    if hook is not None:
        hook_model = webhook(hook, 0)
        if hook_model is not None:
            ns, _, name = hook_model.service.partition("/")
            ready = sum(
                1
                for s in endpoints.get(model.service_key(ns, name), ())
                for e in s.endpoints
                if e.conditions.ready is not False
            )
            hook_model = webhook(hook, ready)
    deprecated = tuple(
        f"AddressPool/{p.get('metadata', {}).get('namespace', namespace)}/"
        f"{p.get('metadata', {}).get('name', '')}"
        for p in old_pools
    )
    if legacy_cm is not None:
        deprecated += (f"ConfigMap/{namespace}/{LEGACY_CONFIGMAP}",)
    parsed_nodes = tuple(model.parse_node(n) for n in nodes)
    node_names = {n.name for n in parsed_nodes}
    speakers = {}
    for raw in reports:
        parsed = speakerreport.parse(raw)
        if parsed.node in node_names:  # a deleted node's last report says nothing now
            speakers[parsed.node] = parsed
    reports_unread = any(k8s.SPEAKER_REPORTS.plural in note for note in notes)
    snapshot = diagnosis.Snapshot(
        services=tuple(model.parse_service(s) for s in services),
        endpoints=endpoints,
        nodes=parsed_nodes,
        namespaces={
            n.get("metadata", {}).get("name", ""): n.get("metadata", {}).get("labels") or {}
            for n in namespaces
        },
        config=cfg,
        namespace=namespace,
        config_errors=tuple(errors),
        config_states=tuple(
            diagnosis.ConfigState(
                s.get("metadata", {}).get("name", ""),
                s.get("metadata", {}).get("namespace", namespace),
                bool((s.get("status") or {}).get("validConfig", True)),
                str((s.get("status") or {}).get("lastError") or ""),
            )
            for s in states
            if "status" in s
        ),
        speakers=speakers,
        speakers_known=not reports_unread,
        kube_proxy=kube_proxy(proxy_cm) if proxy_cm is not None else None,
        deprecated=deprecated,
        webhook=hook_model,
        controller=lease(lease_obj, namespace, lease_name),
        lb_class=lb_class,
        now=time.time() if now is None else now,
    )
    return Gathered(snapshot, notes, r.requests)
