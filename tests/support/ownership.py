"""Who owns an address, seen from outside ironlb.

- `ArpRecorder`: a LAN client (a lab namespace) asks "who has <ip>?" for every watched IPv4
  address every `interval` seconds from a raw socket, and records every ARP answer and
  gratuitous ARP it sees for them, with the answering MAC: `answers`. Unlike `arping`, a second
  answerer is never hidden behind the first. Bounded by `duration` and by the number of
  requests.
- `owner_changes(answers)`, `moves(...)`, `double_owners(...)`: what a scenario asserts on.
- `routes(ns, prefix)`: the router's view (next hops of every route in a prefix).
- `ServiceHistory`: every address of every Service of a namespace over time, from a watch that
  relists on 410 Gone, with what decides sharing (`Sharing`) in each version. The pure
  functions below it judge such a history: `double_assignments(...)` (two Services on one address
  at a moment they may not share it), `address_changes(...)` (a Service's address changed or lost
  after it got one) and `settled_after(...)` (the end of a key edit's grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from ironlb.k8s import client as k8s
from ironlb.l2 import arp, errors, ethernet
from ironlb.lab import netns

ETH_P_ARP = 0x0806
SHARING_KEY = "metallb.io/allow-shared-ip"
_BROADCAST = b"\xff" * 6


@dataclass(frozen=True)
class Answer:
    at: float
    """time.monotonic() of reception."""
    ip: str
    mac: str
    kind: str
    """"reply" or "gratuitous"."""


@dataclass
class ArpRecorder:
    ns: str
    dev: str
    own_mac: str
    own_ip: str
    ips: list[str]
    interval: float = 0.02
    duration: float = 600.0
    answers: list[Answer] = field(default_factory=list)
    requests: int = 0
    malformed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ArpRecorder:
        with netns.entered(self.ns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        sock.bind((self.dev, ETH_P_ARP))
        sock.settimeout(0.005)
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> ArpRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def watch(self, ips: list[str]) -> None:
        with self._lock:
            self.ips = list(ips)

    def snapshot(self, since: float = 0.0) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at >= since]

    def _request(self, ip: str) -> bytes:
        mac = ethernet.MacAddress.parse(self.own_mac)
        body = arp.encode(
            arp.Arp(
                arp.Operation.REQUEST,
                mac,
                IPv4Address(self.own_ip),
                ethernet.MacAddress(b"\x00" * 6),
                IPv4Address(ip),
            )
        )
        return _BROADCAST + mac.packed + struct.pack("!H", ETH_P_ARP) + body

    def _run(self, sock: socket.socket) -> None:
        end = time.monotonic() + self.duration
        limit = int(self.duration / self.interval) + 1
        next_send = time.monotonic()
        with sock:
            while not self._stop.is_set() and time.monotonic() < end and self.requests < limit:
                now = time.monotonic()
                if now >= next_send:
                    with self._lock:
                        ips = list(self.ips)
                    for ip in ips:
                        sock.send(self._request(ip))
                    self.requests += 1
                    next_send += self.interval
                    if next_send < now:
                        next_send = now + self.interval
                try:
                    frame = sock.recv(2048)
                except TimeoutError:
                    continue
                self._parse(frame, time.monotonic())

    def _parse(self, frame: bytes, at: float) -> None:
        if len(frame) < 14 or frame[12:14] != b"\x08\x06":
            return
        try:
            packet = arp.decode(frame[14:])
        except errors.MalformedFrame:
            self.malformed += 1
            return
        ip = str(packet.sender_ip)
        with self._lock:
            if ip not in self.ips:
                return
            if packet.kind is arp.Kind.REPLY:
                kind = "reply"
            elif packet.kind is arp.Kind.GRATUITOUS:
                kind = "gratuitous"
            else:
                return
            self.answers.append(Answer(at, ip, str(packet.sender_mac), kind))


def owner_changes(answers: list[Answer], ip: str) -> list[tuple[float, str, str]]:
    """(time, old MAC, new MAC) each time a different MAC answered for `ip` than the last."""
    changes = []
    last: str | None = None
    for a in answers:
        if a.ip != ip:
            continue
        if last is not None and a.mac != last:
            changes.append((a.at, last, a.mac))
        last = a.mac
    return changes


def double_owners(answers: list[Answer], ip: str, window: float) -> list[tuple[float, set[str]]]:
    """Times at which two or more MACs answered for `ip` within `window` seconds."""
    found = []
    mine = [a for a in answers if a.ip == ip]
    start = 0
    for i, a in enumerate(mine):
        while mine[start].at < a.at - window:
            start += 1
        macs = {b.mac for b in mine[start : i + 1]}
        if len(macs) > 1:
            found.append((a.at, macs))
    return found


def longest_silence(answers: list[Answer], ip: str, start: float, end: float) -> float:
    """Longest time without any answer for `ip` between `start` and `end`."""
    times = [start, *(a.at for a in answers if a.ip == ip and start <= a.at <= end), end]
    return max(b - a for a, b in itertools.pairwise(times))


def routes(ns: netns.Netns, prefix: str) -> dict[str, set[str]]:
    """The router's routes inside `prefix` (IPv4 or IPv6): destination -> next hops."""
    family = "-6" if ":" in prefix else "-4"
    out: dict[str, set[str]] = {}
    for route in json.loads(ns.ip("-j", family, "route", "show", "root", prefix) or "[]"):
        hops = {h["gateway"] for h in route.get("nexthops", []) if "gateway" in h}
        if "gateway" in route:
            hops.add(route["gateway"])
        out[route["dst"]] = hops
    return out


