"""IPv6 Neighbor Discovery (RFC 4861): Neighbor Solicitation and Advertisement, IPv6 included.

`encode` gives a complete IPv6 packet (header, ICMPv6 message with its checksum over the IPv6
pseudo-header, link-layer address option); `decode` takes one and applies the receive-side
validity checks of RFC 4861 §7.1, the ones Linux applies too, so a packet we accept is one a
Linux neighbour would accept and a packet we build is one it will not drop:
- hop limit 255 (a packet that crossed a router is never ND), ICMPv6 code 0, valid checksum;
- every option has a non-zero length and fits; a link-layer address option holds exactly one
  Ethernet address (first of a type wins, unknown options are skipped, as in Linux);
- the target is not multicast; a DAD solicitation (source ::) goes to a solicited-node group
  and has no source link-layer option; an advertisement to a multicast group is not solicited.

Extension headers are not parsed: ND from a neighbour carries none, so a next header other than
ICMPv6 is unsupported.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from ironlb.l2 import errors, ethernet

HOP_LIMIT = 255
NEXT_HEADER_ICMPV6 = 58
HEADER_SIZE = 40
ALL_NODES = IPv6Address("ff02::1")
UNSPECIFIED = IPv6Address("::")

_SOLICITED_NODE_PREFIX = IPv6Network("ff02::1:ff00:0/104")
_IPV6 = struct.Struct("!IHBB16s16s")
_ND = struct.Struct("!BBHI16s")  # type, code, checksum, flags + reserved, target
_PSEUDO = struct.Struct("!16s16sI3xB")
_LINK_LAYER_OPTION = struct.Struct("!BB6s")

_ROUTER = 1 << 31
_SOLICITED = 1 << 30
_OVERRIDE = 1 << 29


class IcmpType(enum.IntEnum):
    NEIGHBOR_SOLICITATION = 135
    NEIGHBOR_ADVERTISEMENT = 136


class _Option(enum.IntEnum):
    SOURCE_LINK_LAYER = 1
    TARGET_LINK_LAYER = 2


@dataclass(frozen=True, slots=True)
class NeighborSolicitation:
    source: IPv6Address
    destination: IPv6Address
    target: IPv6Address
    source_link_layer: ethernet.MacAddress | None = None

    @property
    def is_duplicate_address_detection(self) -> bool:
        """A DAD probe (RFC 4862 §5.4.2): someone wants `target` and checks nobody has it."""
        return self.source == UNSPECIFIED


@dataclass(frozen=True, slots=True)
class NeighborAdvertisement:
    source: IPv6Address
    destination: IPv6Address
    target: IPv6Address
    target_link_layer: ethernet.MacAddress | None = None
    router: bool = False
    solicited: bool = False
    override: bool = False


Message = NeighborSolicitation | NeighborAdvertisement


def solicited_node_multicast(address: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX, the group a node joins to hear solicitations for `address` (RFC 4291)."""
    low24 = int(address) & 0xFFFFFF
    return _SOLICITED_NODE_PREFIX.network_address + low24


def multicast_mac(group: IPv6Address) -> ethernet.MacAddress:
    """33:33 and the low 32 bits of an IPv6 multicast group (RFC 2464 §7)."""
    if not group.is_multicast:
        raise ValueError(f"{group} is not a multicast address")
    return ethernet.MacAddress(b"\x33\x33" + group.packed[12:])


def violation(message: Message) -> errors.Reason | None:
    """The RFC 4861 §7.1 rule `message` breaks, if any (rules that do not depend on wire bytes)."""
    if message.target.is_multicast:
        return errors.Reason.ND_TARGET
    if isinstance(message, NeighborSolicitation):
        if message.is_duplicate_address_detection and (
            message.destination not in _SOLICITED_NODE_PREFIX
            or message.source_link_layer is not None
        ):
            return errors.Reason.ND_DAD_FORM
    elif message.destination.is_multicast and message.solicited:
        return errors.Reason.NA_SOLICITED_TO_MULTICAST
    return None


