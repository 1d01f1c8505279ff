"""The speaker under faults, end to end (process lab): an API server that stops answering, a
port another daemon holds, a membership key that appears late, a hostile host on the LAN.
Three node namespaces each run a speaker as its node, beside the controller, the real API
server, a LAN client and a stranger host; each node's backend answers with the node's name."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from ironlb.core import election
from ironlb.k8s import client as k8s
from ironlb.l2 import ethernet, frames
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, topology
from support import kube, traffic

pytestmark = pytest.mark.e2e

NODES = (1, 2, 3)
MODULE = "test_speaker_faults"
POOL = kube.pool("faults", "198.18.0.240/29", module=MODULE)
ADVERTISEMENT = {
    "apiVersion": "metallb.io/v1beta1",
    "kind": "L2Advertisement",
    "metadata": {"name": "faults", "namespace": kube.CONFIG_NS},
    "spec": {"ipAddressPools": ["faults"]},
}
FAILOVER = 1.5
"""Seconds within which survivors must take over (membership detects in ~0.7 s by default)."""


@dataclass
class Faults:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    client: topology.Host
    stranger: topology.Host
    speakers: dict[int, components.Process] = field(default_factory=dict)
    others: list[components.Process] = field(default_factory=list)

    def node_of(self, mac: str | None) -> str | None:
        return next((f"node-{i}" for i, h in self.hosts.items() if h.mac == mac), None)

    def arp_owner(self, ip: str) -> str | None:
        self.client.ns.run("ip", "neigh", "flush", "all", check=False)
        return self.node_of(self.client.ns.arping(ip, "eth0", count=2, timeout=1))

    def arp_owner_becomes(self, ip: str, expected: str | None, within: float = 5.0) -> str | None:
        deadline = time.monotonic() + within
        while (found := self.arp_owner(ip)) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return found

    def start_speakers(self, indexes: tuple[int, ...] = NODES, extra: tuple[str, ...] = ()) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(self.cluster, i, extra=extra, wait=False)
        for i in indexes:
            self.speakers[i].wait_ready()

    def stop_speakers(self) -> None:
        for proc in self.speakers.values():
            proc.stop()
        self.speakers.clear()

    def restart_speakers(self, extra: tuple[str, ...] = ()) -> None:
        self.stop_speakers()
        self.start_speakers(extra=extra)


@pytest.fixture(scope="module")
def faults(cluster: lab_cluster.Cluster) -> Iterator[Faults]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    lab = Faults(cluster, hosts, cluster.lab.add_client(), cluster.lab.add_stranger())
    try:
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
            lab.others.append(components.start_backend(cluster, host))
        lab.others.append(components.start_controller(cluster))
        kube.apply(cluster, POOL, ADVERTISEMENT)
        lab.start_speakers()
        yield lab
    finally:
        for proc in [*lab.speakers.values(), *lab.others]:
            proc.kill()
        for kind, name in (("ipaddresspool", "faults"), ("l2advertisement", "faults")):
            cluster.kubectl("delete", kind, name, "-n", kube.CONFIG_NS, "--ignore-not-found")
        components.uninstall_webhook(cluster)
        for role in ("client", "stranger", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


@pytest.fixture
async def fresh(faults: Faults) -> AsyncIterator[Faults]:
    """The module's lab, with every node up and the default speakers running afterwards."""
    yield faults
    for i, host in faults.hosts.items():
        host.ns.ip("link", "set", "eth0", "up")
        if i not in faults.speakers or not faults.speakers[i].alive:
            faults.speakers.pop(i, None)
    faults.restart_speakers()


def winner(ip: str, nodes: tuple[int, ...] = NODES) -> str:
    owner = election.announcer_for(
        ipaddress.ip_address(ip), [election.NodeName(f"node-{i}") for i in nodes]
    )
    assert owner is not None
    return owner


def others(node: str) -> tuple[int, ...]:
    return tuple(i for i in NODES if f"node-{i}" != node)


