"""ARP for IPv4 over Ethernet (RFC 826), with the gratuitous and probe forms of RFC 5227.

Only Ethernet hardware (type 1, 6-byte addresses) and IPv4 protocol addresses (0x0800, 4 bytes)
are accepted; anything else is a `MalformedFrame`. `decode` ignores bytes after the 28-byte
packet (Ethernet padding).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from ironlb.l2 import errors, ethernet

PACKET_SIZE = 28
UNSPECIFIED = IPv4Address(0)

_HARDWARE_ETHERNET = 1
_PACKET = struct.Struct("!HHBBH6s4s6s4s")


class Operation(enum.IntEnum):
    REQUEST = 1
    REPLY = 2


class Kind(enum.Enum):
    """What an ARP packet means to a responder, in RFC 5227 terms."""

    REQUEST = "request"
    """Who has `target_ip`? Answer it if we own the address."""
    REPLY = "reply"
    """`sender_ip` is at `sender_mac`, sent to one asker."""
    GRATUITOUS = "gratuitous"
    """`sender_ip` is at `sender_mac`, told to everyone (RFC 5227 announcement, or a reply form)."""
    PROBE = "probe"
    """Someone checks whether `target_ip` is in use before taking it (sender IP 0.0.0.0)."""


@dataclass(frozen=True, slots=True)
class Arp:
    operation: Operation
    sender_mac: ethernet.MacAddress
    sender_ip: IPv4Address
    target_mac: ethernet.MacAddress
    target_ip: IPv4Address

    @property
    def kind(self) -> Kind:
        if self.operation is Operation.REQUEST and self.sender_ip == UNSPECIFIED:
            return Kind.PROBE
        if self.sender_ip == self.target_ip:
            return Kind.GRATUITOUS
        return Kind.REQUEST if self.operation is Operation.REQUEST else Kind.REPLY


def encode(arp: Arp) -> bytes:
    return _PACKET.pack(
        _HARDWARE_ETHERNET,
        ethernet.EtherType.IPV4,
        6,
        4,
        arp.operation,
        arp.sender_mac.packed,
        arp.sender_ip.packed,
        arp.target_mac.packed,
        arp.target_ip.packed,
    )


def decode(payload: bytes) -> Arp:
    if len(payload) < PACKET_SIZE:
        raise errors.MalformedFrame(errors.Reason.TRUNCATED)
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _PACKET.unpack_from(payload)
    if htype != _HARDWARE_ETHERNET or hlen != 6:
        raise errors.MalformedFrame(errors.Reason.ARP_HARDWARE)
    if ptype != ethernet.EtherType.IPV4 or plen != 4:
        raise errors.MalformedFrame(errors.Reason.ARP_PROTOCOL)
    if op not in (Operation.REQUEST, Operation.REPLY):
        raise errors.MalformedFrame(errors.Reason.ARP_OPERATION)
    return Arp(
        operation=Operation(op),
        sender_mac=ethernet.MacAddress(sha),
        sender_ip=IPv4Address(spa),
        target_mac=ethernet.MacAddress(tha),
        target_ip=IPv4Address(tpa),
    )
