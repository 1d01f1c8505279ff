"""Bounded client traffic from inside a lab namespace, in a thread of its own (setns is per
thread, so the test's own connections stay where they are)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

from ironlb.lab import netns


def get(host: str, port: int = 80, timeout: float = 1.0) -> str | None:
    """One HTTP/1.0 GET; the body, or None on any failure."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode().strip() if head.startswith(b"HTTP/1.1 200") else None


@dataclass
class Stream:
    """`count` requests to `host`, one every `interval` seconds, from namespace `ns`."""

    ns: str
    host: str
    count: int
    interval: float = 0.01
    timeout: float = 0.5
    results: list[tuple[float, str | None]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with netns.entered(self.ns):
            for _ in range(self.count):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                self.results.append((started, get(self.host, timeout=self.timeout)))
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def failures(self) -> int:
        return sum(1 for _, body in self.results if body is None)

    def answered_by(self) -> list[str | None]:
        return [body for _, body in self.results]

    def failover(self, old: str, new: str) -> float | None:
        """Seconds from the last answer of `old` to the first answer of `new` after it."""
        last_old = None
        for t, body in self.results:
            if body == old:
                last_old = t
            elif body == new and last_old is not None:
                return t - last_old
        return None