async def lb_service(admin: k8s.Client, lab: Faults, namespace: str, name: str) -> str:
    await admin.create(k8s.SERVICES, kube.service(name), namespace)
    components.endpoints(lab.cluster, namespace, name, [f"node-{i}" for i in NODES])
    (ip,) = await kube.eventually(lambda: kube.ingress(admin, namespace, name))
    return ip


async def kill_owner_and_measure(lab: Faults, ip: str, owner: str) -> tuple[float | None, str]:
    """SIGKILL the owner's speaker and take its link down (a node dying) while a client sends
    requests; seconds from the last request the owner answered to the first the survivor
    answered (None if it never did), and the timeline of answers."""
    index = int(owner[-1])
    stream = traffic.Stream(lab.client.ns.name, ip, count=500, interval=0.01).start()
    try:
        await asyncio.sleep(0.3)
        lab.speakers.pop(index).kill()
        lab.hosts[index].ns.ip("link", "set", "eth0", "down")
        new = winner(ip, others(owner))
        await asyncio.to_thread(topology.answer, lab.client, ip, 4.0)
    finally:
        stream.stop()
    timeline = ", ".join(sorted({str(b) for b in stream.answered_by()}))
    return stream.failover(owner, new), timeline


async def lb_service_at(
    admin: k8s.Client, lab: Faults, namespace: str, name: str, node: str
) -> str:
    """A Service whose address (from the module's pool) `node` wins among all nodes."""
    ip = next(
        a for n in range(240, 248) if winner(a := f"198.18.0.{n}") == node and not used(lab, a)
    )
    annotations = {"metallb.io/loadBalancerIPs": ip}
    await admin.create(k8s.SERVICES, kube.service(name, annotations=annotations), namespace)
    components.endpoints(lab.cluster, namespace, name, [f"node-{i}" for i in NODES])
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, name)) == [ip]
    return ip


def used(lab: Faults, ip: str) -> bool:
    out = lab.cluster.kubectl("get", "services", "-A", "-o", "json")
    return any(
        i.get("ip") == ip
        for svc in json.loads(out)["items"]
        for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    )


async def condition(admin: k8s.Client, node: str, type_: str) -> dict[str, str] | None:
    """One condition of a speaker's ConfigurationState, or None."""
    try:
        state = await admin.get(k8s.CONFIGURATION_STATES, f"speaker-{node}", kube.CONFIG_NS)
    except k8s.ApiError:
        return None
    found = [c for c in (state.get("status") or {}).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else None


async def listen_failures(admin: k8s.Client, node: str) -> list[str]:
    """Notes of the BGPListenFailed Events about Node `node` (cluster-scoped: in "default")."""
    items, _ = await admin.list_all(k8s.EVENTS, "default")
    return [
        e.get("note", "")
        for e in items
        if e.get("reason") == "BGPListenFailed" and (e.get("regarding") or {}).get("name") == node
    ]


@contextlib.contextmanager
def port_taken(host: topology.Host, port: int = 179) -> Iterator[None]:
    """Another daemon (Calico's BIRD, kube-router, a host FRR) listening on `port` of every
    address of the node."""
    sock = netns.socket_factory(host.ns.name)(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("0.0.0.0", port))
        sock.listen()
        yield
    finally:
        sock.close()


def speaker_role_without_configurationstates(cluster: lab_cluster.Cluster) -> None:
    role = json.loads(
        cluster.kubectl("get", "role", "ironlb-speaker", "-n", kube.CONFIG_NS, "-o", "json")
    )
    role["rules"] = [r for r in role["rules"] if "configurationstates" not in r["resources"]]
    role["metadata"] = {"name": "ironlb-speaker", "namespace": kube.CONFIG_NS}
    cluster.kubectl("replace", "-f", "-", stdin=json.dumps(role))


def restore_speaker_rbac(cluster: lab_cluster.Cluster) -> None:
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(lab_cluster.DEPLOY / "rbac")
    )


