"""Address families ironlb speaks, and the prefix (NLRI) encoding they share.

IPv4 unicast and IPv6 unicast only (AFI 1/2, SAFI 1). A prefix is encoded as a length octet
followed by the fewest octets that hold that many bits (RFC 4271 §4.3, RFC 4760 §5).

Invariant: decoded prefixes never carry host bits. The RFC says trailing bits are irrelevant, so
they are masked off and two encodings of one route compare equal.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

from ironlb.bgp import errors

Prefix = IPv4Network | IPv6Network


class Afi(enum.IntEnum):
    IPV4 = 1
    IPV6 = 2


class Safi(enum.IntEnum):
    UNICAST = 1


class Family(enum.Enum):
    IPV4_UNICAST = (Afi.IPV4, Safi.UNICAST)
    IPV6_UNICAST = (Afi.IPV6, Safi.UNICAST)

    @property
    def afi(self) -> Afi:
        return self.value[0]

    @property
    def safi(self) -> Safi:
        return self.value[1]

    @property
    def max_length(self) -> int:
        return 32 if self is Family.IPV4_UNICAST else 128

    @classmethod
    def lookup(cls, afi: int, safi: int) -> Family | None:
        """The family for a wire (AFI, SAFI), or None for one ironlb does not speak."""
        return _BY_WIRE.get((afi, safi))

    @classmethod
    def of(cls, prefix: Prefix) -> Family:
        return cls.IPV4_UNICAST if prefix.version == 4 else cls.IPV6_UNICAST

    def __str__(self) -> str:
        return "ipv4-unicast" if self is Family.IPV4_UNICAST else "ipv6-unicast"


_BY_WIRE = {(f.afi.value, f.safi.value): f for f in Family}


def prefix_size(prefix: Prefix) -> int:
    """Bytes `prefix` takes on the wire."""
    return 1 + (prefix.prefixlen + 7) // 8


def pack_prefixes(prefixes: Iterable[Prefix]) -> bytes:
    return b"".join(
        bytes((p.prefixlen,)) + p.network_address.packed[: (p.prefixlen + 7) // 8] for p in prefixes
    )


def unpack_prefixes(
    data: bytes, family: Family, subcode: errors.UpdateSubcode
) -> tuple[Prefix, ...]:
    """Decode a run of prefixes; a length too long or a truncated prefix raises `subcode`."""
    width = family.max_length // 8
    network = IPv4Network if family is Family.IPV4_UNICAST else IPv6Network
    prefixes: list[Prefix] = []
    offset = 0
    while offset < len(data):
        length = data[offset]
        end = offset + 1 + (length + 7) // 8
        if length > family.max_length or end > len(data):
            raise errors.BgpError(
                errors.ErrorCode.UPDATE_MESSAGE,
                subcode,
                reason=f"bad {family} prefix (length {length}) at offset {offset}",
            )
        bits = int.from_bytes(data[offset + 1 : end].ljust(width, b"\0"), "big")
        host_mask = (1 << (family.max_length - length)) - 1
        prefixes.append(network((bits & ~host_mask, length)))
        offset = end
    return tuple(prefixes)
