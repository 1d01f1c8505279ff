"""Who owns an address, seen from outside ironlb.

- `ArpRecorder`: a LAN client (a lab namespace) asks "who has <ip>?" for every watched IPv4
  address every `interval` seconds from a raw socket, and records every ARP answer and
  gratuitous ARP it sees for them, with the answering MAC: `answers`. Unlike `arping`, a second
  answerer is never hidden behind the first. Bounded by `duration` and by the number of
  requests.
- `owner_changes(answers)`, `moves(...)`, `double_owners(...)`: what a scenario asserts on.
- `routes(ns, prefix)`: the router's view (next hops of every route in a prefix).
- `ServiceHistory`: every address of every Service of a namespace over time, from a watch that
  relists on 410 Gone; `overlaps()` finds two Services holding one address at once.
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
from collections.abc import Iterator
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


@dataclass
class ServiceHistory:
    """Every address every Service of `namespace` was seen with, from a watch that relists on
    410 Gone and resumes after the API server goes away (so a restart does not blind it).

    `versions[name]`: (time.monotonic(), ingress IPs, uid, sharing key) each time that changed
    (the sharing key is the `metallb.io/allow-shared-ip` annotation, or ""); `relists`
    counts every list (the first included), `gone` the 410 answers, `errors` the other
    interruptions."""

    api: k8s.Client
    namespace: str
    versions: dict[str, list[tuple[float, tuple[str, ...], str, str]]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    """uid -> when its deletion was seen."""
    relists: int = 0
    gone: int = 0
    errors: int = 0

    def _record(self, service: k8s.Obj) -> None:
        meta = service["metadata"]
        ingress = (service.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        ips = tuple(sorted(i["ip"] for i in ingress if "ip" in i))
        key = (meta.get("annotations") or {}).get(SHARING_KEY, "")
        history = self.versions.setdefault(meta["name"], [])
        if not history or history[-1][1:] != (ips, meta["uid"], key):
            history.append((time.monotonic(), ips, meta["uid"], key))

    async def run(self) -> None:
        """Until cancelled."""
        version = ""
        while True:
            try:
                if not version:
                    items, version = await self.api.list_all(k8s.SERVICES, self.namespace)
                    self.relists += 1
                    for item in items:
                        self._record(item)
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

    def holders(self) -> dict[str, set[tuple[str, str]]]:
        """address -> every (name, uid) ever seen holding it."""
        held: dict[str, set[tuple[str, str]]] = {}
        for name, history in self.versions.items():
            for _, ips, uid, _ in history:
                for ip in ips:
                    held.setdefault(ip, set()).add((name, uid))
        return held

    def overlaps(self) -> list[tuple[str, str, str]]:
        """(address, Service, Service) for two live Services seen holding one address at the
        same time without the same sharing key: each version holds from when it was seen
        until the next version of that Service (or its deletion, or now)."""
        spans: dict[str, list[tuple[float, float, str, str]]] = {}
        now = time.monotonic()
        for name, history in self.versions.items():
            for n, (at, ips, uid, key) in enumerate(history):
                if n + 1 < len(history) and history[n + 1][2] == uid:
                    until = history[n + 1][0]
                else:
                    until = self.deleted.get(uid, now)
                for ip in ips:
                    spans.setdefault(ip, []).append((at, until, f"{name}/{uid}", key))
        found = []
        for ip, held in spans.items():
            for (a_start, a_end, a, a_key), (b_start, b_end, b, b_key) in itertools.combinations(
                held, 2
            ):
                if a == b or (a_key and a_key == b_key):
                    continue
                if a_start < b_end and b_start < a_end:
                    found.append((ip, a, b))
        return found
