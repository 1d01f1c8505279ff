"""Who owns an address, seen from outside ironlb.

- `ArpRecorder`: a LAN client (a lab namespace) asks "who has <ip>?" for every watched IPv4
  address every `interval` seconds from a raw socket, and records every ARP answer and
  gratuitous ARP it sees for them, with the answering MAC: `answers`. Unlike `arping`, a second
  answerer is never hidden behind the first. Bounded by `duration` and by the number of
  requests.
- `owner_changes(answers)`, `moves(...)`, `double_owners(...)`: what a scenario asserts on.
- `routes(ns, prefix)`: the router's view (next hops of every route in a prefix).
"""

from __future__ import annotations

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

from ironlb.l2 import arp, errors, ethernet
from ironlb.lab import netns

ETH_P_ARP = 0x0806
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
