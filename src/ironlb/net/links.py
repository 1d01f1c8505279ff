"""Links, their addresses and their changes, and route lookups, from the kernel over netlink.

pyroute2 stays inside `net/` (import-linter enforces it): callers get immutable `Link`
snapshots, `LinkEvent`s and `NetlinkFailure`, never a pyroute2 message or exception.

- `links()` lists every link with its addresses; `route_source()` asks the kernel which
  interface and source address it would use to reach a peer.
- `Monitor` keeps a table of links and reports each change the speaker acts upon: a link
  appearing, disappearing, or changing identity (name, MAC, master, NOARP); its administrative
  state and carrier; its addresses. It subscribes before it lists, so nothing that happens in
  between is lost. When the kernel drops notifications because the socket buffer overflowed
  (ENOBUFS), it discards what is still queued (older than the loss), lists again and reports the
  difference: its table always converges to the kernel's, whatever was lost.

The monitor reads its own netlink socket, parsing with pyroute2's RTNL marshal, because an
overflow must be seen as such and the socket must stay usable after it; requests (dumps, route
lookups) use pyroute2's asyncio API. Sockets are opened in the network namespace of the calling
thread, when a function is called or the monitor is entered, and keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import ipaddress
import logging
import socket
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, TypeAlias

import pyroute2
from pyroute2.netlink import rtnl
from pyroute2.netlink.rtnl import marshal

log = logging.getLogger(__name__)

Address: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
"""An address of a link, with its prefix length."""

ARPHRD_ETHER = 1

_IFF_UP = 0x1
_IFF_NOARP = 0x80
_IFF_LOWER_UP = 0x10000
_GROUPS = rtnl.RTMGRP_LINK | rtnl.RTMGRP_IPV4_IFADDR | rtnl.RTMGRP_IPV6_IFADDR
_DATAGRAM_SIZE = 1 << 16
"""Bytes read per notification datagram; one that does not fit counts as lost (MSG_TRUNC)."""


class NetlinkFailure(Exception):
    """The kernel refused a request, or talking to it failed; `errno` says why when known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True, slots=True)
class Link:
    """A snapshot of one network interface."""

    index: int
    name: str
    kind: str
    """Driver kind of a virtual link ("veth", "bridge", "vlan", "bond", ...); "" for a NIC."""
    link_type: int
    """ARPHRD_* hardware type: `ARPHRD_ETHER` for Ethernet, veths and bridges included."""
    mac: str | None
    """Hardware address as the kernel prints it (a MAC on Ethernet); None if it has none."""
    up: bool
    """Administratively up (IFF_UP)."""
    carrier: bool
    """The link layer is up (IFF_LOWER_UP): a cable, or a veth whose peer is up."""
    noarp: bool
    master: int | None
    """Index of the bridge, bond or VRF this link is enslaved to."""
    addresses: tuple[Address, ...] = ()

    @property
    def ethernet(self) -> bool:
        return self.link_type == ARPHRD_ETHER


class Change(enum.Enum):
    LINK_ADDED = "link_added"
    LINK_REMOVED = "link_removed"
    LINK_CHANGED = "link_changed"
    """Name, MAC, kind, hardware type, master or NOARP changed."""
    ADMIN_UP = "admin_up"
    ADMIN_DOWN = "admin_down"
    CARRIER_UP = "carrier_up"
    CARRIER_DOWN = "carrier_down"
    ADDRESS_ADDED = "address_added"
    ADDRESS_REMOVED = "address_removed"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    change: Change
    link: Link
    """The link after the change (its last snapshot for LINK_REMOVED)."""
    address: Address | None = None
    """The address added or removed."""


class Route(NamedTuple):
    """How the kernel would reach a destination: through `interface`, from `source`."""

    interface: str
    source: ipaddress.IPv4Address | ipaddress.IPv6Address


async def links() -> list[Link]:
    """Every link of this network namespace with its addresses, by index."""
    async with _rtnl() as ipr:
        table = await _dump(ipr)
    return [table[index] for index in sorted(table)]


