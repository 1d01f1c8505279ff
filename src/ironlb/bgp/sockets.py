"""Linux socket details shared by the BGP and BFD shells: MD5 keys, TTLs, received TTLs.

TCP MD5 (RFC 2385) is a kernel feature: `TCP_MD5SIG` stores one key per remote address on a
socket, and from then on the kernel signs every segment to that address and drops every segment
from it that is unsigned or wrongly signed. A listening socket holds the keys of all its peers
and accepted sockets inherit them; a connecting socket needs its key before `connect()`, since
the SYN is signed too. A wrong password therefore shows up as silence (the SYN is dropped), never
as an error on either side.

BGP TTL: like FRR, directly connected eBGP sessions send with TTL 1 (the peer must be on the
link), eBGP multihop and iBGP sessions with 255. No minimum TTL is enforced on receipt (that would
be GTSM, RFC 5082, which MetalLB does not configure). BFD sends with 255 and reads the TTL every
datagram arrived with from ancillary data (`IP_RECVTTL` / `IPV6_RECVHOPLIMIT`).

Sockets are made by a `SocketFactory` so that the caller decides where they live: in production
`socket.socket`, in the lab a function that creates them inside a node's network namespace.
Errors are the kernel's `OSError`s, raised unchanged: the shells report them.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address, ip_address

IPAddress = IPv4Address | IPv6Address
SocketFactory = Callable[[int, int], socket.socket]
"""(family, type) -> a new socket, like `socket.socket`."""

# <linux/tcp.h> and <linux/in.h>; Python's socket module does not export these.
TCP_MD5SIG = 14
IP_RECVTTL = 12
MAX_KEY_LENGTH = 80
"""TCP_MD5SIG_MAXKEYLEN: the longest password the kernel accepts, in bytes."""
MAX_TTL = 255

# struct tcp_md5sig: sockaddr_storage (128 bytes), u8 flags, u8 prefixlen, u16 keylen,
# int ifindex, u8 key[80]. Native byte order, no padding between the fields.
_MD5SIG = struct.Struct("=128sBBHi80s")
# The leading fields of sockaddr_in / sockaddr_in6: family (native order), port (network order).
_SOCKADDR_IN = struct.Struct("=H2s4s")
_SOCKADDR_IN6 = struct.Struct("=H2sI16sI")
_TTL_CMSGS = {
    (socket.IPPROTO_IP, socket.IP_TTL),
    (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
}
TTL_CMSG_SPACE = socket.CMSG_SPACE(4)
"""Ancillary buffer size `recvmsg` needs for the TTL."""


def family_of(address: IPAddress) -> socket.AddressFamily:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def host_address(sockaddr: tuple[object, ...]) -> IPAddress:
    """The IP address of a socket address tuple (an IPv6 zone, "%eth0", is dropped)."""
    return ip_address(str(sockaddr[0]).split("%", 1)[0])


def password_bytes(password: str) -> bytes:
    """The key as the kernel stores it (UTF-8, like FRR and MetalLB); too long raises
    ValueError."""
    key = password.encode()
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"TCP MD5 password is {len(key)} bytes, at most {MAX_KEY_LENGTH}")
    return key


def md5sig(address: IPAddress, password: str) -> bytes:
    """A `struct tcp_md5sig` for one remote address; an empty password removes the key."""
    if isinstance(address, IPv4Address):
        sockaddr = _SOCKADDR_IN.pack(socket.AF_INET, b"\0\0", address.packed)
    else:
        sockaddr = _SOCKADDR_IN6.pack(socket.AF_INET6, b"\0\0", 0, address.packed, 0)
    key = password_bytes(password)
    return _MD5SIG.pack(sockaddr, 0, 0, len(key), 0, key)


def set_md5(sock: socket.socket, address: IPAddress, password: str) -> None:
    """Sign segments to and from `address` with `password` ("" removes the key)."""
    sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(address, password))


def set_ttl(sock: socket.socket, ttl: int) -> None:
    """TTL (IPv4) or unicast hop limit (IPv6) of the packets `sock` sends."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)


def bgp_ttl(*, ibgp: bool, ebgp_multihop: bool) -> int:
    """The TTL FRR uses: 1 for directly connected eBGP, 255 for multihop eBGP and iBGP."""
    return MAX_TTL if ibgp or ebgp_multihop else 1


def receive_ttl(sock: socket.socket) -> None:
    """Have `recvmsg` report the TTL / hop limit of every datagram."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)


def received_ttl(ancillary: Iterable[tuple[int, int, bytes]]) -> int:
    """The TTL in `recvmsg` ancillary data; 0 when absent, which no TTL check accepts."""
    for level, kind, data in ancillary:
        if (level, kind) in _TTL_CMSGS and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder)
    return 0
