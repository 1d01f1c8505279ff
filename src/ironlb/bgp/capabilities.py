"""BGP capabilities (RFC 5492): one class per capability, registered by code.

Understood: Multiprotocol (RFC 4760, code 1), Route Refresh (RFC 2918, code 2), Graceful Restart
(RFC 4724, code 64, with the RFC 8538 N bit decoded) and 4-octet AS (RFC 6793, code 65).
Everything else (ADD-PATH, enhanced route refresh, FQDN, the pre-standard code 128 ...) is kept as
`UnknownCapability` with its bytes, so an OPEN re-encodes to what was received.

Invariant: every class round-trips, `unpack_value(c.pack_value()) == c`. A malformed capability
raises `BgpError(OPEN_MESSAGE, UNSPECIFIC)` (RFC 4271 §6.2: recognised but malformed parameter).
"""

from __future__ import annotations

import abc
import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

from ironlb.bgp import errors

AS_TRANS = 23456
"""Stands in for a 4-octet AS in 2-octet fields (RFC 6793)."""

MAX_RESTART_TIME = 0xFFF


class CapabilityCode(enum.IntEnum):
    MULTIPROTOCOL = 1
    ROUTE_REFRESH = 2
    GRACEFUL_RESTART = 64
    FOUR_OCTET_AS = 65


def _malformed(reason: str) -> errors.BgpError:
    return errors.BgpError(
        errors.ErrorCode.OPEN_MESSAGE, errors.OpenSubcode.UNSPECIFIC, b"", reason
    )


class KnownCapability(abc.ABC):
    __slots__ = ()
    CODE: ClassVar[CapabilityCode]

    @abc.abstractmethod
    def pack_value(self) -> bytes: ...

    @classmethod
    @abc.abstractmethod
    def unpack_value(cls, value: bytes) -> Self: ...


_REGISTRY: dict[int, type[KnownCapability]] = {}
_C = TypeVar("_C", bound=type[KnownCapability])


def _register(cls: _C) -> _C:
    _REGISTRY[cls.CODE] = cls
    return cls


@_register
@dataclass(frozen=True, slots=True)
class Multiprotocol(KnownCapability):
    """One (AFI, SAFI) the speaker can carry. Kept as integers: peers announce families that
    ironlb does not speak, and those must survive decoding."""

    CODE = CapabilityCode.MULTIPROTOCOL
    afi: int
    safi: int

    def pack_value(self) -> bytes:
        return struct.pack("!HBB", self.afi, 0, self.safi)

    @classmethod
    def unpack_value(cls, value: bytes) -> Self:
        if len(value) != 4:
            raise _malformed(f"multiprotocol capability of {len(value)} bytes")
        afi, _reserved, safi = struct.unpack("!HBB", value)
        return cls(afi, safi)


@_register
@dataclass(frozen=True, slots=True)
class RouteRefresh(KnownCapability):
    CODE = CapabilityCode.ROUTE_REFRESH

    def pack_value(self) -> bytes:
        return b""

    @classmethod
    def unpack_value(cls, value: bytes) -> Self:
        if value:
            raise _malformed(f"route refresh capability of {len(value)} bytes")
        return cls()


@dataclass(frozen=True, slots=True)
class GracefulRestartFamily:
    afi: int
    safi: int
    forwarding_preserved: bool
    """F bit: forwarding state for this family survived the restart."""


@_register
@dataclass(frozen=True, slots=True)
class GracefulRestart(KnownCapability):
    CODE = CapabilityCode.GRACEFUL_RESTART
    restart_time: int
    """Seconds the peer should keep our routes after the session drops (12 bits)."""
    restarting: bool = False
    """R bit: we have restarted; the peer must not wait for our End-of-RIB before sending."""
    notification: bool = False
    """N bit (RFC 8538): graceful restart also covers sessions ended by NOTIFICATION."""
    families: tuple[GracefulRestartFamily, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.restart_time <= MAX_RESTART_TIME:
            raise ValueError(f"restart time must be 0-{MAX_RESTART_TIME} s")

    def pack_value(self) -> bytes:
        flags = (0x8 if self.restarting else 0) | (0x4 if self.notification else 0)
        head = struct.pack("!H", flags << 12 | self.restart_time)
        return head + b"".join(
            struct.pack("!HBB", f.afi, f.safi, 0x80 if f.forwarding_preserved else 0)
            for f in self.families
        )

    @classmethod
    def unpack_value(cls, value: bytes) -> Self:
        if len(value) < 2 or (len(value) - 2) % 4:
            raise _malformed(f"graceful restart capability of {len(value)} bytes")
        (head,) = struct.unpack_from("!H", value)
        families = tuple(
            GracefulRestartFamily(afi, safi, bool(flags & 0x80))
            for afi, safi, flags in struct.iter_unpack("!HBB", value[2:])
        )
        return cls(head & MAX_RESTART_TIME, bool(head & 0x8000), bool(head & 0x4000), families)


@_register
@dataclass(frozen=True, slots=True)
class FourOctetAs(KnownCapability):
    CODE = CapabilityCode.FOUR_OCTET_AS
    asn: int

    def pack_value(self) -> bytes:
        return struct.pack("!I", self.asn)

    @classmethod
    def unpack_value(cls, value: bytes) -> Self:
        if len(value) != 4:
            raise _malformed(f"4-octet AS capability of {len(value)} bytes")
        return cls(struct.unpack("!I", value)[0])


@dataclass(frozen=True, slots=True)
class UnknownCapability:
    """A capability ironlb does not interpret, kept verbatim."""

    code: int
    value: bytes


Capability = KnownCapability | UnknownCapability


def pack(capability: Capability) -> bytes:
    """One capability TLV: code, length, value."""
    if isinstance(capability, UnknownCapability):
        code, value = capability.code, capability.value
    else:
        code, value = capability.CODE, capability.pack_value()
    return struct.pack("!BB", code, len(value)) + value


def unpack_all(data: bytes) -> list[Capability]:
    """All capability TLVs in one Capabilities optional parameter (there may be several)."""
    found: list[Capability] = []
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise _malformed("truncated capability header")
        code, length = data[offset], data[offset + 1]
        value = data[offset + 2 : offset + 2 + length]
        if len(value) != length:
            raise _malformed(f"capability {code} overruns its parameter")
        known = _REGISTRY.get(code)
        found.append(known.unpack_value(value) if known else UnknownCapability(code, value))
        offset += 2 + length
    return found
