"""Forged membership packets at running speakers (process lab): none is accepted, nothing moves.

Three node namespaces each run a speaker; the controller and the real API server run on the
control-plane host; a stranger host on the LAN sends what an attacker without the key could:
packets with no tag, packets signed with a wrong key, truncated packets, and real packets
captured on the wire (at node-1's interface, on their way to node-2), replayed unchanged to
node-2 again and to node-3. "Not accepted" is read from the receiving speaker's own drop
counters (`ironlb_membership_dropped_packets_total{reason=...}`): each forged packet must be
counted, under its reason, exactly once. Meanwhile the Service's owner keeps answering ARP and
every speaker keeps seeing all three members alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from ironlb.core import election
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, topology
from ironlb.membership import states, transport, wire
from support import kube

pytestmark = pytest.mark.e2e

NODES = (1, 2, 3)
MODULE = "test_membership_chaos"
POOL = kube.pool("chaos-member", "198.18.0.184/30", module=MODULE)
ADVERTISEMENT = {
    "apiVersion": "metallb.io/v1beta1",
    "kind": "L2Advertisement",
    "metadata": {"name": "chaos-member", "namespace": kube.CONFIG_NS},
    "spec": {"ipAddressPools": ["chaos-member"]},
}
PORT = transport.DEFAULT_PORT
ETH_P_ALL = 0x0003
DROPPED = "ironlb_membership_dropped_packets_total"
CAPTURED = 12
"""Packets of node-1 to node-2 to capture and replay."""
ROUNDS = 3
"""Times the whole barrage is sent, a second apart (the speaker's view is checked after each)."""


@dataclass
class MemberLab:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    client: topology.Host
    stranger: topology.Host
    speakers: dict[int, components.Process] = field(default_factory=dict)
    others: list[components.Process] = field(default_factory=list)

    def arp_owner(self, ip: str) -> set[str]:
        """Every node name that answers ARP for `ip` (a MAC that is no node's as itself)."""
        macs = self.client.ns.arping_all(ip, self.client.dev, count=2, timeout=0.5)
        names = {f"node-{i}": h.mac for i, h in self.hosts.items()}
        return {next((n for n, m in names.items() if m == mac), mac) for mac in macs}

    def dropped(self, index: int, reason: wire.DropReason) -> float:
        return self.speakers[index].metric(DROPPED, f'reason="{reason}"') or 0.0

    def members(self, index: int, state: states.MemberState) -> float:
        return (
            self.speakers[index].metric("ironlb_membership_members", f'state="{state.value}"')
            or 0.0
        )


@pytest.fixture(scope="module")
def memberlab(cluster: lab_cluster.Cluster) -> Iterator[MemberLab]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    lab = MemberLab(cluster, hosts, cluster.lab.add_client(), cluster.lab.add_stranger())
    try:
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
        lab.others.append(components.start_controller(cluster))
        kube.apply(cluster, POOL, ADVERTISEMENT)
        for i in NODES:
            lab.speakers[i] = components.start_speaker(cluster, i, wait=False)
        for proc in lab.speakers.values():
            proc.wait_ready(timeout=60)
        yield lab
    finally:
        for proc in [*lab.speakers.values(), *lab.others]:
            proc.kill()
        for kind, name in (("ipaddresspool", "chaos-member"), ("l2advertisement", "chaos-member")):
            cluster.kubectl("delete", kind, name, "-n", kube.CONFIG_NS, "--ignore-not-found")
        components.uninstall_webhook(cluster)
        for role in ("client", "stranger", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


def capture(host: topology.Host, destination: str, count: int, within: float = 10.0) -> list[bytes]:
    """The UDP payloads of the next `count` membership packets `host` sends to `destination`,
    as seen on its LAN interface (what anyone on the path could record)."""
    found: list[bytes] = []
    wanted = ipaddress.IPv4Address(destination).packed
    deadline = time.monotonic() + within
    with (
        netns.entered(host.ns.name),
        # Only ETH_P_ALL sockets see what the host sends.
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock,
    ):
        sock.bind((host.dev, 0))
        sock.settimeout(0.2)
        while len(found) < count and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                frame, (_, _, pkttype, _, _) = sock.recvfrom(65535)
                if pkttype != socket.PACKET_OUTGOING:
                    continue
                if frame[12:14] != b"\x08\x00":
                    continue
                ip = frame[14:]
                header = (ip[0] & 0x0F) * 4
                if ip[9] != socket.IPPROTO_UDP or ip[16:20] != wanted:
                    continue
                (dport,) = struct.unpack_from("!H", ip, header + 2)
                if dport == PORT:
                    found.append(bytes(ip[header + 8 :]))
    return found


def send(host: topology.Host, destination: str, payloads: list[bytes]) -> None:
    """Each payload once, as a UDP datagram from `host` to `destination`'s membership port."""
    with (
        netns.entered(host.ns.name),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
    ):
        for payload in payloads:
            sock.sendto(payload, (destination, PORT))
            time.sleep(0.002)  # a barrage, not a flood: every datagram must reach the speaker


def forged_with(key: bytes, sequence: int) -> bytes:
    """node-1 telling node-3 that node-2 is dead, signed with `key` (not the cluster's)."""
    dead = wire.Update(election.NodeName("node-2"), states.MemberState.DEAD, 2**31)
    packet = wire.Packet(
        election.NodeName("node-1"), election.NodeName("node-3"), sequence, wire.Gossip(), (dead,)
    )
    return wire.encode(packet, key)


async def test_forged_membership_packets_are_all_dropped_and_nothing_moves(
    memberlab: MemberLab, admin: k8s.Client, namespace: str
) -> None:
    lab = memberlab
    started = time.monotonic()
    await admin.create(k8s.SERVICES, kube.service("guarded"), namespace)
    components.endpoints(lab.cluster, namespace, "guarded", [f"node-{i}" for i in NODES])
    (ip,) = await kube.eventually(lambda: kube.ingress(admin, namespace, "guarded"))
    owner = election.announcer_for(
        ipaddress.ip_address(ip), [election.NodeName(f"node-{i}") for i in NODES]
    )
    await kube.eventually(
        lambda: lab.arp_owner(ip) == {owner}, blocking=True, what=f"{owner} answering {ip}"
    )
    for i in NODES:
        await kube.eventually(
            lambda i=i: lab.members(i, states.MemberState.ALIVE) == len(NODES),
            blocking=True,
            what=f"node-{i} seeing every member alive",
        )
    captured = await asyncio.to_thread(capture, lab.hosts[1], lab.hosts[2].ipv4, CAPTURED)
    assert len(captured) == CAPTURED
    assert {p[2] for p in captured} == {wire.VERSION}

    untagged = [p[: -wire.TAG_SIZE] + bytes(wire.TAG_SIZE) for p in captured]
    wrong_key = [forged_with(b"not-the-cluster-key-0123456789", 2**62 + n) for n in range(4)]
    short = [p[:n] for p in captured[:4] for n in (0, 3, 12, 27)]  # below a minimal packet
    cut = [p[: len(p) - n] for p in captured[:4] for n in (1, wire.TAG_SIZE)]
    sent = {
        (2, wire.DropReason.REPLAYED): captured,  # again to the member it was for
        (3, wire.DropReason.WRONG_RECIPIENT): captured,  # to another member
        (3, wire.DropReason.BAD_MAC): untagged + wrong_key + cut,
        (3, wire.DropReason.BAD_LENGTH): short,
    }
    before = {(i, reason): lab.dropped(i, reason) for i, reason in sent}
    for _ in range(ROUNDS):
        for (i, _reason), payloads in sent.items():
            await asyncio.to_thread(send, lab.stranger, lab.hosts[i].ipv4, payloads)
        await asyncio.sleep(1.0)
        assert lab.arp_owner(ip) == {owner}
        for i in NODES:
            assert lab.members(i, states.MemberState.ALIVE) == len(NODES), f"node-{i}"
            assert lab.speakers[i].metric("ironlb_membership_isolated_bool") == 0, f"node-{i}"

    counted = {key: lab.dropped(*key) - value for key, value in before.items()}
    expected = {key: float(ROUNDS * len(payloads)) for key, payloads in sent.items()}
    assert counted == expected
    assert all(p.alive for p in lab.speakers.values())
    print(
        f"{sum(expected.values()):.0f} forged packets to node-2 and node-3, all dropped "
        f"({', '.join(f'node-{i} {r}: {n:.0f}' for (i, r), n in counted.items())}); "
        f"{owner} kept {ip}; {time.monotonic() - started:.1f} s"
    )