# --- defect 1: nothing on the failover path waits for the API server ----------------------------


async def test_survivors_take_over_while_the_api_server_is_stopped(
    fresh: Faults, admin: k8s.Client, namespace: str
) -> None:
    lab = fresh
    ip = await lb_service(admin, lab, namespace, "apistop")
    owner = winner(ip)
    assert lab.arp_owner_becomes(ip, owner) == owner
    # Speakers whose ConfigurationState write failed have one pending when the API server
    # stops (here: a Role without the right, so the very first write fails).
    speaker_role_without_configurationstates(lab.cluster)
    try:
        lab.restart_speakers()
        for proc in lab.speakers.values():
            await kube.eventually(
                lambda p=proc: "could not write ConfigurationState" in p.log_text(),
                what=f"{proc.name} failing to write its ConfigurationState",
            )
        assert lab.arp_owner_becomes(ip, owner) == owner
        with lab.cluster.control_plane.paused():
            gap, timeline = await kill_owner_and_measure(lab, ip, owner)
    finally:
        restore_speaker_rbac(lab.cluster)
    assert gap is not None, f"nobody took over from {owner}: answers {timeline}"
    assert gap < FAILOVER, f"failover took {gap:.3f} s"
    print(f"failover with the API server stopped: {gap * 1000:.0f} ms")


# --- defect 3: TCP 179 only when a peer needs it; taken -> reported, layer 2 goes on -----------


async def test_a_node_whose_bgp_port_is_taken_keeps_announcing_layer2(
    fresh: Faults, admin: k8s.Client, namespace: str
) -> None:
    lab = fresh
    peer = {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "faults-router", "namespace": kube.CONFIG_NS},
        "spec": {
            "myASN": 64512,
            "peerASN": 64513,
            "peerAddress": "198.18.0.1",
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}],
        },
    }
    lab.speakers.pop(1).stop()
    with port_taken(lab.hosts[1]):
        # No BGPPeer: a layer-2 node never touches the port.
        lab.start_speakers((1,))
        ip = await lb_service_at(admin, lab, namespace, "portless", "node-1")
        assert lab.arp_owner_becomes(ip, "node-1") == "node-1"
        # A BGPPeer selects the node: the port is taken, which is said, and nothing stops.
        kube.apply(lab.cluster, peer)
        try:
            speaker = lab.speakers[1]
            await kube.eventually(
                lambda: speaker.metric("ironlb_bgp_listen_failed_bool") == 1,
                blocking=True,
                what="ironlb_bgp_listen_failed_bool == 1",
            )
            found = await kube.eventually(lambda: condition(admin, "node-1", "bgpPortAvailable"))
            assert found["status"] == "False"
            assert "port 179" in found["message"]
            notes = await kube.eventually(lambda: listen_failures(admin, "node-1"))
            assert "Address already in use" in notes[0]
            assert speaker.alive
            assert lab.arp_owner_becomes(ip, "node-1") == "node-1"
            assert "Traceback" not in speaker.log_text()
        finally:
            lab.cluster.kubectl(
                "delete", "bgppeer", "faults-router", "-n", kube.CONFIG_NS, "--ignore-not-found"
            )


# --- defect 4: membership starts when its Secret appears -----------------------------------------


