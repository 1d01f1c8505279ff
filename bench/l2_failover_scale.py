"""Layer-2 failover at scale: the node that owns 1 000 addresses dies; when is the last answered?

Three nodes run a speaker each (`--log-level=info`, as in production), the controller and the
real API server run on the control-plane host. N dual-stack Services (1 500, --quick 150), each
with a serving endpoint on every node, get one IPv4 and one IPv6 address from a pool off the
LAN's own subnets. The rendezvous hash spreads the 2N addresses over the three nodes, so each
node owns about 1 000 (--quick 100), half answered by ARP and half by NDP.

A LAN client is the observer, from a raw socket: it asks "who has <ip>?" (ARP request, or a
Neighbor Solicitation to the solicited-node group) for every address and records every answer
and every gratuitous ARP / unsolicited NA, with the MAC, so it sees what a router or a client on
the LAN would learn.

Each trial: the owners are read from the answers (every address must have exactly one, a node's
MAC); the node owning the most addresses is killed (SIGKILL of its speaker and its link set down
at once, as a power loss). From that moment the observer probes the dead node's addresses that
no other node has answered yet, 100 every 20 ms in turn (5 000 a second: the observer must not
be what loads the survivors), for at most 10 s, and records when each is first answered or
announced (gratuitous ARP, unsolicited NA) by a surviving node's MAC. The figure of the trial is
the time until the *last* of them; an address never answered counts as the 10 s timeout, and
their count is printed.
The node then comes back and its addresses settle before the next trial.

Last line: `l2_failover_last_of_n_ms: <median over trials of the last address's time> ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address, ip_address

import common
from ironlb.k8s import client as k8s
from ironlb.l2 import arp, errors, ethernet, frames, ndp
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, topology

NODES = (1, 2, 3)
NS = "scale"
POOL = ("198.18.16.0/20", "2001:db8:2::/116")  # 4 096 each, off the LAN's subnets
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_RCVBUFFORCE = 33
PROBE_EVERY = 0.02
PROBE_BATCH = 100
TIMEOUT = 10.0


def service(i: int) -> k8s.Obj:
    return {
        "metadata": {"name": f"s{i:05d}"},
        "spec": {
            "type": "LoadBalancer",
            "ipFamilyPolicy": "RequireDualStack",
            "ipFamilies": ["IPv4", "IPv6"],
            "allocateLoadBalancerNodePorts": False,
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }


def endpoint_slice(i: int, nodes: tuple[int, ...] = NODES) -> k8s.Obj:
    """Service s<i>'s EndpointSlice: a serving endpoint on each of `nodes`."""
    return {
        "metadata": {
            "name": f"s{i:05d}-lab",
            "labels": {"kubernetes.io/service-name": f"s{i:05d}"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"198.19.{n}.10"],
                "nodeName": f"node-{n}",
                "conditions": {"ready": True, "serving": True},
            }
            for n in nodes
        ],
        "ports": [{"name": "http", "port": topology.BACKEND_PORT, "protocol": "TCP"}],
    }


async def l2_pool(admin: k8s.Client, namespace: str, name: str, addresses: list[str]) -> None:
    """Namespace `namespace` for the Services, and pool `name` announced by layer 2."""
    await admin.create(k8s.NAMESPACES, {"metadata": {"name": namespace}})
    config = lab_cluster.CONFIG_NAMESPACE
    pool = {"metadata": {"name": name}, "spec": {"addresses": addresses}}
    await admin.create(k8s.IP_ADDRESS_POOLS, pool, config)
    l2 = {"metadata": {"name": name}, "spec": {"ipAddressPools": [name]}}
    await admin.create(k8s.L2_ADVERTISEMENTS, l2, config)


async def each(count: int, work: Callable[[int], Awaitable[None]], workers: int = 16) -> None:
    """work(0) ... work(count - 1), `workers` at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            await work(queue.get_nowait())

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())


async def assigned(admin: k8s.Client, namespace: str, expected: int) -> list[str]:
    """Every address of the namespace's Services, once there are `expected` (300 s at most)."""
    deadline = time.monotonic() + 300
    ips: list[str] = []
    while time.monotonic() < deadline:
        items, _ = await admin.list_all(k8s.SERVICES, namespace)
        ips = [
            i["ip"]
            for s in items
            for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress", [])
        ]
        if len(ips) == expected:
            return sorted(ips)
        await asyncio.sleep(1.0)
    raise SystemExit(f"only {len(ips)} of {expected} addresses assigned after 300 s")