async def route_source(destination: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Route:
    """The interface and source address the kernel would use to send to `destination`."""
    async with _rtnl() as ipr:
        routes = await ipr.route("get", dst=str(destination))
        if not routes:
            raise NetlinkFailure(f"no route to {destination}")
        oif, source = routes[0].get("RTA_OIF"), routes[0].get("RTA_PREFSRC")
        if oif is None or source is None:
            raise NetlinkFailure(f"the route to {destination} has no interface or source")
        found = await ipr.link("get", index=oif)
        return Route(str(found[0].get("IFLA_IFNAME")), ipaddress.ip_address(source))


class Monitor:
    """A live table of links and a stream of their changes: `async for event in monitor`.

    Use as `async with`. Events come in the kernel's order; one notification may yield several
    (a link set down usually loses carrier too). `links` is the table the monitor holds: it
    reflects every event returned so far, and may already reflect some still to come, which is
    what a level-triggered reader wants.
    """

    def __init__(self, *, receive_buffer: int = 1 << 20) -> None:
        """`receive_buffer`: SO_RCVBUF of the notification socket (capped by net.core.rmem_max);
        when it overflows, the monitor lists everything again."""
        self._receive_buffer = receive_buffer
        self._table: dict[int, Link] = {}
        self._pending: deque[LinkEvent] = deque()
        self._socket: socket.socket | None = None
        self._requests: contextlib.AsyncExitStack | None = None
        self._ipr: Any = None
        self._marshal = marshal.MarshalRtnl()
        self.resyncs = 0
        """How many times notifications were lost and the table was listed again."""

    @property
    def links(self) -> Mapping[int, Link]:
        return self._table

    async def __aenter__(self) -> Monitor:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._receive_buffer)
            sock.bind((0, _GROUPS))
            async with contextlib.AsyncExitStack() as stack:
                self._ipr = await stack.enter_async_context(_rtnl())
                self._table = await _dump(self._ipr)
                self._requests = stack.pop_all()
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._requests is not None:
            await self._requests.aclose()
            self._requests = None

    def __aiter__(self) -> Monitor:
        return self

    async def __anext__(self) -> LinkEvent:
        while not self._pending:
            if self._socket is None:
                raise StopAsyncIteration
            data = await self._receive(self._socket)
            if data is None:
                await self._resync(self._socket)
            else:
                for message in self._marshal.parse(data):
                    self._apply(message)
        return self._pending.popleft()

    async def _receive(self, sock: socket.socket) -> bytes | None:
        """The next notification datagram, or None if notifications were lost."""
        while True:
            try:
                data, _, flags, _ = sock.recvmsg(_DATAGRAM_SIZE)
            except BlockingIOError:
                await _readable(sock.fileno())
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    return None
                raise NetlinkFailure(f"reading link notifications: {e.strerror}", e.errno) from e
            return None if flags & socket.MSG_TRUNC else data

    async def _resync(self, sock: socket.socket) -> None:
        self.resyncs += 1
        log.warning("link notifications were lost (socket buffer overflow): listing links again")
        # What is still queued predates the loss: applied after a fresh list, it would roll the
        # table back to a state older than the kernel's.
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(_DATAGRAM_SIZE)
        before = self._table
        with _translating():
            self._table = await _dump(self._ipr)
        for index in sorted(before.keys() | self._table.keys()):
            self._pending += _changes(before.get(index), self._table.get(index))

    def _apply(self, message: Any) -> None:
        event = message.get("event")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            # Bridge port notifications (family AF_BRIDGE) come on the same group with partial
            # contents, and their RTM_DELLINK only means "no longer a bridge port".
            if message["family"] != socket.AF_UNSPEC:
                return
            before = self._table.pop(int(message["index"]), None)
            after = None
            if event == "RTM_NEWLINK":
                after = _link(message, before.addresses if before else ())
        elif event in ("RTM_NEWADDR", "RTM_DELADDR"):
            before = self._table.pop(int(message["index"]), None)
            if before is None:
                return  # its link was removed meanwhile
            address = _address(message)
            kept = tuple(a for a in before.addresses if a != address)
            if event == "RTM_NEWADDR":
                kept += (address,)
            after = replace(before, addresses=kept)
        else:
            return
        if after is not None:
            self._table[after.index] = after
        self._pending += _changes(before, after)


def _changes(before: Link | None, after: Link | None) -> list[LinkEvent]:
    if before is None:
        return [] if after is None else [LinkEvent(Change.LINK_ADDED, after)]
    if after is None:
        return [LinkEvent(Change.LINK_REMOVED, before)]
    events = []
    if replace(before, up=after.up, carrier=after.carrier, addresses=after.addresses) != after:
        events.append(LinkEvent(Change.LINK_CHANGED, after))
    if before.up != after.up:
        events.append(LinkEvent(Change.ADMIN_UP if after.up else Change.ADMIN_DOWN, after))
    if before.carrier != after.carrier:
        events.append(LinkEvent(Change.CARRIER_UP if after.carrier else Change.CARRIER_DOWN, after))
    events += [
        LinkEvent(Change.ADDRESS_REMOVED, after, address)
        for address in before.addresses
        if address not in after.addresses
    ]
    events += [
        LinkEvent(Change.ADDRESS_ADDED, after, address)
        for address in after.addresses
        if address not in before.addresses
    ]
    return events


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


@contextlib.asynccontextmanager
async def _rtnl() -> AsyncIterator[Any]:
    """A pyroute2 RTNL socket, opened now (pyroute2 opens it lazily, maybe in another namespace
    by then), with pyroute2's errors translated."""
    with _translating():
        async with pyroute2.AsyncIPRoute() as ipr:
            await ipr.setup_endpoint()
            yield ipr


@contextlib.contextmanager
def _translating() -> Iterator[None]:
    try:
        yield
    except pyroute2.NetlinkError as e:
        raise NetlinkFailure(str(e.args[-1]), e.code) from e
    except pyroute2.NetlinkDecodeError as e:
        raise NetlinkFailure(f"undecodable netlink message: {e.exception!r}") from e
    except OSError as e:
        raise NetlinkFailure(e.strerror or str(e), e.errno) from e


async def _dump(ipr: Any) -> dict[int, Link]:
    addresses: defaultdict[int, list[Address]] = defaultdict(list)
    async for message in await ipr.addr("dump"):
        addresses[int(message["index"])].append(_address(message))
    table = {}
    async for message in await ipr.link("dump"):
        index = int(message["index"])
        table[index] = _link(message, tuple(addresses[index]))
    return table


def _link(message: Any, addresses: tuple[Address, ...]) -> Link:
    flags = int(message["flags"])
    master = message.get("IFLA_MASTER")
    return Link(
        index=int(message["index"]),
        name=str(message.get("IFLA_IFNAME")),
        kind=str(message.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""),
        link_type=int(message["ifi_type"]),
        mac=message.get("IFLA_ADDRESS"),
        up=bool(flags & _IFF_UP),
        carrier=bool(flags & _IFF_LOWER_UP),
        noarp=bool(flags & _IFF_NOARP),
        master=int(master) if master else None,
        addresses=addresses,
    )


def _address(message: Any) -> Address:
    # IFA_LOCAL is the address of this end; IFA_ADDRESS is the peer's on point-to-point links.
    ip = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
    return ipaddress.ip_interface(f"{ip}/{message['prefixlen']}")
