"""BFD over UDP: the asyncio shell around `bfd.Session`, single-hop (RFC 5881) and multihop
(RFC 5883).

One `Transport` per speaker process holds every BFD session of the node:

    async with bfd_transport.Transport() as transport:
        session = transport.open_session(peer, local=..., profile=..., multihop=False)
        with session.watch(on_state_change): ...
        session.close()

Invariants:
- One receive socket per (address family, port): 3784 for single-hop, 4784 for multihop, bound
  to the wildcard address and reporting each datagram's TTL. A packet goes to the session whose
  local discriminator is its Your Discriminator, or, while that is still 0, to the session for
  its source address; packets from any other address are dropped and counted.
- Each session sends from its own socket, bound to a source port in 49152-65535 (the same port
  for the session's whole life) with TTL 255; single-hop sessions accept only TTL 255 on receipt,
  multihop ones the profile's minimum TTL (checked by the core).
- Local discriminators are random, non-zero and unique within the transport.
- Timers run as event-loop callbacks at the core's `next_deadline()`: a detection timeout is
  reported to the watchers the moment it expires, so BGP can be taken down at once.
- A send error (the link is down, no route) is counted and otherwise ignored: the peer's silence
  is what BFD is for, and the detection timer reports it.
- `close()` moves a session to AdminDown and keeps sending that for a moment (RFC 5880 §6.8.16),
  so the peer learns the session was removed on purpose instead of detecting a failure.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import random
import socket
from collections.abc import Callable, Iterator
from types import TracebackType

import prometheus_client

from ironlb.bgp import bfd, sockets

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 512
_READS_PER_WAKEUP = 64
"""Datagrams read per readiness callback, so one busy socket cannot starve the loop."""
_BIND_ATTEMPTS = 64
_DISCRIMINATOR_ATTEMPTS = 64
_DEFAULT_PROFILE = bfd.Profile()

PACKETS_DROPPED = prometheus_client.Counter(
    "ironlb_bfd_packets_dropped",
    "BFD packets dropped on receipt (malformed, unknown session, bad TTL ...)",
    ["reason"],
)
SEND_ERRORS = prometheus_client.Counter(
    "ironlb_bfd_send_errors", "BFD packets the kernel refused to send", ["peer"]
)
SESSION_UP = prometheus_client.Gauge(
    "ironlb_bfd_session_up", "BFD session state (1 is up, 0 is not)", ["peer"]
)

Watcher = Callable[[bfd.StateChanged], None]


class BfdTransportError(Exception):
    """A session could not be opened (no free source port, socket error)."""


class Session:
    """One BFD session with one peer. Made by `Transport.open_session`."""

    def __init__(
        self,
        transport: Transport,
        core: bfd.Session,
        peer: sockets.IPAddress,
        local: sockets.IPAddress | None,
        send_socket: socket.socket,
    ) -> None:
        self.peer = peer
        self.local = local
        self.core = core
        self._transport = transport
        self._socket = send_socket
        self._port = bfd.MULTIHOP_PORT if core.config.multihop else bfd.CONTROL_PORT
        self._watchers: list[Watcher] = []
        self._timer: asyncio.TimerHandle | None = None
        self._release_timer: asyncio.TimerHandle | None = None
        self._dropped_reported: collections.Counter[bfd.Discard] = collections.Counter()
        self.send_errors = 0
        self.closed = False

    @property
    def state(self) -> bfd.State:
        return self.core.state

    @property
    def multihop(self) -> bool:
        return self.core.config.multihop

    @property
    def remote_admin_down(self) -> bool:
        """The peer says it took the session down on purpose: not a forwarding failure, so BGP
        must not be torn down for it (RFC 5882 §3.2)."""
        return self.core.remote_state is bfd.State.ADMIN_DOWN

    @contextlib.contextmanager
    def watch(self, watcher: Watcher) -> Iterator[None]:
        """Call `watcher` on every state change while the block runs."""
        self._watchers.append(watcher)
        try:
            yield
        finally:
            self._watchers.remove(watcher)

    def set_profile(self, profile: bfd.Profile) -> None:
        self.core.set_profile(profile)
        self._run()

    def close(self) -> None:
        """Go AdminDown, tell the peer for a little while, then release the session."""
        if self.closed:
            return
        self.closed = True
        self._transport.unlist(self)
        self.core.admin_down()
        self._run()
        # At least two transmit intervals: the first AdminDown packet is already due at the old
        # rate, the next at the (slow) rate of a session that is not Up.
        linger = 2 * self.core.transmit_interval()
        self._release_timer = self._transport.loop.call_later(linger, self._release)

    # -- driven by the transport ------------------------------------------------------------

    def receive(self, packet: bytes, ttl: int) -> None:
        self.core.receive(packet, self._transport.loop.time(), ttl)
        dropped = self.core.counters.dropped
        for reason, count in (dropped - self._dropped_reported).items():
            PACKETS_DROPPED.labels(reason.value).inc(count)
        self._dropped_reported = dropped.copy()
        self._run()

    def _run(self) -> None:
        """Send what is due, report state changes, and sleep until the next deadline."""
        loop = self._transport.loop
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for packet in self.core.poll(loop.time()):
            self._send(packet)
        for event in self.core.events():
            self._report(event)
        deadline = self.core.next_deadline()
        if deadline is not None and not self._transport.closed:
            self._timer = loop.call_at(deadline, self._run)

    def _send(self, packet: bytes) -> None:
        try:
            self._socket.sendto(packet, (str(self.peer), self._port))
        except OSError as e:
            # Link down, no route, buffer full: the detection timer reports what matters.
            self.send_errors += 1
            SEND_ERRORS.labels(str(self.peer)).inc()
            log.debug("BFD to %s: %s", self.peer, e.strerror or e)

    def _report(self, event: bfd.StateChanged) -> None:
        SESSION_UP.labels(str(self.peer)).set(1 if event.state is bfd.State.UP else 0)
        level = logging.WARNING if event.previous is bfd.State.UP else logging.INFO
        log.log(
            level,
            "BFD session with %s: %s -> %s (%s)",
            self.peer,
            event.previous.name,
            event.state.name,
            event.diagnostic.name,
        )
        for watcher in list(self._watchers):
            try:
                watcher(event)
            except Exception:
                log.exception("BFD watcher for %s failed", self.peer)

    def _release(self) -> None:
        self.shutdown()
        self._transport.forget(self)

    def shutdown(self) -> None:
        """Stop timers and close the socket at once (no goodbye)."""
        for timer in (self._timer, self._release_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._release_timer = None
        self._socket.close()
        with contextlib.suppress(KeyError):
            SESSION_UP.remove(str(self.peer))


class Transport:
    """Every BFD session of one speaker, sharing receive sockets."""

    def __init__(
        self,
        *,
        socket_factory: sockets.SocketFactory = socket.socket,
        rng: random.Random | None = None,
    ) -> None:
        self._socket_factory = socket_factory
        self._rng = rng or random.Random()
        self._receivers: dict[tuple[int, bool], socket.socket] = {}
        self._by_discriminator: dict[int, Session] = {}
        self._by_peer: dict[tuple[sockets.IPAddress, bool], Session] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "use the transport inside `async with`"
        return self._loop

    async def __aenter__(self) -> Transport:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed = True
        for session in list(self._by_discriminator.values()):
            session.shutdown()
        self._by_discriminator.clear()
        self._by_peer.clear()
        for sock in self._receivers.values():
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self._receivers.clear()

    def open_session(
        self,
        peer: sockets.IPAddress,
        *,
        local: sockets.IPAddress | None = None,
        profile: bfd.Profile = _DEFAULT_PROFILE,
        multihop: bool = False,
    ) -> Session:
        """Start a session with `peer`, sending from `local` (any address of the right family
        when None; RFC 5883 wants one for multihop)."""
        if self.closed:
            raise BfdTransportError("the BFD transport is closed")
        if local is not None and local.version != peer.version:
            raise ValueError(f"local address {local} and peer {peer} differ in family")
        if (peer, multihop) in self._by_peer:
            raise ValueError(f"a {'multihop ' if multihop else ''}BFD session with {peer} exists")
        self._receiver(sockets.family_of(peer), multihop)
        discriminator = self._new_discriminator()
        send_socket = self._send_socket(peer, local)
        core = bfd.Session(
            bfd.SessionConfig(discriminator, profile, multihop),
            self.loop.time(),
            self._rng.random,
        )
        session = Session(self, core, peer, local, send_socket)
        self._by_discriminator[discriminator] = session
        self._by_peer[(peer, multihop)] = session
        session._run()
        return session

    def unlist(self, session: Session) -> None:
        """Packets without our discriminator no longer reach `session` (it is closing); a new
        session with the same peer may be opened."""
        if self._by_peer.get((session.peer, session.multihop)) is session:
            del self._by_peer[(session.peer, session.multihop)]

    def forget(self, session: Session) -> None:
        self.unlist(session)
        self._by_discriminator.pop(session.core.config.local_discriminator, None)

    # -- sockets ----------------------------------------------------------------------------

    def _receiver(self, family: int, multihop: bool) -> None:
        if (family, multihop) in self._receivers:
            return
        sock = self._socket_factory(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sockets.receive_ttl(sock)
            port = bfd.MULTIHOP_PORT if multihop else bfd.CONTROL_PORT
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
            self.loop.add_reader(sock.fileno(), self._readable, sock, multihop)
        except OSError as e:
            sock.close()
            raise BfdTransportError(f"cannot listen for BFD: {e.strerror or e}") from e
        self._receivers[(family, multihop)] = sock

    def _send_socket(
        self, peer: sockets.IPAddress, local: sockets.IPAddress | None
    ) -> socket.socket:
        family = sockets.family_of(peer)
        sock = self._socket_factory(family, socket.SOCK_DGRAM)
        host = str(local) if local is not None else ("::" if family == socket.AF_INET6 else "")
        try:
            sock.setblocking(False)
            sockets.set_ttl(sock, bfd.TTL)
            for _ in range(_BIND_ATTEMPTS):
                port = self._rng.choice(bfd.SOURCE_PORTS)
                try:
                    sock.bind((host, port))
                except OSError as e:
                    if e.errno != errno.EADDRINUSE:
                        raise
                else:
                    return sock
            raise BfdTransportError(f"no free BFD source port for {peer}")
        except OSError as e:
            sock.close()
            raise BfdTransportError(f"cannot send BFD to {peer}: {e.strerror or e}") from e
        except BfdTransportError:
            sock.close()
            raise

    def _new_discriminator(self) -> int:
        for _ in range(_DISCRIMINATOR_ATTEMPTS):
            candidate = self._rng.getrandbits(32)
            if candidate and candidate not in self._by_discriminator:
                return candidate
        raise BfdTransportError("no free BFD discriminator")

    def _readable(self, sock: socket.socket, multihop: bool) -> None:
        for _ in range(_READS_PER_WAKEUP):
            try:
                data, ancillary, _flags, source = sock.recvmsg(
                    _MAX_DATAGRAM, sockets.TTL_CMSG_SPACE
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("BFD receive failed: %s", e.strerror or e)
                return
            self._dispatch(data, sockets.received_ttl(ancillary), source, multihop)

    def _dispatch(self, data: bytes, ttl: int, source: tuple[object, ...], multihop: bool) -> None:
        try:
            packet = bfd.decode(data)
        except bfd.BfdError as e:
            PACKETS_DROPPED.labels(e.reason.value).inc()
            return
        sender = sockets.host_address(source)
        if packet.your_discriminator:
            session = self._by_discriminator.get(packet.your_discriminator)
        else:
            session = self._by_peer.get((sender, multihop))
        # A discriminator names a session, not a peer: the packet must also come from it.
        if session is None or session.peer != sender or session.multihop != multihop:
            PACKETS_DROPPED.labels(bfd.Discard.UNKNOWN_DISCRIMINATOR.value).inc()
            log.debug("BFD packet from %s for no session of ours", sender)
            return
        session.receive(data, ttl)
