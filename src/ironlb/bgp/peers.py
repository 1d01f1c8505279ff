"""BGP sessions over TCP: the asyncio shell that drives `session.Session`, one `Peer` per
configured neighbour, and the `Listener` that accepts their connections.

    async with peers.Listener([node_ipv4, node_ipv6]) as listener:
        peer = peers.Peer(config, listener=listener, bfd_session=bfd, on_event=report)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(peer.run())
            peer.set_routes(families.Family.IPV4_UNICAST, {prefix: rib.RouteAttributes()})
            ...
            peer.stop("node drained")      # Cease NOTIFICATION; run() returns when flushed

The core decides everything (FSM, timers, idle-hold backoff, what to announce); this module
carries out its requests: ConnectRequested opens a TCP connection from `source_address` to
`address:port`, CloseRequested flushes and closes, and the core is woken at `next_deadline()`.
An attempt gets connectTime (the core's ConnectRetry timer) to succeed.

Invariants:
- `connection_lost` reaches a core only for a connection it did not ask to close; a connection
  it asked to close gets `CLOSE_GRACE` seconds to flush, then is aborted.
- Data is handed to the core as the transport reads it (at most 256 KiB at a time, under the
  core's 1 MiB limit).
- Connection collisions (RFC 4271 §6.8): a connection from the peer is taken even while our own
  attempt is under way; whichever connection comes second (the peer's, or our attempt completing
  late) runs on a second core. Once either core is Established, or both are in OpenConfirm, the
  loser (an Established session wins, else `fsm.keep_locally_initiated`) gets `dump_collision()`
  and the winner carries on as the peer's session. Events of a second core reach the owner only
  if it wins. A core whose connection is gone for good (a second core, or the first one while a
  second is alive) is dropped.
- A session waiting out its idle-hold backoff restarts at once when the peer connects (a
  rebooted router is back: on that connection only, without an attempt of its own to collide
  with it) or its BFD session comes Up, instead of refusing until the backoff ends; a session
  stopped by the owner refuses connections.
- TCP MD5 keys are on the connecting socket before connect() and on the listening sockets for
  as long as the peer is registered; TTL is 1 for directly connected eBGP and 255 otherwise.
- One registered peer per address; a stopping peer hands its address (and key) over to a new
  peer for that address, so a BGPPeer restarted by a configuration change never collides with
  its predecessor still flushing its Cease.
- A BFD session going Down (not AdminDown, RFC 5882 §3.2) aborts the connection without
  NOTIFICATION at once (the path is dead: nothing would get through) and reports the session
  down for that reason.
- Socket errors become events (`ConnectFailed`, `session.SessionDown` with the reason) and log
  lines; only a listener that cannot take the peer (`SpeakerError`) ends `run()` with an error.

Metrics use MetalLB's names, labelled by peer address; a peer's series go when `run()` ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import cast

import prometheus_client

from ironlb.bgp import bfd, bfd_transport, families, fsm, messages, rib, session, sockets

log = logging.getLogger(__name__)

CLOSE_GRACE = 2.0
"""Seconds a connection being closed may take to flush (a Cease) before it is aborted."""

_PEER = ["peer"]
SESSION_UP = prometheus_client.Gauge(
    "metallb_bgp_session_up", "BGP session state (1 is up, 0 is down)", _PEER
)
UPDATES_SENT = prometheus_client.Counter(
    "metallb_bgp_updates_total", "Number of BGP UPDATE messages sent", _PEER
)
ANNOUNCED_PREFIXES = prometheus_client.Gauge(
    "metallb_bgp_announced_prefixes_total",
    "Number of prefixes currently being advertised on the BGP session",
    _PEER,
)
OPENS_SENT = prometheus_client.Counter(
    "metallb_bgp_opens_sent", "Number of BGP OPEN messages sent", _PEER
)
NOTIFICATIONS_SENT = prometheus_client.Counter(
    "metallb_bgp_notifications_sent", "Number of BGP NOTIFICATION messages sent", _PEER
)
_SENT_METRICS = (
    (messages.MessageType.UPDATE, UPDATES_SENT),
    (messages.MessageType.OPEN, OPENS_SENT),
    (messages.MessageType.NOTIFICATION, NOTIFICATIONS_SENT),
)


class SpeakerError(Exception):
    """The speaker cannot serve a peer as configured (e.g. the kernel refuses a TCP MD5 key)."""


@dataclass(frozen=True, slots=True)
class PeerConfig:
    """One neighbour, as a MetalLB BGPPeer describes it."""

    session: session.SessionConfig
    address: sockets.IPAddress
    port: int = 179
    source_address: sockets.IPAddress | None = None
    """Bind outgoing connections to this address (MetalLB sourceAddress)."""
    password: str = ""
    """TCP MD5 password; empty for none."""
    ebgp_multihop: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} out of range")
        source = self.source_address
        if source is not None and source.version != self.address.version:
            raise ValueError(f"source address {source} and peer {self.address} differ in family")
        sockets.password_bytes(self.password)

    @property
    def ibgp(self) -> bool:
        config = self.session
        if config.peer_asn is not None:
            return config.peer_asn == config.local_asn
        return config.dynamic_asn is session.DynamicAsn.INTERNAL

    @property
    def ttl(self) -> int:
        return sockets.bgp_ttl(ibgp=self.ibgp, ebgp_multihop=self.ebgp_multihop)

    @property
    def name(self) -> str:
        """How logs and metrics name the peer."""
        return str(self.address) if self.port == 179 else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """An outgoing connection failed, or got no answer within connectTime (which is how a wrong
    TCP MD5 password looks)."""

    reason: str


Event = (
    session.SessionUp
    | session.SessionDown
    | session.NotificationSent
    | session.NotificationReceived
    | session.RouteRefreshRequested
    | session.EndOfRibReceived
    | session.RoutesSkipped
    | ConnectFailed
    | bfd.StateChanged
)
"""What a `Peer` reports to its owner."""


class _Connection(asyncio.Protocol):
    """One TCP connection. Until a `Peer` adopts it, it only reports that it is up."""

    def __init__(self, on_made: Callable[[_Connection], None], *, outbound: bool) -> None:
        self.outbound = outbound
        self.peer: Peer | None = None
        self.transport: asyncio.Transport | None = None
        self._on_made = on_made
        self._abort_timer: asyncio.TimerHandle | None = None

    @property
    def local_address(self) -> sockets.IPAddress:
        assert self.transport is not None, "connected"
        return sockets.host_address(self.transport.get_extra_info("sockname"))

    @property
    def remote_address(self) -> sockets.IPAddress:
        assert self.transport is not None, "connected"
        return sockets.host_address(self.transport.get_extra_info("peername"))

    def set_ttl(self, ttl: int) -> None:
        assert self.transport is not None, "connected"
        sockets.set_ttl(self.transport.get_extra_info("socket"), ttl)

    def write(self, data: bytes) -> None:
        assert self.transport is not None, "connected"
        self.transport.write(data)

    def close(self) -> None:
        """Flush what was written, then close; abort if that takes over `CLOSE_GRACE`."""
        assert self.transport is not None, "connected"
        self.transport.close()
        loop = asyncio.get_running_loop()
        self._abort_timer = loop.call_later(CLOSE_GRACE, self.transport.abort)

    def abort(self) -> None:
        """Close at once, dropping anything unsent."""
        assert self.transport is not None, "connected"
        self.transport.abort()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer._data_received(self, data)

    def eof_received(self) -> None:
        """The peer closed its side: close ours too (the default), reported as lost."""

    def connection_lost(self, exc: Exception | None) -> None:
        if self._abort_timer is not None:
            self._abort_timer.cancel()
        if self.peer is not None:
            self.peer._connection_lost(self, exc)


@dataclass(eq=False)
class _Channel:
    """A session core and the connection it runs on (at most one at a time)."""

    core: session.Session
    conn: _Connection | None = None
    pending: _Connection | None = None
    """The outgoing connection being opened, until it is up."""
    attempt: asyncio.Task[None] | None = None
    reported: collections.Counter[messages.MessageType] = dataclasses.field(
        default_factory=collections.Counter
    )
    """Sent messages already added to the metrics."""
    held: list[Event] = dataclasses.field(default_factory=list)
    """Events of a second core, told to the owner only if it becomes the peer's session."""


