"""Layer-2 chaos: partitions, frame loss, a starved speaker and Service churn, in the lab.

Three node namespaces each run a speaker and a backend, the controller and the real API server
run on the control-plane host. Ownership is recorded from OUTSIDE ironlb: a LAN client asks "who
has <address>?" every 20 ms and keeps every answer with its MAC (`support.ownership`), so two
answering nodes are never hidden behind the first.

Limits are generous on purpose (the machine is shared): FAILOVER_LIMIT bounds "the address
moved", not how fast; speed is measured by `bench/lossy_failover.py` and `bench/l2_failover.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, faults, topology
from support import kube, ownership

pytestmark = pytest.mark.e2e

NODES = (1, 2, 3)
MODULE = "test_l2_chaos"
CONFIG = [
    kube.pool("chaos-l2", "198.18.0.248/30", module=MODULE),
    {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "chaos-l2", "namespace": kube.CONFIG_NS},
        "spec": {"ipAddressPools": ["chaos-l2"]},
    },
]
FAILOVER_LIMIT = 3.0
"""Seconds within which a dead or cut-off owner's addresses must be answered by another node
(the design's figure is ~0.4 s; this only proves that failover happens)."""
SETTLE = 2.5
"""Seconds after a partition heals until exactly one node may answer (detection, refutation
and the returning node's release, several times over)."""


@dataclass
class ChaosLab:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    client: topology.Host
    speakers: dict[int, components.Process] = field(default_factory=dict)
    others: list[components.Process] = field(default_factory=list)

    def index_of(self, mac: str) -> int:
        return next(i for i, h in self.hosts.items() if h.mac == mac)

    def start_speakers(self, indexes: tuple[int, ...] = NODES) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(self.cluster, i, wait=False)
        for i in indexes:
            self.speakers[i].wait_ready(timeout=60)

    def recorder(self, ips: list[str]) -> ownership.ArpRecorder:
        c = self.client
        return ownership.ArpRecorder(c.ns.name, c.dev, c.mac, c.ipv4, ips, duration=300)

    def kill_node(self, index: int) -> None:
        self.speakers.pop(index).kill()
        self.hosts[index].ns.ip("link", "set", "eth0", "down")

    def revive_node(self, index: int) -> None:
        self.hosts[index].ns.ip("link", "set", "eth0", "up")
        self.start_speakers((index,))


@pytest.fixture(scope="module")
def chaos(cluster: lab_cluster.Cluster) -> Iterator[ChaosLab]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    lab = ChaosLab(cluster, hosts, cluster.lab.add_client())
    try:
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
            lab.others.append(components.start_backend(cluster, host))
        lab.others.append(components.start_controller(cluster))
        kube.apply(cluster, *CONFIG)
        lab.start_speakers()
        yield lab
    finally:
        for proc in [*lab.speakers.values(), *lab.others]:
            proc.kill()
        for host in hosts.values():
            with contextlib.suppress(Exception):
                faults.clear(host.ns)
        for doc in CONFIG:
            cluster.kubectl(
                "delete",
                doc["kind"].lower(),
                doc["metadata"]["name"],
                "-n",
                kube.CONFIG_NS,
                "--ignore-not-found",
            )
        components.uninstall_webhook(cluster)
        for role in ("client", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


@pytest.fixture
async def namespace(admin: k8s.Client, namespace: str) -> AsyncIterator[str]:
    """The test's namespace, its Services deleted afterwards (the pool has four addresses)."""
    yield namespace
    items, _ = await admin.list_all(k8s.SERVICES, namespace)
    for item in items:
        await admin.delete(k8s.SERVICES, item["metadata"]["name"], namespace)


async def make_services(
    admin: k8s.Client, chaos: ChaosLab, namespace: str, count: int
) -> dict[str, str]:
    """`count` Services served by every node: name -> its IPv4 address."""
    ips = {}
    for n in range(count):
        name = f"svc-{n}"
        await admin.create(k8s.SERVICES, kube.service(name), namespace)
        components.endpoints(chaos.cluster, namespace, name, [f"node-{i}" for i in NODES])
    for n in range(count):
        name = f"svc-{n}"
        found = await kube.eventually(lambda name=name: kube.ingress(admin, namespace, name))
        ips[name] = found[0]
    return ips


async def stable_owners(
    rec: ownership.ArpRecorder, ips: list[str], within: float = 20.0
) -> dict[str, str]:
    """ip -> the one MAC that gave every answer for it during the last second."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        recent = rec.snapshot(time.monotonic() - 1.0)
        owners = {ip: {a.mac for a in recent if a.ip == ip} for ip in ips}
        if all(len(macs) == 1 for macs in owners.values()):
            return {ip: macs.pop() for ip, macs in owners.items()}
    raise AssertionError(f"no stable owners: {owners}")


def first_answer_from_another(
    rec: ownership.ArpRecorder, ip: str, old_mac: str, since: float, within: float
) -> float | None:
    """Seconds from `since` to the first answer for `ip` by a MAC other than `old_mac`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        new = [a for a in rec.snapshot(since) if a.ip == ip and a.mac != old_mac]
        if new:
            return new[0].at - since
        time.sleep(0.05)
    return None


async def test_a_partitioned_owner_loses_its_addresses_and_healing_leaves_one_owner(
    chaos: ChaosLab, admin: k8s.Client, namespace: str
) -> None:
    ips = await make_services(admin, chaos, namespace, 3)
    with ownership.recording(chaos.recorder(list(ips.values()))) as rec:
        owners = await stable_owners(rec, list(ips.values()))
        victim_mac = owners[ips["svc-0"]]
        victim = chaos.index_of(victim_mac)
        moved = [ip for ip, mac in owners.items() if mac == victim_mac]
        kept = [ip for ip, mac in owners.items() if mac != victim_mac]
        cut_at = time.monotonic()
        with faults.partitioned(chaos.hosts[victim].ns):
            for ip in moved:
                took = first_answer_from_another(rec, ip, victim_mac, cut_at, FAILOVER_LIMIT)
                assert took is not None, f"{ip} was not taken over within {FAILOVER_LIMIT} s"
            await asyncio.sleep(max(0.0, cut_at + 10.0 - time.monotonic()))
            during = rec.snapshot(cut_at)
            assert faults.dropped(chaos.hosts[victim].ns) > 0  # the partition was real
        healed_at = time.monotonic()
        # While cut off, nothing of the victim reached the LAN (answers are stamped when the
        # recorder's thread reads them: one sent just before the cut may be read late on a busy
        # machine); the others' addresses never moved and never went unanswered for long.
        assert not [a for a in during if a.mac == victim_mac and a.at > cut_at + 0.5]
        for ip in kept:
            assert ownership.owner_changes(during, ip) == []
            assert ownership.longest_silence(during, ip, cut_at, healed_at) < 0.5
        await asyncio.sleep(SETTLE + 4.0)
        after = rec.snapshot(healed_at + SETTLE)
    for ip in ips.values():
        macs = {a.mac for a in after if a.ip == ip}
        assert len(macs) == 1, f"{ip}: {len(macs)} owners after healing: {macs}"
        assert ownership.longest_silence(after, ip, healed_at + SETTLE, after[-1].at) < 0.5


async def _churn(
    admin: k8s.Client, namespace: str, names: list[str], rate: float, duration: float
) -> int:
    """`rate` Service updates per second (an annotation), for `duration` seconds; returns how
    many were written."""
    written = 0
    start = time.monotonic()
    total = int(rate * duration)
    for n in range(total):
        name = names[n % len(names)]
        patch = {"metadata": {"annotations": {"chaos.ironlb.io/churn": str(n)}}}
        await admin.patch(k8s.SERVICES, name, patch, namespace)
        written += 1
        await asyncio.sleep(max(0.0, start + (n + 1) / rate - time.monotonic()))
    return written


@pytest.mark.parametrize(
    ("loss", "millicores", "seconds"),
    [(10.0, None, 20.0), (0.0, 50, 20.0), (30.0, None, 30.0)],
    ids=["10pct-loss", "50m-cpu", "30pct-loss"],
)
async def test_loss_a_starved_speaker_and_churn_move_nothing_and_failover_still_works(
    chaos: ChaosLab,
    admin: k8s.Client,
    namespace: str,
    loss: float,
    millicores: int | None,
    seconds: float,
) -> None:
    """20 Service updates a second under frame loss on every node, or with the owner's speaker
    held to 50 m of CPU: no address moves. Not here, because it does not hold yet: loss AND a
    50 m speaker together (in three 40 s runs at each of 30 % and 10 %, nothing moved, but the
    starved owner once left an address unanswered for 1.01 s)."""
    ips = await make_services(admin, chaos, namespace, 3)
    nss = [h.ns for h in chaos.hosts.values()]
    with ownership.recording(chaos.recorder(list(ips.values()))) as rec:
        owners = await stable_owners(rec, list(ips.values()))
        starved_mac = owners[ips["svc-0"]]
        starved = chaos.index_of(starved_mac)
        pid = chaos.speakers[starved].proc.pid
        pids = [pid] if millicores else []
        with (
            faults.frame_loss(nss, loss),
            faults.cpu_limited(
                chaos.cluster.lab.prefix, "speaker", pids, millicores or 1000
            ) as group,
        ):
            start = time.monotonic()
            written = await _churn(admin, namespace, list(ips), 20.0, seconds)
            end = time.monotonic()
            window = rec.snapshot(start)
            dropped = sum(faults.dropped(ns) for ns in nss)
            throttled = faults.throttled_seconds(group)
            assert written == int(20.0 * seconds)
            assert dropped > 0 or not loss  # the loss was real
            assert throttled > 0 or not millicores  # and so was the CPU limit
            for ip in ips.values():
                moves = ownership.owner_changes(window, ip)
                assert moves == [], f"{ip} moved {len(moves)} times with no node dead"
                assert not ownership.double_owners(window, ip, 0.1)
                assert ownership.longest_silence(window, ip, start, end) < 1.0
            # A real death, still under loss: the starved node's addresses move.
            killed_at = time.monotonic()
            chaos.kill_node(starved)
            try:
                for ip, mac in owners.items():
                    if mac != starved_mac:
                        continue
                    took = first_answer_from_another(rec, ip, mac, killed_at, FAILOVER_LIMIT)
                    assert took is not None, f"{ip} not taken over within {FAILOVER_LIMIT} s"
            finally:
                chaos.revive_node(starved)


async def test_api_server_stopped_then_killed_moves_nothing_and_failover_still_works(
    chaos: ChaosLab, admin: k8s.Client, namespace: str
) -> None:
    ips = await make_services(admin, chaos, namespace, 3)
    control = chaos.cluster.control_plane
    with ownership.recording(chaos.recorder(list(ips.values()))) as rec:
        owners = await stable_owners(rec, list(ips.values()))
        victim_mac = owners[ips["svc-0"]]
        victim = chaos.index_of(victim_mac)
        start = time.monotonic()
        with control.paused("kube-apiserver"), control.paused("etcd"):
            # 30 s without an API server: everything stays announced where it was...
            await asyncio.sleep(20.0)
            quiet = rec.snapshot(start)
            quiet_end = time.monotonic()
            # ...and a node death is still handled, from membership alone.
            killed_at = time.monotonic()
            chaos.kill_node(victim)
            took = {
                ip: first_answer_from_another(rec, ip, mac, killed_at, FAILOVER_LIMIT)
                for ip, mac in owners.items()
                if mac == victim_mac
            }
            await asyncio.sleep(max(0.0, start + 30.0 - time.monotonic()))
        for ip in ips.values():
            assert ownership.owner_changes(quiet, ip) == []
            assert ownership.longest_silence(quiet, ip, start, quiet_end) < 0.5
        assert all(t is not None for t in took.values()), f"no takeover while stopped: {took}"
        chaos.revive_node(victim)  # needs the API server back (it lists before it is ready)
        owners = await stable_owners(rec, list(ips.values()))
        # Killed and restarted: watches resume and nothing moves.
        restarted_at = time.monotonic()
        control.kill("kube-apiserver")
        control.kill("etcd")
        control.start_etcd()
        control.start_apiserver()
        await asyncio.to_thread(control.wait_ready)
        await asyncio.sleep(5.0)
        after = rec.snapshot(restarted_at)
    for ip, mac in owners.items():
        assert ownership.owner_changes(after, ip) == []
        assert {a.mac for a in after if a.ip == ip} == {mac}
    service = await admin.get(k8s.SERVICES, "svc-0", namespace)
    assert service["status"]["loadBalancer"]["ingress"][0]["ip"] == ips["svc-0"]
