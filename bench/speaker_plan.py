"""The speaker's CPU time per Service event, with N Services (10 000, --quick 1 000).

No API server and no network: a real `Speaker` whose caches are filled through the reflectors'
own watch-event path (`Reflector._apply`, as a watch delivers them), with 3 Nodes, one layer-2
pool of /18 plus an L2Advertisement, N LoadBalancer Services with an address each and one
EndpointSlice each. Then, one at a time, a Service's EndpointSlice changes (an endpoint turns
unready or ready again, alternately) and the speaker does what its plan loop does after an
event (`plan_once`), then what its status writers do after it (compare the ServiceL2Status and
ServiceBGPStatus objects they keep with what is desired; their API writes go to a client that
only counts them); the process CPU time of both is one sample. No interface exists in this
process's view, so nothing is announced: the figure is planning and bookkeeping, not I/O.

Then, with `--nodes` Nodes (3; every Service has a serving endpoint on each of them, so every
node is a candidate for every address, as in a fleet), the same for membership: one at a time, a
member other than this node dies or comes back (what membership reports: its state in the
speaker's member table, then the event), and the speaker plans. A node's death is the event a
failover waits on: this is the planning part of it.

Last line: `speaker_plan_ms_per_event: <median> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import statistics
import time

import common
from ironlb.core import election
from ironlb.k8s import client as k8s
from ironlb.membership import model as member_model
from ironlb.membership import states
from ironlb.speaker import settings as speaker_settings
from ironlb.speaker import speaker as node_speaker

NS = "metallb-system"
NODES = ("node-1", "node-2", "node-3")
NETWORK = ipaddress.ip_network("198.18.64.0/18")


class _CountingClient:
    """The speaker is built with a client; never run, it makes no request but the status
    writers' writes, which are counted here and go nowhere."""

    def __init__(self) -> None:
        self.writes = 0

    async def apply(self, *_args: object, **_kwargs: object) -> k8s.Obj:
        self.writes += 1
        return {}

    async def delete(self, *_args: object, **_kwargs: object) -> None:
        self.writes += 1


def _event(kind: str, obj: k8s.Obj) -> k8s.WatchEvent:
    return k8s.WatchEvent(kind, obj)  # type: ignore[arg-type]


def _meta(name: str, namespace: str | None, version: int) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "resourceVersion": str(version), "uid": name}
    if namespace:
        meta["namespace"] = namespace
    return meta