class Listener:
    """Accepts BGP connections on the node's addresses and hands each to the `Peer` registered
    for its remote address; connections from anyone else are closed."""

    def __init__(
        self,
        addresses: Iterable[sockets.IPAddress],
        port: int = 179,
        *,
        socket_factory: sockets.SocketFactory = socket.socket,
    ) -> None:
        self.addresses = tuple(addresses)
        self.port = port
        self._socket_factory = socket_factory
        self._sockets: list[socket.socket] = []
        self._servers: list[asyncio.Server] = []
        self._peers: dict[sockets.IPAddress, Peer] = {}

    async def __aenter__(self) -> Listener:
        loop = asyncio.get_running_loop()
        try:
            for address in self.addresses:
                sock = self._listening_socket(address)
                self._sockets.append(sock)
                for peer in self._peers.values():
                    if peer.config.password:
                        self._set_key(peer.config.address, peer.config.password, [sock])
                server = await loop.create_server(
                    lambda: _Connection(self._dispatch, outbound=False), sock=sock
                )
                self._servers.append(server)
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    @contextlib.contextmanager
    def registered(self, peer: Peer) -> Iterator[None]:
        """Hand connections from `peer`'s address to it, and accept them with its MD5 key.

        A peer that is stopping (flushing its Cease) hands the address, and the key, over to
        a successor at once: a BGPPeer whose password or timers change is stopped and started
        again as a new `Peer` while the old one's connection still closes. Only the peer that
        holds the address gives it up when its block ends."""
        address, password = peer.config.address, peer.config.password
        previous = self._peers.get(address)
        if previous is not None and not previous.stopping:
            raise SpeakerError(f"two peers with address {address}")
        if password or (previous is not None and previous.config.password):
            self._set_key(address, password, self._sockets)  # "" removes the previous key
        self._peers[address] = peer
        try:
            yield
        finally:
            if self._peers.get(address) is peer:
                del self._peers[address]
                if password:
                    with contextlib.suppress(SpeakerError):
                        self._set_key(address, "", self._sockets)

    def peer_for(self, address: sockets.IPAddress) -> Peer | None:
        """The peer a connection from `address` is handed to."""
        return self._peers.get(address)

    def _listening_socket(self, address: sockets.IPAddress) -> socket.socket:
        sock = self._socket_factory(sockets.family_of(address), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.version == 6:
                # One socket per address: IPv4 peers never appear as IPv4-mapped addresses,
                # which their MD5 keys would not match.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((str(address), self.port))
        except OSError as e:
            sock.close()
            raise SpeakerError(f"cannot listen on {address} port {self.port}: {e}") from e
        return sock

    def _set_key(
        self, address: sockets.IPAddress, password: str, targets: Iterable[socket.socket]
    ) -> None:
        """Install (or with "" remove) the MD5 key for `address` on the listening sockets."""
        for sock in targets:
            if sock.family == sockets.family_of(address):
                try:
                    sockets.set_md5(sock, address, password)
                except OSError as e:
                    raise SpeakerError(f"cannot set the TCP MD5 key for {address}: {e}") from e

    def _dispatch(self, conn: _Connection) -> None:
        remote = conn.remote_address
        peer = self.peer_for(remote)
        if peer is None:
            log.info("refused a BGP connection from %s: not a configured peer", remote)
            conn.abort()
        elif not peer._accept(conn):
            log.debug("refused a BGP connection from %s: %s", remote, peer.state.value)
            conn.abort()

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        for sock in self._sockets:
            sock.close()
        self._servers.clear()
        self._sockets.clear()


class Peer:
    """One BGP session with one neighbour, over whatever TCP connection currently carries it.

    Run `run()` in a task group; it returns after `stop()` or `close()`. `set_routes` may be
    called at any time: routes are announced as soon as the session is Established.
    """

    def __init__(
        self,
        config: PeerConfig,
        *,
        listener: Listener | None = None,
        bfd_session: bfd_transport.Session | None = None,
        on_event: Callable[[Event], None] | None = None,
        restarting: bool = False,
        socket_factory: sockets.SocketFactory = socket.socket,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`listener`: accept connections from the peer (else only connect out). `bfd_session`:
        follow its state (the owner opens and closes it). `restarting`: ironlb restarted and the
        peer should keep our routes meanwhile (Graceful Restart R bit, when configured)."""
        self.config = config
        self.connect_failures = 0
        self._listener = listener
        self._bfd = bfd_session
        self._on_event = on_event
        self._restarting = restarting
        self._socket_factory = socket_factory
        self._jitter = jitter
        self._main = _Channel(session.Session(config.session, jitter))
        self._second: _Channel | None = None
        self._routes: dict[families.Family, dict[families.Prefix, rib.RouteAttributes]] = {}
        self._connections: set[_Connection] = set()
        self._tasks: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._cause: tuple[str, bool] | None = None
        """Why the connection a core is told about was lost, and whether we ended it."""
        self._started = False
        self._stopping = False
        self._ended = False

    # -- inspection -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> fsm.State:
        return self._main.core.state

    @property
    def stopping(self) -> bool:
        """`stop()` or `close()` was called (or `run()` ended): it will never start again."""
        return self._stopping

    @property
    def negotiated(self) -> session.Negotiated | None:
        return self._main.core.negotiated

    @property
    def counters(self) -> session.Counters:
        """Messages of the current session core (a collision may replace it)."""
        return self._main.core.counters

    def advertised(self, family: families.Family) -> Mapping[families.Prefix, rib.RouteAttributes]:
        return self._main.core.advertised(family)

    # -- driven by the owner ----------------------------------------------------------------

    async def run(self) -> None:
        """Run the session until `stop()` or `close()` has finished."""
        if self._started:
            raise RuntimeError(f"peer {self.name} already ran")
        self._started = True
        loop = asyncio.get_running_loop()
        try:
            with contextlib.ExitStack() as stack:
                if self._listener is not None and not self._stopping:
                    # (A peer stopped before it ran needs no connections; its successor may
                    # hold the address already.)
                    stack.enter_context(self._listener.registered(self))
                if self._bfd is not None:
                    stack.enter_context(self._bfd.watch(self._bfd_changed))
                async with asyncio.TaskGroup() as tasks:
                    self._tasks = tasks
                    if not self._stopping:
                        self._main.core.start(loop.time(), restarting=self._restarting)
                        self._process(self._main)
                    await self._drive(loop)
        finally:
            # Done or cancelled: nothing may start again, nothing is left open or reported.
            self._stopping = self._ended = True
            self._tasks = None
            for conn in list(self._connections):
                conn.peer = None
                conn.abort()
            self._connections.clear()
            for metric in (SESSION_UP, ANNOUNCED_PREFIXES, *(m for _, m in _SENT_METRICS)):
                with contextlib.suppress(KeyError):
                    metric.remove(self.name)

    def set_routes(
        self, family: families.Family, routes: Mapping[families.Prefix, rib.RouteAttributes]
    ) -> None:
        """Make `routes` everything announced for `family` (ValueError if not enabled)."""
        self._main.core.set_routes(family, routes)
        self._routes[family] = dict(routes)
        if self._second is not None:
            self._second.core.set_routes(family, routes)
        for channel in self._channels():
            self._process(channel)

    def update_routes(
        self,
        family: families.Family,
        changes: Mapping[families.Prefix, rib.RouteAttributes | None],
    ) -> None:
        """Change only these routes of `family` (None: withdraw); the others stay."""
        self._main.core.update_routes(family, changes)
        routes = self._routes.setdefault(family, {})
        for prefix, route in changes.items():
            if route is None:
                routes.pop(prefix, None)
            else:
                routes[prefix] = route
        if self._second is not None:
            self._second.core.update_routes(family, changes)
        for channel in self._channels():
            self._process(channel)

    def stop(self, reason: str = "") -> None:
        """End the session for good with a Cease (administrative shutdown, `reason` as the
        RFC 9003 shutdown communication)."""
        self._stopping = True
        now = self._now()
        for channel in self._channels():
            channel.core.stop(now, reason)
            self._process(channel)
        self._settle(now)

    def close(self) -> None:
        """End the session without NOTIFICATION, as if ironlb had died: a peer that supports
        Graceful Restart keeps our routes for the restart time."""
        self._stopping = True
        now = self._now()
        for channel in self._channels():
            self._cancel_attempt(channel)
            if channel.conn is not None:
                self._drop_connection(channel, now, "closed without NOTIFICATION")
            channel.core.stop(now)
            self._process(channel)
        self._settle(now)

    # -- the loop ---------------------------------------------------------------------------

    async def _drive(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            now = loop.time()
            for channel in self._channels():
                channel.core.on_timer(now)
                self._process(channel)
            self._settle(now)
            if self._finished():
                return
            self._wake.clear()
            deadlines = [d for c in self._channels() if (d := c.core.next_deadline()) is not None]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(deadlines, default=None)):
                    await self._wake.wait()

    def _finished(self) -> bool:
        return (
            self._stopping
            and not self._connections
            and all(c.attempt is None for c in self._channels())
        )

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _channels(self) -> list[_Channel]:
        return [self._main] if self._second is None else [self._main, self._second]

    # -- carrying out what a core asks ------------------------------------------------------

    def _process(self, channel: _Channel) -> None:
        """Send what `channel`'s core queued and act on its events."""
        core = channel.core
        data = core.data_to_send()
        if data and channel.conn is not None:
            channel.conn.write(data)
        for event in core.events():
            match event:
                case session.ConnectRequested():
                    if channel is self._main and not self._stopping:
                        self._connect(channel)
                case session.CloseRequested():
                    self._close(channel)
                case session.SessionDown() if self._cause is not None:
                    reason, ours = self._cause
                    # The peer is not restarting when we are the ones who ended the connection.
                    restarting = event.peer_restarting and not ours
                    event = dataclasses.replace(event, reason=reason, peer_restarting=restarting)
                    self._emit(channel, event)
                case _:
                    self._emit(channel, event)
        self._update_metrics(channel)
        self._wake.set()

    def _emit(self, channel: _Channel, event: Event) -> None:
        if channel is self._second:
            channel.held.append(event)
        else:
            self._publish(event)

    def _publish(self, event: Event) -> None:
        match event:
            case session.SessionUp(negotiated=negotiated):
                self._restarting = False
                log.info(
                    "BGP session with %s established (AS %d, hold time %d s)",
                    self.name,
                    negotiated.peer_asn,
                    negotiated.hold_time,
                )
            case session.SessionDown():
                log.warning("BGP session with %s down: %s", self.name, event.reason)
            case session.NotificationSent() | session.NotificationReceived():
                log.info("BGP %s: %s", self.name, event)
            case ConnectFailed():
                log.info("BGP %s: %s", self.name, event.reason)
            case session.RoutesSkipped():
                log.warning(
                    "BGP %s: no %s next hop for %s", self.name, event.family, list(event.prefixes)
                )
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("event handler of BGP peer %s failed", self.name)

    def _update_metrics(self, channel: _Channel) -> None:
        if self._ended:
            return
        sent = channel.core.counters.messages_sent
        for kind, metric in _SENT_METRICS:
            if sent[kind] != channel.reported[kind]:
                metric.labels(self.name).inc(sent[kind] - channel.reported[kind])
                channel.reported[kind] = sent[kind]
        core = self._main.core
        SESSION_UP.labels(self.name).set(1 if core.state is fsm.State.ESTABLISHED else 0)
        announced = sum(len(core.advertised(f)) for f in self.config.session.families)
        ANNOUNCED_PREFIXES.labels(self.name).set(announced)

    def _connect(self, channel: _Channel) -> None:
        assert self._tasks is not None, "the core only asks to connect while running"
        self._cancel_attempt(channel)
        conn = _Connection(self._outbound_made, outbound=True)
        channel.pending = conn
        channel.attempt = self._tasks.create_task(self._open(channel, conn))

    async def _open(self, channel: _Channel, conn: _Connection) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        sock = self._socket_factory(sockets.family_of(config.address), socket.SOCK_STREAM)
        handed_over = False
        try:
            sock.setblocking(False)
            if config.password:
                sockets.set_md5(sock, config.address, config.password)
            sockets.set_ttl(sock, config.ttl)
            if config.source_address is not None:
                sock.bind((str(config.source_address), 0))
            # The core's ConnectRetry timer normally abandons the attempt first; this bounds an
            # attempt that outlived it because a connection from the peer got there first.
            async with asyncio.timeout(config.session.timers.connect_retry_time):
                await loop.sock_connect(sock, (str(config.address), config.port))
            handed_over = True  # from here on the transport owns (and closes) the socket
            await loop.create_connection(lambda: conn, sock=sock)
        except OSError as e:  # TimeoutError included
            reason = self._no_answer() if isinstance(e, TimeoutError) else e.strerror or str(e)
            if channel.pending is conn:
                channel.pending = None
                if channel.conn is None:
                    self._attempt_failed(channel, f"connecting to {config.name}: {reason}")
        finally:
            if not handed_over:
                sock.close()
            if channel.attempt is asyncio.current_task():
                channel.attempt = None
                self._wake.set()

    def _outbound_made(self, conn: _Connection) -> None:
        channel = next((c for c in self._channels() if c.pending is conn), None)
        if channel is None:
            conn.abort()  # abandoned while it was being set up
            return
        channel.pending = None
        if channel.conn is None:
            target = channel
        elif self._second is None:
            # The peer's connection arrived first and runs on this core: a collision.
            target = self._second = self._second_channel()
        else:
            conn.abort()
            return
        self._adopt(conn)
        self._attach(target, conn)

    def _attempt_failed(self, channel: _Channel, reason: str) -> None:
        self._connect_failed(reason)
        now = self._now()
        channel.core.connection_lost(now)
        self._process(channel)
        self._settle(now)

    def _no_answer(self) -> str:
        seconds = self.config.session.timers.connect_retry_time
        return (
            f"no answer within {seconds:g} s (peer down, filtered, or a TCP MD5 password mismatch)"
        )

    def _connect_failed(self, reason: str) -> None:
        self.connect_failures += 1
        self._publish(ConnectFailed(reason))

    def _cancel_attempt(self, channel: _Channel) -> None:
        channel.pending = None
        if channel.attempt is not None:
            channel.attempt.cancel()
            channel.attempt = None

    def _close(self, channel: _Channel) -> None:
        if channel.pending is not None and channel.core.state is fsm.State.CONNECT:
            # The ConnectRetry timer fired with the attempt unanswered; the core retries.
            self._connect_failed(f"connecting to {self.name}: {self._no_answer()}")
        self._cancel_attempt(channel)
        conn, channel.conn = channel.conn, None
        if conn is not None:
            conn.close()

    # -- connections ------------------------------------------------------------------------

    def _adopt(self, conn: _Connection) -> None:
        conn.peer = self
        self._connections.add(conn)

    def _attach(self, channel: _Channel, conn: _Connection) -> None:
        now = self._now()
        channel.conn = conn
        channel.core.connection_made(now, local_address=conn.local_address)
        self._process(channel)
        self._settle(now)

    def _accept(self, conn: _Connection) -> bool:
        """A connection from the peer's address arrived; False refuses it."""
        main = self._main
        if self._restartable():
            # Waiting out the idle-hold backoff, but the peer is evidently back (a rebooted
            # router): start now rather than refuse it, as Idle otherwise would, and on its
            # connection alone. An attempt of our own would collide with it, and the two sides
            # may resolve that differently (each closing the connection the other kept).
            self._restart(self._now())
            self._cancel_attempt(main)
        if not self._started or self._stopping or main.core.state is fsm.State.IDLE:
            return False
        if main.conn is not None and self._second is not None:
            return False  # two connections are being resolved already
        try:
            conn.set_ttl(self.config.ttl)
        except OSError as e:
            log.warning("BGP %s: cannot set the TTL of a connection: %s", self.name, e)
            return False
        if main.conn is None:
            # The peer was faster. Our own attempt, if any, goes on: should it succeed too, the
            # two connections collide and one is chosen by BGP Identifier, as RFC 4271 says.
            channel = main
        else:
            channel = self._second = self._second_channel()
        self._adopt(conn)
        self._attach(channel, conn)
        return True

    def _second_channel(self) -> _Channel:
        core = session.Session(self.config.session, self._jitter)
        for family, routes in self._routes.items():
            core.set_routes(family, routes)
        core.start(self._now(), restarting=self._restarting)
        # Its ConnectRequested is moot: the connection it will run on is already here.
        core.events()
        return _Channel(core)

    def _data_received(self, conn: _Connection, data: bytes) -> None:
        channel = next((c for c in self._channels() if c.conn is conn), None)
        if channel is None:
            return  # a connection being closed
        now = self._now()
        channel.core.receive_data(data, now)
        self._process(channel)
        self._settle(now)

    def _connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        self._connections.discard(conn)
        channel = next((c for c in self._channels() if c.conn is conn), None)
        if channel is None:
            self._wake.set()  # a closing connection is gone: run() may be able to finish
            return
        channel.conn = None
        reason = f"connection lost: {exc}" if exc is not None else "peer closed the connection"
        now = self._now()
        self._lost(channel, now, reason, ours=False)
        self._settle(now)

    def _drop_connection(self, channel: _Channel, now: float, reason: str) -> None:
        """End `channel`'s connection without a word and tell its core."""
        conn, channel.conn = channel.conn, None
        assert conn is not None, "only called with a connection"
        conn.abort()
        self._lost(channel, now, reason, ours=True)

    def _lost(self, channel: _Channel, now: float, reason: str, *, ours: bool) -> None:
        self._cause = (reason, ours)
        try:
            channel.core.connection_lost(now)
            self._process(channel)
        finally:
            self._cause = None

    # -- collisions -------------------------------------------------------------------------

    def _settle(self, now: float) -> None:
        """Resolve two cores into one, as soon as that can be decided."""
        second = self._second
        if second is None:
            return
        main = self._main
        if second.conn is None or second.core.state is fsm.State.IDLE:
            self._discard(second, now)
            self._second = None
        elif main.conn is None:
            # The first connection failed while the second is alive: carry on with the second.
            self._discard(main, now)
            self._promote(second)
        elif fsm.State.ESTABLISHED in (main.core.state, second.core.state) or (
            main.core.state is second.core.state is fsm.State.OPEN_CONFIRM
        ):
            loser = self._collision_loser(main, second)
            log.info("BGP %s: connection collision, closing one connection", self.name)
            loser.core.dump_collision(now)
            self._process(loser)
            self._discard(loser, now)
            if loser is main:
                self._promote(second)
            else:
                self._second = None
        self._update_metrics(self._main)

    def _promote(self, second: _Channel) -> None:
        self._main, self._second = second, None
        held, second.held = second.held, []
        for event in held:
            self._publish(event)

    def _collision_loser(self, main: _Channel, second: _Channel) -> _Channel:
        if main.core.state is fsm.State.ESTABLISHED:
            return second
        if second.core.state is fsm.State.ESTABLISHED:
            return main
        negotiated = main.core.negotiated
        assert negotiated is not None, "negotiated in OpenConfirm"
        assert main.conn is not None, "connected in OpenConfirm"
        assert second.conn is not None, "connected in OpenConfirm"
        if main.conn.outbound == second.conn.outbound:
            return main  # both from the peer: it gave up on the older one
        keep_outbound = fsm.keep_locally_initiated(
            self.config.session.router_id, negotiated.peer_router_id
        )
        return second if main.conn.outbound == keep_outbound else main

    def _discard(self, channel: _Channel, now: float) -> None:
        """Forget a core for good: no timers, no connection, no attempt."""
        self._cancel_attempt(channel)
        if channel.conn is not None:
            self._drop_connection(channel, now, "replaced by the other connection")
        if channel.core.state is not fsm.State.IDLE or channel.core.next_deadline() is not None:
            channel.core.stop(now)
            self._process(channel)

    # -- BFD --------------------------------------------------------------------------------

    def _bfd_changed(self, event: bfd.StateChanged) -> None:
        self._publish(event)
        assert self._bfd is not None, "only watched with a BFD session"
        now = self._now()
        if event.state is bfd.State.DOWN and event.previous is bfd.State.UP:
            if self._bfd.remote_admin_down:
                return  # the peer removed BFD on purpose: not a failure (RFC 5882 §3.2)
            reason = f"BFD session down ({event.diagnostic.name.lower().replace('_', ' ')})"
            for channel in self._channels():
                if channel.conn is not None:
                    self._drop_connection(channel, now, reason)
            self._settle(now)
        elif event.state is bfd.State.UP and self._restartable():
            # The path is back: do not sit out the rest of the idle-hold backoff.
            self._restart(now)
        self._wake.set()

    def _restartable(self) -> bool:
        """Idle after a failure, waiting to restart by itself (not stopped by the owner)."""
        return self._started and not self._stopping and self._main.core.state is fsm.State.IDLE

    def _restart(self, now: float) -> None:
        self._main.core.stop(now)
        self._main.core.start(now, restarting=self._restarting)
        self._process(self._main)
