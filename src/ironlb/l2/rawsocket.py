"""Raw AF_PACKET sockets for the responder, and the multicast groups it needs to hear NDP.

`open_filtered` gives a non-blocking socket on one interface that receives one EtherType, through
a BPF program. It never delivers a frame the program would reject, not even one that arrived
before the program was attached: the socket is created with protocol 0, which receives nothing,
and bound to its EtherType and interface only once the program is in place.

`Memberships` joins the solicited-node groups of the IPv6 addresses the responder answers for,
in two ways: at the link layer (PACKET_ADD_MEMBERSHIP), so the NIC's multicast filter lets the
frames in even where IPv6 is disabled; and as an IPv6 group (IPV6_JOIN_GROUP), so the kernel
sends MLD reports and a switch doing MLD snooping forwards the solicitations to this port, as
MetalLB's responder does. The kernel drops both when the sockets close.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import socket
import struct
from ipaddress import IPv6Address

from ironlb.l2 import bpf, ndp

log = logging.getLogger(__name__)

# linux/if_packet.h and linux/socket.h; Python's socket module does not export them.
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_MR_MULTICAST = 0
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 4 << 20
"""Room for a burst: a router re-learning thousands of addresses at once asks for all of them
within milliseconds, and every speaker receives every broadcast request."""

_PACKET_MREQ = struct.Struct("@iHH8s")  # ifindex, type, address length, address
_IPV6_MREQ = struct.Struct("@16sI")  # group, ifindex


def open_filtered(interface: str, ethertype: int, program: bpf.Program) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.setblocking(False)
        code = ctypes.create_string_buffer(bpf.pack(program))
        # The kernel copies the program during the call; the buffer only has to outlive it.
        fprog = bpf.pack_fprog(len(program), ctypes.addressof(code))
        sock.setsockopt(socket.SOL_SOCKET, bpf.SO_ATTACH_FILTER, fprog)
        try:  # beyond net.core.rmem_max for this socket only (CAP_NET_ADMIN)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:  # without the capability: as much as rmem_max allows
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((interface, ethertype))
    except BaseException:
        sock.close()
        raise
    return sock


class Memberships:
    """The solicited-node groups joined on one interface, kept equal to what `update` is given."""

    def __init__(self, packet_socket: socket.socket, index: int) -> None:
        self._packet_socket = packet_socket
        self._index = index
        # Only ever used for its group memberships.
        self._group_socket = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self._joined: dict[IPv6Address, int] = {}
        """Group -> how many of the addresses need it."""

    def update(self, addresses: set[IPv6Address]) -> None:
        """Join the groups `addresses` need, and leave the ones no longer needed.

        Several addresses may share one group (the same low 24 bits): it stays joined while one
        of them needs it.
        """
        wanted: dict[IPv6Address, int] = {}
        for address in addresses:
            group = ndp.solicited_node_multicast(address)
            wanted[group] = wanted.get(group, 0) + 1
        for group in self._joined.keys() - wanted.keys():
            self._leave(group)
        for group in wanted.keys() - self._joined.keys():
            self._join(group)
        self._joined = wanted

    def add(self, address: IPv6Address) -> None:
        """One more address needs its group (joined if it is the first)."""
        group = ndp.solicited_node_multicast(address)
        count = self._joined.get(group, 0)
        if count == 0:
            self._join(group)
        self._joined[group] = count + 1

    def remove(self, address: IPv6Address) -> None:
        """One address less needs its group (left if it was the last)."""
        group = ndp.solicited_node_multicast(address)
        count = self._joined.get(group, 0)
        if count <= 1:
            self._joined.pop(group, None)
            if count == 1:
                self._leave(group)
        else:
            self._joined[group] = count - 1

    def close(self) -> None:
        self._group_socket.close()

    def _join(self, group: IPv6Address) -> None:
        self._packet_socket.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, self._packet_mreq(group))
        try:
            self._group_socket.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, self._ipv6_mreq(group)
            )
        except OSError as e:
            # IPv6 is disabled on the interface: the link-layer membership still lets frames
            # in; only MLD snooping switches will not know to forward them.
            log.info("no MLD membership of %s on interface %d: %s", group, self._index, e)

    def _leave(self, group: IPv6Address) -> None:
        self._packet_socket.setsockopt(SOL_PACKET, PACKET_DROP_MEMBERSHIP, self._packet_mreq(group))
        with contextlib.suppress(OSError):  # not a member if joining failed
            self._group_socket.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, self._ipv6_mreq(group)
            )

    def _packet_mreq(self, group: IPv6Address) -> bytes:
        mac = ndp.multicast_mac(group).packed
        return _PACKET_MREQ.pack(self._index, PACKET_MR_MULTICAST, len(mac), mac)

    def _ipv6_mreq(self, group: IPv6Address) -> bytes:
        return _IPV6_MREQ.pack(group.packed, self._index)
