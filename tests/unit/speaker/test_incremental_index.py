"""The speaker after a Service or EndpointSlice event re-decides only that Service's addresses,
after another node's readiness changes (liveness without membership) only those whose owner it
can change, and after a Node change that does not touch what makes it a candidate nothing; it
updates what follows from the plan (what it announces, the others' owners, its status writers'
desired state) by those addresses alone. After any sequence of events, that state must equal
what a full re-plan of the same caches gives.

The speaker is real but never run: its caches are filled through the reflectors' own
watch-event path, as `bench/speaker_plan.py` does; nothing is announced (no interface in this
process's view), so the desired status objects are empty and the entitlement (owners) is what
differs."""

from __future__ import annotations

import random
from typing import Any

from ironlb.k8s import client as k8s
from ironlb.speaker import settings as speaker_settings
from ironlb.speaker import speaker as node_speaker

NS = "metallb-system"
NODES = ("node-1", "node-2", "node-3")


class _NoWrites:
    async def apply(self, *_args: object, **_kwargs: object) -> k8s.Obj:
        return {}

    async def delete(self, *_args: object, **_kwargs: object) -> None:
        return None


def _event(kind: str, obj: dict[str, Any]) -> k8s.WatchEvent:
    return k8s.WatchEvent(kind, obj)  # type: ignore[arg-type]


def _meta(name: str, namespace: str | None, version: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": str(version), "uid": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _service(i: int, ips: list[str], version: int, key: str | None) -> dict[str, Any]:
    annotations = {"metallb.io/allow-shared-ip": key} if key else {}
    return {
        "metadata": {**_meta(f"svc-{i}", "t", version), "annotations": annotations},
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"port": 80 + i, "protocol": "TCP"}],
            "externalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
    }


def _slice(i: int, version: int, ready: bool, node: str) -> dict[str, Any]:
    return {
        "metadata": {
            **_meta(f"svc-{i}-x", "t", version),
            "labels": {"kubernetes.io/service-name": f"svc-{i}"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"198.19.0.{i + 1}"],
                "conditions": {"ready": ready},
                "nodeName": node,
            }
        ],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }


def _node(
    i: int,
    version: int,
    *,
    ready: bool,
    extra_address: bool = False,
    excluded: bool = False,
    unavailable: bool = False,
) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": f"198.18.0.{10 + i}"}]
    if extra_address:
        addresses.append({"type": "ExternalIP", "address": f"203.0.113.{10 + i}"})
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if unavailable:
        conditions.append({"type": "NetworkUnavailable", "status": "True"})
    labels = {"node.kubernetes.io/exclude-from-external-load-balancers": ""} if excluded else {}
    return {
        "metadata": {**_meta(NODES[i], None, version), "labels": labels},
        "status": {"addresses": addresses, "conditions": conditions},
    }


def _state(s: node_speaker.Speaker) -> tuple[object, ...]:
    return (
        dict(s._l2_mine),
        dict(s._l2_others),
        dict(s._l2_services_at),
        {k: set(v) for k, v in s._l2_addresses_of.items()},
        dict(s.l2_status._desired),
        dict(s.l2_status._entitled),
        {peer: dict(routes) for peer, routes in s._bgp_planner.plan.routes.items()},
        dict(s._bgp_services_of),
        {k: set(v) for k, v in s._bgp_routes_of.items()},
        dict(s.bgp_status._desired),
    )


async def _speaker_after(seed: int) -> node_speaker.Speaker:
    s, _ = await _events(seed)
    return s


async def _run(seed: int) -> int:
    _, compared = await _events(seed)
    return compared


async def _events(seed: int) -> tuple[node_speaker.Speaker, int]:
    rng = random.Random(seed)
    settings = speaker_settings.Settings(node_name="node-1", namespace=NS)
    s = node_speaker.Speaker(_NoWrites(), settings)  # type: ignore[arg-type]
    pool = {"metadata": _meta("p", NS, 1), "spec": {"addresses": ["198.18.64.0/28"]}}
    adv = {"metadata": _meta("p", NS, 1), "spec": {"ipAddressPools": ["p"]}}
    s.config.reflectors[0]._apply(_event("ADDED", pool))
    s.config.reflectors[1]._apply(_event("ADDED", adv))
    # BGP too: two peers, one advertisement per address and one aggregated to /30 (routes
    # shared by several Services). No session runs, so no Service is advertised to an
    # established peer: the index of the routes' Services is what is compared.
    bgp_adv = {"metadata": _meta("b", NS, 1), "spec": {"ipAddressPools": ["p"]}}
    aggregated = {
        "metadata": _meta("agg", NS, 1),
        "spec": {"ipAddressPools": ["p"], "aggregationLength": 30, "peers": ["r2"]},
    }
    s.config.reflectors[2]._apply(_event("ADDED", bgp_adv))
    s.config.reflectors[2]._apply(_event("ADDED", aggregated))
    for name, address in (("r1", "198.18.0.1"), ("r2", "198.18.0.2")):
        peer = {
            "metadata": _meta(name, NS, 1),
            "spec": {"myASN": 64510, "peerASN": 64500, "peerAddress": address},
        }
        s.config.reflectors[3]._apply(_event("ADDED", peer))
    for i in range(len(NODES)):
        s.nodes._apply(_event("ADDED", _node(i, 1, ready=True)))
    await s.plan_once()
    version = 2
    compared = 0
    for _ in range(60):
        version += 1
        i = rng.randrange(12)
        what = rng.choice(["service", "service", "slice", "slice", "delete", "node"])
        if what == "node":
            # Another node turns (un)ready, gets an address, is excluded or unavailable.
            n = rng.randrange(1, len(NODES))
            s.nodes._apply(
                _event(
                    "MODIFIED",
                    _node(
                        n,
                        version,
                        ready=rng.random() < 0.6,
                        extra_address=rng.random() < 0.5,
                        excluded=rng.random() < 0.15,
                        unavailable=rng.random() < 0.15,
                    ),
                )
            )
        elif what == "service":
            # Addresses from a small range: Services share (same key) or collide.
            ips = [f"198.18.64.{rng.randrange(6)}"]
            key = rng.choice([None, "a", "b"])
            s.services._apply(_event("ADDED", _service(i, ips, version, key)))
        elif what == "slice":
            s.slices._apply(
                _event("ADDED", _slice(i, version, rng.random() < 0.7, rng.choice(NODES)))
            )
        else:
            obj = _service(i, [], version, None)
            s.services._apply(_event("DELETED", obj))
        await s.plan_once()
        if rng.random() < 0.3:
            incremental = _state(s)
            s._replan_all = True
            await s.plan_once()
            assert _state(s) == incremental
            compared += 1
    return s, compared


async def test_the_incremental_plan_index_and_status_equal_a_full_replan() -> None:
    compared = 0
    for seed in range(40):
        compared += await _run(seed)
    assert compared > 500


async def test_the_bgp_routes_are_indexed() -> None:
    """The comparison above would hold trivially if no route were planned."""
    s = await _speaker_after(seed=3)
    assert s._bgp_planner.plan.routes["r1"], "no route planned"
    assert any(len(keys) > 1 for keys in s._bgp_services_of.values()), "no shared route"