def node(name: str, i: int) -> k8s.Obj:
    return {
        "metadata": _meta(name, None, 1),
        "status": {
            "addresses": [{"type": "InternalIP", "address": f"198.18.0.{10 + i}"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def service(i: int, ip: str) -> k8s.Obj:
    return {
        "metadata": _meta(f"svc-{i}", "bench", 1),
        "spec": {
            "type": "LoadBalancer",
            "ports": [{"port": 80, "protocol": "TCP"}],
            "externalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
    }


def endpoint_slice(
    i: int, version: int, ready: bool, nodes: tuple[str, ...] = NODES, every_node: bool = False
) -> k8s.Obj:
    """One endpoint on one of `nodes` (`every_node`: one on each, the first `ready`)."""
    on = nodes if every_node else (nodes[i % len(nodes)],)
    return {
        "metadata": {
            **_meta(f"svc-{i}-abcde", "bench", version),
            "labels": {"kubernetes.io/service-name": f"svc-{i}"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"198.{19 + k // 256}.{k % 256}.{i % 250 + 1}"],
                "conditions": {"ready": ready or k > 0},
                "nodeName": name,
            }
            for k, name in enumerate(on)
        ],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }


class _Members:
    """What the speaker reads of a running membership: its member table (the real records),
    drop counters, and where it sends its own meta and peers (nowhere here)."""

    def __init__(self, nodes: tuple[str, ...]) -> None:
        self.members = {
            election.NodeName(name): _member(name, i, states.MemberState.ALIVE)
            for i, name in enumerate(nodes)
        }
        self.dropped: dict[object, int] = {}

    def set_meta(self, _meta: bytes) -> None:
        pass

    def set_peers(self, _peers: object) -> None:
        pass


def _member(name: str, i: int, state: states.MemberState) -> member_model.Member:
    address = member_model.Endpoint(ipaddress.ip_address(f"198.18.{i // 250}.{10 + i % 250}"), 7946)
    return member_model.Member(election.NodeName(name), address, 1, state)


def config_objects(bgp: bool) -> list[tuple[int, k8s.Obj]]:
    """(index of the ConfigSource reflector, object); `bgp`: also a BGPAdvertisement of the
    pool and two BGPPeers (no session runs: the routes are planned and indexed, not sent)."""
    pool = {"metadata": _meta("bench", NS, 1), "spec": {"addresses": [str(NETWORK)]}}
    adv = {"metadata": _meta("bench", NS, 1), "spec": {"ipAddressPools": ["bench"]}}
    objects = [(0, pool), (1, adv)]
    if bgp:
        objects.append(
            (2, {"metadata": _meta("bench", NS, 1), "spec": {"ipAddressPools": ["bench"]}})
        )
        for name, address in (("r1", "198.18.0.1"), ("r2", "198.18.0.2")):
            spec = {"myASN": 64510, "peerASN": 64500, "peerAddress": address}
            objects.append((3, {"metadata": _meta(name, NS, 1), "spec": spec}))
    return objects


async def _after_event(speaker: node_speaker.Speaker) -> None:
    """What runs after an event: the plan, then each status writer's comparison."""
    await speaker.plan_once()
    for writer in (speaker.l2_status, speaker.bgp_status):
        if writer._dirty.is_set():
            writer._dirty.clear()
            await writer._reconcile()


async def _speaker(
    n: int, bgp: bool, nodes: tuple[str, ...], every_node: bool
) -> tuple[node_speaker.Speaker, _CountingClient]:
    """A speaker with n Services, after its first (full) plan."""
    settings = speaker_settings.Settings(node_name="node-1", namespace=NS)
    client = _CountingClient()
    speaker = node_speaker.Speaker(client, settings)  # type: ignore[arg-type]
    for index, obj in config_objects(bgp):
        speaker.config.reflectors[index]._apply(_event("ADDED", obj))
    for i, name in enumerate(nodes):
        speaker.nodes._apply(_event("ADDED", node(name, i)))
    hosts = NETWORK.hosts()
    for i in range(n):
        speaker.services._apply(_event("ADDED", service(i, str(next(hosts)))))
        speaker.slices._apply(_event("ADDED", endpoint_slice(i, 1, True, nodes, every_node)))
    await _after_event(speaker)
    return speaker, client


async def measure(n: int, events: int, bgp: bool = False) -> tuple[list[float], int]:
    """CPU seconds per Service event, and the status writes the events made."""
    speaker, client = await _speaker(n, bgp, NODES, every_node=False)
    writes = client.writes
    samples = []
    for e in range(events):
        i = (e * 7919) % n  # spread over the Services
        ready = e % 2 == 1
        speaker.slices._apply(_event("MODIFIED", endpoint_slice(i, 2 + e, ready)))
        speaker.dirty.clear()
        start = time.process_time()
        await _after_event(speaker)
        samples.append(time.process_time() - start)
    return samples, client.writes - writes


async def measure_membership(
    n: int, events: int, nodes: tuple[str, ...], bgp: bool = False
) -> tuple[list[float], int]:
    """CPU seconds per membership change (a member other than node-1 dies or comes back, in
    turn), and how many addresses changed owner in all."""
    speaker, _client = await _speaker(n, bgp, nodes, every_node=True)
    members = _Members(nodes)
    speaker.members = members  # type: ignore[assignment]
    await _after_event(speaker)  # liveness now from membership
    samples, moved = [], 0
    for e in range(events):
        i = 1 + (e // 2) % (len(nodes) - 1)
        state = states.MemberState.DEAD if e % 2 == 0 else states.MemberState.ALIVE
        member = members.members[election.NodeName(nodes[i])] = _member(nodes[i], i, state)
        owners = {ip: a.owner for ip, a in speaker._l2_plan.items()}
        speaker._member_event(
            member_model.MemberDown(member) if e % 2 == 0 else member_model.MemberUp(member)
        )
        speaker.dirty.clear()
        start = time.process_time()
        await _after_event(speaker)
        samples.append(time.process_time() - start)
        moved += sum(1 for ip, a in speaker._l2_plan.items() if owners.get(ip) != a.owner)
    return samples, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 000 Services, 20 events")
    parser.add_argument("--services", type=int, default=None)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--bgp", action="store_true", help="also advertise every address to two BGPPeers"
    )
    parser.add_argument(
        "--nodes", type=int, default=3, help="Nodes (members) for the membership changes"
    )
    args = parser.parse_args()
    n = args.services or (1000 if args.quick else 10_000)
    events = args.events or (20 if args.quick else 50)
    logging.basicConfig(level=logging.WARNING)
    nodes = tuple(f"node-{i}" for i in range(1, max(2, args.nodes) + 1))
    member_samples, moved = asyncio.run(measure_membership(n, events, nodes, args.bgp))
    print(
        f"{n} Services, {len(nodes)} nodes, {len(member_samples)} membership changes (a node"
        f" dies or comes back): CPU per change {_figures(member_samples)}; {moved} owner changes"
    )
    samples, writes = asyncio.run(measure(n, events, args.bgp))
    print(
        f"{n} Services{' (BGP too)' if args.bgp else ''}, {len(samples)} events:"
        f" CPU per event {_figures(samples)} (no timeouts: nothing here waits);"
        f" {writes} status writes"
    )
    print(f"speaker_plan_ms_per_event: {statistics.median(samples) * 1000:.2f} ms")


def _figures(seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (
        f"median {statistics.median(ms):.2f} ms, p90 {common.pct(ms, 0.9):.2f} ms,"
        f" p99 {common.pct(ms, 0.99):.2f} ms, max {max(ms):.2f} ms"
    )


if __name__ == "__main__":
    main()