@contextlib.contextmanager
def recording(rec: ArpRecorder) -> Iterator[ArpRecorder]:
    rec.start()
    try:
        yield rec
    finally:
        rec.stop()


@dataclass(frozen=True)
class Sharing:
    """What decides whether a Service may share an address (shared/REFERENCE.md): the same
    non-empty key, no (protocol, port) in common, and, with `externalTrafficPolicy: Local`, the
    same pods (here: the same selector)."""

    key: str = ""
    ports: frozenset[tuple[str, int]] = frozenset()
    local_selector: tuple[tuple[str, str], ...] | None = None
    """The selector when the policy is Local, None when it is Cluster."""

    @classmethod
    def of(cls, service: k8s.Obj) -> Sharing:
        meta, spec = service["metadata"], service.get("spec") or {}
        ports = frozenset(
            (p.get("protocol", "TCP"), int(p["port"])) for p in spec.get("ports") or []
        )
        local = None
        if spec.get("externalTrafficPolicy") == "Local":
            local = tuple(sorted((spec.get("selector") or {}).items()))
        return cls((meta.get("annotations") or {}).get(SHARING_KEY, ""), ports, local)


def compatible(a: Sharing, b: Sharing) -> bool:
    return (
        bool(a.key)
        and a.key == b.key
        and not a.ports & b.ports
        and a.local_selector == b.local_selector
    )


@dataclass(frozen=True)
class Version:
    """A Service as the watch saw it from `at` (time.monotonic()) until its next version."""

    at: float
    ips: tuple[str, ...]
    uid: str
    sharing: Sharing = Sharing()


@dataclass(frozen=True)
class DoubleAssignment:
    ip: str
    a: str
    b: str
    """"name/uid" of the two Services."""
    at: float
    """A moment both held `ip` and neither could share it with the other."""


@dataclass(frozen=True)
class _Life:
    """One Service object (a name may be deleted and created again: one life per uid)."""

    label: str
    versions: tuple[Version, ...]
    end: float

    def at(self, moment: float) -> Version | None:
        if moment >= self.end or moment < self.versions[0].at:
            return None
        return [v for v in self.versions if v.at <= moment][-1]


def _lives(
    versions: Mapping[str, Sequence[Version]], deleted: Mapping[str, float], now: float
) -> list[_Life]:
    lives = []
    for name, history in versions.items():
        groups: list[list[Version]] = []
        for version in history:
            if groups and groups[-1][0].uid == version.uid:
                groups[-1].append(version)
            else:
                groups.append([version])
        for n, group in enumerate(groups):
            end = groups[n + 1][0].at if n + 1 < len(groups) else now
            end = min(end, deleted.get(group[0].uid, end))
            lives.append(_Life(f"{name}/{group[0].uid}", tuple(group), end))
    return lives


def double_assignments(
    versions: Mapping[str, Sequence[Version]],
    deleted: Mapping[str, float],
    grace_end: Callable[[float], float],
    now: float,
) -> list[DoubleAssignment]:
    """Every pair of Services that held one address at a moment they could not share it.

    A version holds its addresses from when it was seen until the Service's next version (or
    its deletion, or `now`): the watch delivers writes in the order etcd made them, so an
    address moved from one Service to another is never seen on both at once. A Service whose
    sharing changed (key edit, ports) legitimately keeps its address, under its old sharing,
    until the controller moves it: an older version's sharing still counts until
    `grace_end(t)`, t being when the version after it was seen. Pairs are judged at every
    moment where something changes (a version, an end of grace): their state is constant
    between two such moments.
    """
    lives = _lives(versions, deleted, now)
    holders: dict[str, list[_Life]] = {}
    for life in lives:
        for ip in {ip for v in life.versions for ip in v.ips}:
            holders.setdefault(ip, []).append(life)
    found = []
    for ip, held in holders.items():
        for a, b in itertools.combinations(held, 2):
            moment = _first_conflict(ip, a, b, grace_end)
            if moment is not None:
                found.append(DoubleAssignment(ip, a.label, b.label, moment))
    return found