def encode(message: Message) -> bytes:
    """The IPv6 packet carrying `message`, hop limit 255, checksum filled in."""
    if (reason := violation(message)) is not None:
        raise ValueError(f"invalid neighbor discovery message ({reason}): {message!r}")
    if isinstance(message, NeighborSolicitation):
        icmp_type, flags = IcmpType.NEIGHBOR_SOLICITATION, 0
        option, link_layer = _Option.SOURCE_LINK_LAYER, message.source_link_layer
    else:
        icmp_type = IcmpType.NEIGHBOR_ADVERTISEMENT
        flags = (
            (_ROUTER if message.router else 0)
            | (_SOLICITED if message.solicited else 0)
            | (_OVERRIDE if message.override else 0)
        )
        option, link_layer = _Option.TARGET_LINK_LAYER, message.target_link_layer
    body = _ND.pack(icmp_type, 0, 0, flags, message.target.packed)
    if link_layer is not None:
        # Length is in units of 8 octets: 2 header bytes + a 6-byte MAC is exactly one.
        body += _LINK_LAYER_OPTION.pack(option, 1, link_layer.packed)
    checksum = 0xFFFF ^ _ones_complement_sum(message.source, message.destination, body)
    body = body[:2] + checksum.to_bytes(2, "big") + body[4:]
    header = _IPV6.pack(
        6 << 28,
        len(body),
        NEXT_HEADER_ICMPV6,
        HOP_LIMIT,
        message.source.packed,
        message.destination.packed,
    )
    return header + body


def decode(packet: bytes) -> Message:
    """The ND message in an IPv6 packet; bytes after the IPv6 payload are ignored."""
    if len(packet) < HEADER_SIZE:
        raise errors.MalformedFrame(errors.Reason.TRUNCATED)
    first_word, payload_length, next_header, hop_limit, src, dst = _IPV6.unpack_from(packet)
    if first_word >> 28 != 6:
        raise errors.MalformedFrame(errors.Reason.IPV6_VERSION)
    if next_header != NEXT_HEADER_ICMPV6:
        raise errors.MalformedFrame(errors.Reason.UNSUPPORTED_NEXT_HEADER)
    body = packet[HEADER_SIZE : HEADER_SIZE + payload_length]
    if len(body) < payload_length or not body:
        raise errors.MalformedFrame(errors.Reason.TRUNCATED)
    if body[0] not in (IcmpType.NEIGHBOR_SOLICITATION, IcmpType.NEIGHBOR_ADVERTISEMENT):
        raise errors.MalformedFrame(errors.Reason.UNSUPPORTED_ICMPV6_TYPE)
    if len(body) < _ND.size:
        raise errors.MalformedFrame(errors.Reason.TRUNCATED)
    source, destination = IPv6Address(src), IPv6Address(dst)
    if _ones_complement_sum(source, destination, body) != 0xFFFF:
        raise errors.MalformedFrame(errors.Reason.CHECKSUM)
    if hop_limit != HOP_LIMIT:
        raise errors.MalformedFrame(errors.Reason.HOP_LIMIT)
    icmp_type, code, _, flags, target_bytes = _ND.unpack_from(body)
    if code != 0:
        raise errors.MalformedFrame(errors.Reason.ICMPV6_CODE)
    options = _parse_options(body[_ND.size :])
    target = IPv6Address(target_bytes)
    message: Message
    if icmp_type == IcmpType.NEIGHBOR_SOLICITATION:
        message = NeighborSolicitation(
            source=source,
            destination=destination,
            target=target,
            source_link_layer=_link_layer(options, _Option.SOURCE_LINK_LAYER),
        )
    else:
        message = NeighborAdvertisement(
            source=source,
            destination=destination,
            target=target,
            target_link_layer=_link_layer(options, _Option.TARGET_LINK_LAYER),
            router=bool(flags & _ROUTER),
            solicited=bool(flags & _SOLICITED),
            override=bool(flags & _OVERRIDE),
        )
    if (reason := violation(message)) is not None:
        raise errors.MalformedFrame(reason)
    return message


def _parse_options(data: bytes) -> dict[int, bytes]:
    """Option type -> option bytes after the type and length octets; the first of a type wins."""
    options: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if len(data) - offset < 2:
            raise errors.MalformedFrame(errors.Reason.ND_OPTION)
        size = data[offset + 1] * 8
        if size == 0 or offset + size > len(data):
            raise errors.MalformedFrame(errors.Reason.ND_OPTION)
        options.setdefault(data[offset], data[offset + 2 : offset + size])
        offset += size
    return options


def _link_layer(options: dict[int, bytes], kind: _Option) -> ethernet.MacAddress | None:
    value = options.get(kind)
    if value is None:
        return None
    if len(value) != 6:
        raise errors.MalformedFrame(errors.Reason.ND_OPTION)
    return ethernet.MacAddress(value)


def _ones_complement_sum(source: IPv6Address, destination: IPv6Address, body: bytes) -> int:
    """RFC 1071 sum over the IPv6 pseudo-header (RFC 8200 §8.1) and the ICMPv6 message.

    A message whose checksum field is filled in sums to 0xFFFF.
    """
    data = _PSEUDO.pack(source.packed, destination.packed, len(body), NEXT_HEADER_ICMPV6) + body
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total