class Observer:
    """The LAN client's view: who answers for which address, from one raw socket.

    `probe(ips)` sends one ARP request or Neighbor Solicitation per address; a reader thread
    records, per address, every MAC seen answering or announcing it, with the time it was
    first seen after `mark()`. Frames that are not ARP/ND, or are malformed, are counted by
    reason and ignored."""

    def __init__(self, client: topology.Host) -> None:
        self.mac = ethernet.MacAddress.parse(client.mac)
        self.ipv4 = IPv4Address(client.ipv4)
        self.ipv6 = IPv6Address(client.ipv6)
        with netns.entered(client.ns.name):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        # Thousands of answers arrive at once: room for all of them (this socket only).
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self.sock.bind((client.dev, 0))
        self.sock.settimeout(0.05)
        self._frames: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.since = time.monotonic()
        self.seen: dict[str, dict[str, float]] = {}
        """ip -> MAC -> first time seen since `mark()`."""
        self.not_for_us: Counter[str] = Counter()
        """Frames that are not ARP/ND answers, or malformed, by reason (every one counted)."""
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _frame(self, ip: str) -> bytes:
        frame = self._frames.get(ip)
        if frame is None:
            address = ip_address(ip)
            if isinstance(address, IPv4Address):
                frame = frames.arp_request(self.mac, self.ipv4, address)
            else:
                group = ndp.solicited_node_multicast(address)
                solicitation = ndp.NeighborSolicitation(self.ipv6, group, address, self.mac)
                header = ethernet.Header(ndp.multicast_mac(group), self.mac)
                frame = frames.encode_frame(frames.Frame(header, solicitation))
            self._frames[ip] = frame
        return frame

    def probe(self, ips: list[str]) -> None:
        for ip in ips:
            self.sock.send(self._frame(ip))
        self.sent += len(ips)

    def mark(self) -> float:
        with self._lock:
            self.since = time.monotonic()
            self.seen = {}
            return self.since

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {ip: dict(macs) for ip, macs in self.seen.items()}

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, address = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            if address[2] == PACKET_OUTGOING:
                continue
            at = time.monotonic()
            try:
                message = frames.decode_frame(data).message
            except errors.MalformedFrame as e:
                self.not_for_us[e.reason.value] += 1
                continue
            if isinstance(message, arp.Arp):
                if message.kind not in (arp.Kind.REPLY, arp.Kind.GRATUITOUS):
                    continue
                ip, mac = str(message.sender_ip), str(message.sender_mac)
            elif isinstance(message, ndp.NeighborAdvertisement):
                if message.target_link_layer is None:
                    continue
                ip, mac = str(message.target), str(message.target_link_layer)
            else:
                continue
            with self._lock:
                self.seen.setdefault(ip, {}).setdefault(mac, at)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class Nodes:
    """What the layer-2 scale benches share: the nodes, their speakers and MACs, the observer
    and the addresses; who owns what, and one owner's death as the observer sees it."""

    hosts: dict[int, topology.Host]
    speakers: dict[int, components.Process]
    macs: dict[str, int]
    """Node MAC -> node index."""
    observer: Observer
    addresses: list[str]

    def restart(self, index: int) -> None:
        """Start node-`index`'s speaker again and wait until it is ready."""
        raise NotImplementedError

    def owners(self, within: float = 120.0) -> dict[str, int]:
        """Every address's one owner (node index), once every address has exactly one, and
        it is a node whose speaker runs."""
        deadline = time.monotonic() + within
        problems: list[str] = []
        while time.monotonic() < deadline:
            self.observer.mark()
            for k in range(0, len(self.addresses), PROBE_BATCH):
                self.observer.probe(self.addresses[k : k + PROBE_BATCH])
                time.sleep(PROBE_EVERY)
            time.sleep(0.5)
            seen = self.observer.snapshot()
            problems, owners = [], {}
            for ip in self.addresses:
                macs = set(seen.get(ip, {}))
                mac = next(iter(macs)) if len(macs) == 1 else ""
                if mac in self.macs and self.macs[mac] in self.speakers:
                    owners[ip] = self.macs[mac]
                else:
                    problems.append(f"{ip}: {sorted(macs) or 'no answer'}")
            if not problems:
                return owners
            time.sleep(0.5)
        raise SystemExit(f"{len(problems)} addresses without exactly one owner: {problems[:5]}")

    def kill_round(self) -> tuple[int, list[float]]:
        """Kill the node owning the most addresses: (its index, the time each of its addresses
        took to be answered by a survivor, TIMEOUT for one never answered)."""
        owners = self.owners()
        victim, _ = Counter(owners.values()).most_common(1)[0]
        mine = [ip for ip, n in owners.items() if n == victim]
        survivors = {host.mac for i, host in self.hosts.items() if i != victim}
        time.sleep(1.0)  # past the probe answers: a steady state
        start = self.observer.mark()
        self.speakers.pop(victim).kill()
        self.hosts[victim].ns.ip("link", "set", "eth0", "down")
        answered: dict[str, float] = {}
        pending = list(mine)
        rounds = 0
        while pending and time.monotonic() - start < TIMEOUT and rounds < TIMEOUT / PROBE_EVERY:
            # A bounded rate (5 000 a second, as in `owners`), round-robin over what is left:
            # the observer must not be what loads the survivors.
            first = rounds * PROBE_BATCH % len(pending)
            self.observer.probe(pending[first : first + PROBE_BATCH])
            rounds += 1
            time.sleep(PROBE_EVERY)
            seen = self.observer.snapshot()
            for ip in pending:
                times = [t for mac, t in seen.get(ip, {}).items() if mac in survivors]
                if times:
                    answered[ip] = min(times) - start
            pending = [ip for ip in pending if ip not in answered]
        self.hosts[victim].ns.ip("link", "set", "eth0", "up")
        self.restart(victim)
        return victim, [answered.get(ip, TIMEOUT) for ip in mine]