async def test_membership_starts_when_its_secret_appears_without_a_restart(
    fresh: Faults, admin: k8s.Client, namespace: str
) -> None:
    lab = fresh
    secret = f"late-{uuid.uuid4().hex[:8]}"
    lab.restart_speakers(extra=(f"--membership-secret={secret}",))
    ip = await lb_service(admin, lab, namespace, "late-key")
    owner = winner(ip)
    assert lab.arp_owner_becomes(ip, owner) == owner
    # Until the Secret exists, the speakers say that failover is slow.
    missing = {i: p.metric("ironlb_membership_key_missing_bool") for i, p in lab.speakers.items()}
    before = await condition(admin, owner, "membershipReady")
    try:
        components.membership_secret(lab.cluster, name=secret)
        for proc in lab.speakers.values():
            await kube.eventually(
                lambda p=proc: (p.metric("ironlb_membership_members", 'state="alive"') or 0) >= 2,
                blocking=True,
                what=f"{proc.name} meeting its peers",
            )
        assert lab.arp_owner_becomes(ip, owner) == owner
        gap, timeline = await kill_owner_and_measure(lab, ip, owner)
        assert gap is not None, f"nobody took over from {owner}: answers {timeline}"
        assert gap < FAILOVER, f"failover took {gap:.3f} s"
        print(f"failover once the membership Secret appeared: {gap * 1000:.0f} ms")
    finally:
        lab.cluster.kubectl("delete", "secret", secret, "-n", kube.CONFIG_NS, "--ignore-not-found")
    assert missing == {i: 1 for i in NODES}
    assert before is not None
    assert before["status"] == "False"
    assert secret in before["message"]
    survivor = winner(ip, others(owner))
    after = await kube.eventually(lambda: condition(admin, survivor, "membershipReady"))
    assert await kube.eventually(lambda: _status_is(admin, survivor, "membershipReady", "True")), (
        after
    )


async def _status_is(admin: k8s.Client, node: str, type_: str, status: str) -> bool:
    found = await condition(admin, node, type_)
    return found is not None and found["status"] == status


# --- defect 5: a flood of forged claims makes a bounded number of Events ------------------------

FORGED = 1500


def send_forged_claims(host: topology.Host, ip: str, count: int) -> None:
    """`count` gratuitous ARP replies claiming `ip`, each from a different (local) MAC, sent
    once each from `host`'s LAN interface."""
    target = ipaddress.IPv4Address(ip)
    with (
        netns.entered(host.ns.name),
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock,
    ):
        sock.bind((host.dev, 0))
        for n in range(count):
            mac = ethernet.MacAddress(bytes([0x02, 0x66, 0x00, 0x00, n >> 8, n & 0xFF]))
            sock.send(frames.gratuitous_arp_reply(mac, target))


async def test_a_flood_of_forged_claims_writes_a_bounded_number_of_events(
    fresh: Faults, admin: k8s.Client, namespace: str
) -> None:
    lab = fresh
    ip = await lb_service(admin, lab, namespace, "flooded")
    owner = winner(ip)
    assert lab.arp_owner_becomes(ip, owner) == owner
    speaker = lab.speakers[int(owner[-1])]
    counted = speaker.metric("ironlb_layer2_conflicts_total") or 0.0
    await asyncio.to_thread(send_forged_claims, lab.stranger, ip, FORGED)
    # Every claim that reached the node is still detected and counted.
    # (Some frames of the burst may overflow the socket's buffer: the kernel drops them.)
    await kube.eventually(
        lambda: (speaker.metric("ironlb_layer2_conflicts_total") or 0.0) >= counted + 100,
        blocking=True,
        what="the forged claims counted",
    )
    await asyncio.sleep(3.0)  # what the recorder would write, it has written by now
    items, _ = await admin.list_all(k8s.EVENTS, namespace)
    conflicts = [e for e in items if e.get("reason") == "AddressConflict"]
    occurrences = sum((e.get("series") or {}).get("count", 1) for e in conflicts)
    assert 1 <= len(conflicts) <= 5, len(conflicts)
    assert occurrences <= 5, occurrences
    claims = (speaker.metric("ironlb_layer2_conflicts_total") or 0.0) - counted
    suppressed = speaker.metric("ironlb_layer2_conflict_events_suppressed_total") or 0.0
    assert suppressed >= claims - len(conflicts), (claims, suppressed)
    print(
        f"{claims:.0f} forged claims counted: {len(conflicts)} Events, {suppressed:.0f} suppressed"
    )
    assert speaker.alive
