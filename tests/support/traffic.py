"""Bounded client traffic from inside a lab namespace, in a thread of its own (setns is per
thread, so the test's own connections stay where they are)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

from ironlb.lab import netns


def _request(host: str) -> bytes:
    return f"GET / HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def _body(data: bytes) -> str | None:
    head, _, body = data.partition(b"\r\n\r\n")
    return body.decode().strip() if head.startswith(b"HTTP/1.1 200") else None


def get(host: str, port: int = 80, timeout: float = 1.0) -> str | None:
    """One HTTP/1.0 GET; the body, or None on any failure."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(_request(host))
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    return _body(data)


@dataclass
class Stream:
    """`count` requests to `host`, one sent every `interval` seconds whatever the earlier ones
    are doing (each a new connection, `timeout` seconds at most), from namespace `ns`.
    `results` holds (send time, body or None), in send order."""

    ns: str
    host: str
    count: int
    interval: float = 0.01
    timeout: float = 0.5
    port: int = 80
    results: list[tuple[float, str | None]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    """Failures by kind: `timeout` (nobody answered), `reset` (a connection cut mid-way, as
    when the address moves while the connection is open), `refused`, `error` (any other
    socket error), `empty` (closed without an answer), `status` (an answer other than 200).
    Every request whose body is None is counted in exactly one kind."""
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with netns.entered(self.ns):
            asyncio.run(self._send_all())

    async def _send_all(self) -> None:
        slots = self.results  # filled in place: readable while the stream runs
        async with asyncio.TaskGroup() as tg:
            start = time.monotonic()
            for i in range(self.count):
                if self._stop.is_set():
                    break
                slots.append((time.monotonic(), None))
                tg.create_task(self._one(slots, i))
                await asyncio.sleep(max(0.0, start + (i + 1) * self.interval - time.monotonic()))

    async def _one(self, slots: list[tuple[float, str | None]], i: int) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                try:
                    writer.write(_request(self.host))
                    data = await reader.read()
                finally:
                    writer.close()
            body = _body(data)
            slots[i] = (slots[i][0], body)
            if not data:
                self._failed("empty")
            elif body is None:
                self._failed("status")
        except TimeoutError:
            self._failed("timeout")
        except ConnectionResetError:
            self._failed("reset")
        except ConnectionRefusedError:
            self._failed("refused")
        except OSError:
            self._failed("error")

    def _failed(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def failures(self) -> int:
        """Requests that got no 200 answer, whatever the reason (once the stream is done)."""
        return sum(1 for _, body in self.results if body is None)

    @property
    def lost(self) -> int:
        """Failed requests, every kind counted (see `errors`)."""
        return sum(self.errors.values())

    def answered_by(self) -> list[str | None]:
        return [body for _, body in self.results]

    def failover(self, old: str, new: str) -> float | None:
        """Seconds from the last request `old` answered to the first one `new` answered after
        it (by send time)."""
        last_old = None
        for t, body in self.results:
            if body == old:
                last_old = t
            elif body == new and last_old is not None:
                return t - last_old
        return None