class Bench(Nodes):
    def __init__(self, c: lab_cluster.Cluster, count: int) -> None:
        self.c = c
        self.count = count
        self.hosts = {i: c.lab.add_node(i) for i in NODES}
        self.client = c.lab.add_client()
        for i, host in self.hosts.items():
            components.register_node(c, i, host)
        self.macs = {host.mac: i for i, host in self.hosts.items()}
        self.procs = [components.start_controller(c, webhook=False)]
        self.speakers: dict[int, components.Process] = {}
        self.start_speakers(NODES)
        self.observer = Observer(self.client)
        self.addresses: list[str] = []

    def start_speakers(self, indexes: tuple[int, ...]) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(
                self.c, i, extra=("--log-level=info",), wait=False
            )
        for i in indexes:
            self.speakers[i].wait_ready()

    def restart(self, index: int) -> None:
        self.start_speakers((index,))

    async def create(self) -> None:
        async with k8s.Client.from_config(
            self.c.control_plane.admin_kubeconfig, max_connections=32
        ) as admin:
            await l2_pool(admin, NS, "scale", list(POOL))

            async def one(i: int) -> None:
                await admin.create(k8s.ENDPOINT_SLICES, endpoint_slice(i), NS)
                await admin.create(k8s.SERVICES, service(i), NS)

            await each(self.count, one)
            self.addresses = await assigned(admin, NS, 2 * self.count)

    def close(self) -> None:
        self.observer.close()
        for proc in [*self.speakers.values(), *self.procs]:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="150 Services (300 addresses), 3 kills"
    )
    parser.add_argument("--services", type=int, help="dual-stack Services (default 1 500)")
    parser.add_argument("--kills", type=int, help="owner kills (default 7, --quick 3)")
    args = parser.parse_args()
    count = args.services or (150 if args.quick else 1500)
    kills = args.kills or (3 if args.quick else 7)
    lasts: list[float] = []
    every: list[float] = []
    timeouts = 0
    with common.cluster() as c:
        bench = Bench(c, count)
        try:
            t0 = time.monotonic()
            asyncio.run(bench.create())
            print(
                f"{count} dual-stack Services, {len(bench.addresses)} addresses assigned in "
                f"{time.monotonic() - t0:.1f} s",
                flush=True,
            )
            for k in range(kills):
                victim, times = bench.kill_round()
                last, owned = max(times), len(times)
                lasts.append(last * 1000)
                every.extend(t * 1000 for t in times)
                timeouts += sum(1 for t in times if t >= TIMEOUT)
                print(
                    f"kill {k + 1}: node-{victim} owned {owned} addresses; first "
                    f"{min(times) * 1000:.0f} ms, median {statistics.median(times) * 1000:.0f} ms, "
                    f"last {last * 1000:.0f} ms",
                    flush=True,
                )
                time.sleep(2.0)  # the node is back: let its addresses settle
        finally:
            print(
                f"observer: {bench.observer.sent} probes sent, "
                f"frames ignored (not ARP/ND, or malformed), by reason: "
                f"{dict(bench.observer.not_for_us) or 'none'}"
            )
            bench.close()
    print(
        f"last address answered by its new owner over {kills} kills: median "
        f"{statistics.median(lasts):.0f} ms, p99 {common.pct(lasts, 0.99):.0f} ms, "
        f"max {max(lasts):.0f} ms"
    )
    print(
        f"every address over {len(every)} samples: p50 {common.pct(every, 0.5):.0f} ms, "
        f"p99 {common.pct(every, 0.99):.0f} ms; never answered within {TIMEOUT:.0f} s "
        f"(counted as {TIMEOUT * 1000:.0f} ms): {timeouts}"
    )
    print(f"l2_failover_last_of_n_ms: {statistics.median(lasts):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