def _first_conflict(
    ip: str, a: _Life, b: _Life, grace_end: Callable[[float], float]
) -> float | None:
    start = max(a.versions[0].at, b.versions[0].at)
    end = min(a.end, b.end)
    if start >= end:
        return None
    cuts = {start, end}
    for life in (a, b):
        for n, version in enumerate(life.versions):
            cuts.add(version.at)
            if n:
                cuts.add(grace_end(version.at))
    points = sorted(t for t in cuts if start <= t <= end)
    for left, right in itertools.pairwise(points):
        moment = (left + right) / 2
        va, vb = a.at(moment), b.at(moment)
        if va is None or vb is None or ip not in va.ips or ip not in vb.ips:
            continue
        if not any(
            compatible(x, y)
            for x in _in_force(a, moment, grace_end)
            for y in _in_force(b, moment, grace_end)
        ):
            return left
    return None


def _in_force(life: _Life, moment: float, grace_end: Callable[[float], float]) -> set[Sharing]:
    """The current sharing and every earlier one still within its grace at `moment`."""
    current = [n for n, v in enumerate(life.versions) if v.at <= moment]
    last = current[-1]
    kept = {life.versions[last].sharing}
    for n in current[:-1]:
        if moment < grace_end(life.versions[n + 1].at):
            kept.add(life.versions[n].sharing)
    return kept


def address_changes(
    history: Sequence[Version],
) -> list[tuple[float, tuple[str, ...], tuple[str, ...]]]:
    """(time, before, after) each time a Service's addresses changed after it first had some,
    losing them included; a Service deleted and created again (another uid) counts too."""
    changes = []
    held: tuple[str, ...] = ()
    uid = history[0].uid if history else ""
    for version in history:
        if held and (version.uid != uid or version.ips != held):
            changes.append((version.at, held, version.ips))
        held, uid = version.ips, version.uid
    return changes


def settled_after(moment: float, lifetimes: Sequence[tuple[float, float]], settle: float) -> float:
    """The first time after `moment` at which a controller had run `settle` seconds without
    interruption since `moment` (or since it started, if later): by then it has seen and acted
    on what changed at `moment`. `lifetimes`: (start, end) of each controller process, in order,
    `end` infinite for the one still running."""
    for start, end in lifetimes:
        ready = max(start, moment) + settle
        if ready <= end:
            return ready
    return float("inf")


@dataclass
class ServiceHistory:
    """Every address every Service of `namespace` was seen with, from a watch that relists on
    410 Gone and resumes after the API server goes away (so a restart does not blind it).

    `versions[name]`: a `Version` each time its addresses, uid or sharing changed; `deleted`:
    uid -> when its deletion was seen (a Service missing from a relist counts as deleted then);
    `relists` counts every list (the first included), `gone` the 410 answers, `errors` the other
    interruptions."""

    api: k8s.Client
    namespace: str
    versions: dict[str, list[Version]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    relists: int = 0
    gone: int = 0
    errors: int = 0

    def _record(self, service: k8s.Obj) -> None:
        meta = service["metadata"]
        ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        ips = tuple(sorted(i["ip"] for i in ingress if "ip" in i))
        version = Version(time.monotonic(), ips, meta["uid"], Sharing.of(service))
        history = self.versions.setdefault(meta["name"], [])
        if not history or (history[-1].ips, history[-1].uid, history[-1].sharing) != (
            version.ips,
            version.uid,
            version.sharing,
        ):
            history.append(version)

    def _relisted(self, items: list[k8s.Obj]) -> None:
        now = time.monotonic()
        present = {item["metadata"]["uid"] for item in items}
        for history in self.versions.values():
            uid = history[-1].uid
            if uid not in present and uid not in self.deleted:
                self.deleted[uid] = now  # its DELETED event fell into the gap
        for item in items:
            self._record(item)

    async def run(self) -> None:
        """Until cancelled."""
        version = ""
        while True:
            try:
                if not version:
                    items, version = await self.api.list_all(k8s.SERVICES, self.namespace)
                    self.relists += 1
                    self._relisted(items)
                async for event in self.api.watch(
                    k8s.SERVICES, version, self.namespace, timeout_seconds=30
                ):
                    version = event.object["metadata"].get("resourceVersion", version)
                    if event.type == "DELETED":
                        self.deleted[event.object["metadata"]["uid"]] = time.monotonic()
                    elif event.type in ("ADDED", "MODIFIED"):
                        self._record(event.object)
            except k8s.ApiError as e:
                if e.status != 410:
                    raise
                self.gone += 1
                version = ""
            except k8s.Unreachable:
                self.errors += 1
                await asyncio.sleep(0.2)

    def double_assignments(self, grace_end: Callable[[float], float]) -> list[DoubleAssignment]:
        return double_assignments(self.versions, self.deleted, grace_end, time.monotonic())
