"""The UDP shell around the SWIM core (`swim.Membership`): one socket, one task, real time.

- Datagrams go to the core as they come, and before every `tick` the socket is read dry (the
  core's rule: an ACK that sat in the buffer while this process was paused is not silence). That
  is why this shell reads its own non-blocking socket: asyncio's DatagramProtocol reads one
  datagram per loop iteration and cannot be drained on demand.
- The task sleeps until the core's `next_deadline()`, or until a datagram arrives or the owner
  changes something, since either may bring the deadline forward.
- What the core returns is sent at once, without blocking; a datagram the kernel does not take
  (no route while the link is down, a full buffer) is dropped and logged: SWIM is built for
  loss. `leave()` is the exception: it waits, briefly and boundedly, until the kernel has taken
  every goodbye, so the LEAVE is out before the process goes.
- Core events go to `on_event`, in order, right after the core call that produced them.

The HMAC keys come from the caller (a Secret, rotated with `set_keys`). Time is
`time.monotonic()`, as for the core. The socket is opened, in the network namespace of the
calling thread, when the transport is entered; the task belongs to a TaskGroup the transport
enters with it, so a failure in the task cancels the owner at once rather than going unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType

from ironlb.core import election
from ironlb.membership import model, settings, swim, wire

log = logging.getLogger(__name__)

DEFAULT_PORT = 7946
"""The port memberlist, and so MetalLB's speakers, use."""

_DEFAULTS = settings.Settings()
_MAX_DATAGRAM = 65535
_DRAIN_LIMIT = 512
"""Datagrams read in one go before other tasks get a turn: a flood cannot starve the loop."""


class Transport:
    """One speaker's membership on the network; use as `async with`."""

    def __init__(
        self,
        name: election.NodeName,
        bind: model.Endpoint,
        keys: Sequence[bytes],
        *,
        on_event: Callable[[model.Event], None],
        config: settings.Settings = _DEFAULTS,
        meta: bytes = b"",
    ) -> None:
        """`bind` is this node's address and port; peers send to it, so not a wildcard."""
        self._bind = bind
        self._on_event = on_event
        self._core = swim.Membership(
            name,
            bind,
            keys,
            random.Random(),
            time.monotonic(),
            first_sequence=time.time_ns(),
            config=config,
            meta=meta,
        )
        self._socket: socket.socket | None = None
        self._wakeup = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None

    @property
    def members(self) -> dict[election.NodeName, model.Member]:
        """Every member, this node included."""
        return self._core.members

    @property
    def health(self) -> int:
        """Lifeguard's local health score (0: healthy), see `swim.Membership.health`."""
        return self._core.health

    @property
    def dropped(self) -> dict[wire.DropReason, int]:
        """Packets received and dropped, by reason, since the start."""
        return self._core.dropped

    async def __aenter__(self) -> Transport:
        family = socket.AF_INET6 if self._bind.ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((str(self._bind.ip), self._bind.port))
            loop = asyncio.get_running_loop()
            loop.add_reader(sock, self._wakeup.set)
            self._tasks = asyncio.TaskGroup()
            await self._tasks.__aenter__()
        except BaseException:
            self._close(sock)
            raise
        self._socket = sock
        self._runner = self._tasks.create_task(self._run(sock), name=f"membership {self._bind}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        sock = self._running_socket()
        try:
            if self._runner is not None:
                self._runner.cancel()
            if self._tasks is not None:
                await self._tasks.__aexit__(exc_type, exc, traceback)
        finally:
            self._socket = self._tasks = self._runner = None
            self._close(sock)

    def set_peers(self, peers: Mapping[election.NodeName, model.Endpoint]) -> None:
        """The speakers that should exist (this node may be among them); new ones are probed."""
        self._after(self._core.set_peers(peers, time.monotonic()))

    def set_keys(self, keys: Sequence[bytes]) -> None:
        """Accept any of `keys`, sign with the first (see `swim.Membership.set_keys`)."""
        self._core.set_keys(keys)

    def set_meta(self, meta: bytes) -> None:
        """Publish new meta with the next packets."""
        self._core.set_meta(meta)

    async def leave(self, grace: float = 0.5) -> None:
        """Say goodbye to every member, and return once the kernel has taken every packet, or
        after `grace` seconds. The transport sends and accepts nothing afterwards."""
        sock = self._running_socket()
        goodbyes = self._core.leave()
        self._wakeup.set()  # the core has no deadline any more: the task ends
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(grace):
                for endpoint, payload in goodbyes:
                    try:
                        await loop.sock_sendto(sock, payload, (str(endpoint.ip), endpoint.port))
                    except OSError as e:
                        log.warning("membership: no goodbye to %s: %s", endpoint, e.strerror)
        except TimeoutError:
            log.warning("membership: goodbyes not all sent within %.1f s", grace)

    # --- the task -------------------------------------------------------------------------------

    async def _run(self, sock: socket.socket) -> None:
        while (deadline := self._core.next_deadline()) is not None:
            delay = deadline - time.monotonic()
            if delay > 0 and not self._wakeup.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wakeup.wait()
            self._wakeup.clear()
            if not self._drain(sock):
                await asyncio.sleep(0)  # more is waiting: let the rest of the loop run first
            now = time.monotonic()
            due = self._core.next_deadline()
            if due is not None and now >= due:
                self._after(self._core.tick(now))

    def _drain(self, sock: socket.socket) -> bool:
        """Feed the core every datagram waiting, up to a limit; False if that left some."""
        for _ in range(_DRAIN_LIMIT):
            try:
                data, source = sock.recvfrom(_MAX_DATAGRAM)
            except BlockingIOError:
                return True
            except OSError as e:
                log.warning("membership: receiving: %s", e.strerror)
                return True
            endpoint = model.Endpoint(ipaddress.ip_address(source[0]), source[1])
            self._after(self._core.receive(endpoint, data, time.monotonic()))
        self._wakeup.set()
        return False

    def _after(self, datagrams: Iterable[model.Datagram]) -> None:
        """Send what a core call returned, report its events, and re-arm the timer."""
        for endpoint, payload in datagrams:
            try:
                self._running_socket().sendto(payload, (str(endpoint.ip), endpoint.port))
            except OSError as e:
                log.debug("membership: datagram to %s dropped: %s", endpoint, e.strerror)
        for event in self._core.drain_events():
            self._on_event(event)
        self._wakeup.set()

    def _running_socket(self) -> socket.socket:
        if self._socket is None:
            raise RuntimeError("the membership transport is not running")
        return self._socket

    def _close(self, sock: socket.socket) -> None:
        asyncio.get_running_loop().remove_reader(sock)
        sock.close()
