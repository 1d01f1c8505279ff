"""Path attributes: one class per attribute, registered by type code (RFC 4271 §4.3, §5).

Each known attribute class declares its type code, its category flags and what RFC 7606 says to do
when an instance of it is malformed (`OnMalformed`), and packs/unpacks its value as a pure
function of bytes plus the negotiated `Context` (2- or 4-octet AS numbers). `unpack_all` decodes an
UPDATE's attribute list applying those rules: session-reset errors are raised as `BgpError`, the
first treat-as-withdraw error is returned beside the attributes, discarded attributes vanish.

Attributes ironlb does not know are kept as `UnknownAttribute` if optional (their bytes are
preserved; `propagated()` sets the Partial bit, RFC 4271 §5) and rejected if well-known
(Unrecognized Well-known Attribute). Communities are values with two constructors each:
`from_wire` for decoded bytes and `parse` for user text ("65000:100", "no-export",
"large:1:2:3"), the latter raising ValueError with a message fit for a user.
"""

from __future__ import annotations

import abc
import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Self, TypeVar

from ironlb.bgp import capabilities, errors, families
from ironlb.core import community


class AttrFlag(enum.IntFlag):
    OPTIONAL = 0x80
    TRANSITIVE = 0x40
    PARTIAL = 0x20
    EXTENDED_LENGTH = 0x10


WELL_KNOWN = AttrFlag.TRANSITIVE
OPTIONAL_TRANSITIVE = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE
OPTIONAL_NON_TRANSITIVE = AttrFlag.OPTIONAL
# The category bits must agree with the type code; Partial and Extended Length are per instance
# and the low four bits are unused (ignored on receipt, zero when sent).
_CATEGORY = AttrFlag.OPTIONAL | AttrFlag.TRANSITIVE
_SENT_FLAGS = _CATEGORY | AttrFlag.PARTIAL


class AttrType(enum.IntEnum):
    ORIGIN = 1
    AS_PATH = 2
    NEXT_HOP = 3
    MULTI_EXIT_DISC = 4
    LOCAL_PREF = 5
    ATOMIC_AGGREGATE = 6
    AGGREGATOR = 7
    COMMUNITIES = 8
    MP_REACH_NLRI = 14
    MP_UNREACH_NLRI = 15
    AS4_PATH = 17
    AS4_AGGREGATOR = 18
    LARGE_COMMUNITY = 32


class OnMalformed(enum.Enum):
    """RFC 7606 §2 approaches, strongest first."""

    SESSION_RESET = "session-reset"
    TREAT_AS_WITHDRAW = "treat-as-withdraw"
    ATTRIBUTE_DISCARD = "attribute-discard"


@dataclass(frozen=True, slots=True)
class Context:
    """What attribute encoding depends on, as negotiated in the OPEN exchange."""

    four_octet_as: bool = True


def _error(subcode: errors.UpdateSubcode, reason: str) -> errors.BgpError:
    return errors.BgpError(errors.ErrorCode.UPDATE_MESSAGE, subcode, b"", reason)


def _expect_length(value: bytes, *lengths: int) -> None:
    if len(value) not in lengths:
        raise _error(
            errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR,
            f"length {len(value)}, expected {' or '.join(map(str, lengths))}",
        )


class KnownAttribute(abc.ABC):
    __slots__ = ()
    TYPE_CODE: ClassVar[AttrType]
    FLAGS: ClassVar[int]
    ON_MALFORMED: ClassVar[OnMalformed]

    @abc.abstractmethod
    def pack_value(self, ctx: Context) -> bytes: ...

    @classmethod
    @abc.abstractmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self: ...

    @classmethod
    def understands(cls, value: bytes) -> bool:
        """False when the value is valid but not something ironlb interprets (it is then kept
        opaque, like an unknown optional attribute)."""
        return True


_REGISTRY: dict[int, type[KnownAttribute]] = {}
_A = TypeVar("_A", bound=type[KnownAttribute])


def _register(cls: _A) -> _A:
    _REGISTRY[cls.TYPE_CODE] = cls
    return cls


class OriginType(enum.IntEnum):
    IGP = 0
    EGP = 1
    INCOMPLETE = 2


@_register
@dataclass(frozen=True, slots=True)
class Origin(KnownAttribute):
    TYPE_CODE = AttrType.ORIGIN
    FLAGS = WELL_KNOWN
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW
    origin: OriginType = OriginType.IGP

    def pack_value(self, ctx: Context) -> bytes:
        return bytes((self.origin,))

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        _expect_length(value, 1)
        if value[0] not in OriginType._value2member_map_:
            raise _error(errors.UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE, f"origin {value[0]}")
        return cls(OriginType(value[0]))


class SegmentType(enum.IntEnum):
    AS_SET = 1
    AS_SEQUENCE = 2
    AS_CONFED_SEQUENCE = 3
    AS_CONFED_SET = 4


_MAX_SEGMENT = 255


@dataclass(frozen=True, slots=True)
class AsPathSegment:
    type: SegmentType
    asns: tuple[int, ...]

    def __post_init__(self) -> None:
        # A zero-length segment is malformed on the wire (RFC 7606 §7.2); never build one.
        if not self.asns:
            raise ValueError("an AS path segment holds at least one AS")


def _pack_segments(segments: Sequence[AsPathSegment], four_octet: bool) -> bytes:
    out = bytearray()
    for segment in segments:
        # Longer segments are split: the length field is one octet.
        for start in range(0, len(segment.asns), _MAX_SEGMENT):
            chunk = segment.asns[start : start + _MAX_SEGMENT]
            out += bytes((segment.type, len(chunk)))
            if four_octet:
                out += struct.pack(f"!{len(chunk)}I", *chunk)
            else:
                two = [a if a <= 0xFFFF else capabilities.AS_TRANS for a in chunk]
                out += struct.pack(f"!{len(chunk)}H", *two)
    return bytes(out)


def _unpack_segments(value: bytes, four_octet: bool) -> tuple[AsPathSegment, ...]:
    width = 4 if four_octet else 2
    segments = []
    offset = 0
    while offset < len(value):
        if offset + 2 > len(value):
            raise _error(errors.UpdateSubcode.MALFORMED_AS_PATH, "truncated segment header")
        kind, count = value[offset], value[offset + 1]
        end = offset + 2 + count * width
        if kind not in SegmentType._value2member_map_ or count == 0 or end > len(value):
            raise _error(
                errors.UpdateSubcode.MALFORMED_AS_PATH, f"bad segment type {kind} length {count}"
            )
        asns = struct.unpack(f"!{count}{'I' if four_octet else 'H'}", value[offset + 2 : end])
        segments.append(AsPathSegment(SegmentType(kind), asns))
        offset = end
    return tuple(segments)


@_register
@dataclass(frozen=True, slots=True)
class AsPath(KnownAttribute):
    TYPE_CODE = AttrType.AS_PATH
    FLAGS = WELL_KNOWN
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW
    segments: tuple[AsPathSegment, ...] = ()

    @classmethod
    def sequence(cls, *asns: int) -> Self:
        return cls((AsPathSegment(SegmentType.AS_SEQUENCE, asns),) if asns else ())

    @property
    def has_four_octet_asn(self) -> bool:
        """True when a 2-octet encoding would lose information (RFC 6793 AS4_PATH needed)."""
        return any(asn > 0xFFFF for segment in self.segments for asn in segment.asns)

    def pack_value(self, ctx: Context) -> bytes:
        return _pack_segments(self.segments, ctx.four_octet_as)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        return cls(_unpack_segments(value, ctx.four_octet_as))


@_register
@dataclass(frozen=True, slots=True)
class As4Path(KnownAttribute):
    """The true path beside a 2-octet AS_PATH, for peers without 4-octet AS (RFC 6793 §4.2.2)."""

    TYPE_CODE = AttrType.AS4_PATH
    FLAGS = OPTIONAL_TRANSITIVE
    ON_MALFORMED = OnMalformed.ATTRIBUTE_DISCARD
    segments: tuple[AsPathSegment, ...] = ()

    def pack_value(self, ctx: Context) -> bytes:
        return _pack_segments(self.segments, four_octet=True)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        return cls(_unpack_segments(value, four_octet=True))


@_register
@dataclass(frozen=True, slots=True)
class NextHop(KnownAttribute):
    TYPE_CODE = AttrType.NEXT_HOP
    FLAGS = WELL_KNOWN
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW
    address: IPv4Address

    def pack_value(self, ctx: Context) -> bytes:
        return self.address.packed

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        _expect_length(value, 4)
        return cls(IPv4Address(value))


@dataclass(frozen=True, slots=True)
class _Unsigned32(KnownAttribute):
    value: int

    def pack_value(self, ctx: Context) -> bytes:
        return struct.pack("!I", self.value)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        _expect_length(value, 4)
        return cls(struct.unpack("!I", value)[0])


@_register
@dataclass(frozen=True, slots=True)
class MultiExitDisc(_Unsigned32):
    TYPE_CODE = AttrType.MULTI_EXIT_DISC
    FLAGS = OPTIONAL_NON_TRANSITIVE
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW


@_register
@dataclass(frozen=True, slots=True)
class LocalPref(_Unsigned32):
    TYPE_CODE = AttrType.LOCAL_PREF
    FLAGS = WELL_KNOWN
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW


@_register
@dataclass(frozen=True, slots=True)
class AtomicAggregate(KnownAttribute):
    TYPE_CODE = AttrType.ATOMIC_AGGREGATE
    FLAGS = WELL_KNOWN
    ON_MALFORMED = OnMalformed.ATTRIBUTE_DISCARD

    def pack_value(self, ctx: Context) -> bytes:
        return b""

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        _expect_length(value, 0)
        return cls()


@_register
@dataclass(frozen=True, slots=True)
class Aggregator(KnownAttribute):
    TYPE_CODE = AttrType.AGGREGATOR
    FLAGS = OPTIONAL_TRANSITIVE
    ON_MALFORMED = OnMalformed.ATTRIBUTE_DISCARD
    asn: int
    address: IPv4Address

    def pack_value(self, ctx: Context) -> bytes:
        if ctx.four_octet_as:
            return struct.pack("!I", self.asn) + self.address.packed
        two = self.asn if self.asn <= 0xFFFF else capabilities.AS_TRANS
        return struct.pack("!H", two) + self.address.packed

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        width = 4 if ctx.four_octet_as else 2
        _expect_length(value, width + 4)
        return cls(int.from_bytes(value[:width], "big"), IPv4Address(value[width:]))


@_register
@dataclass(frozen=True, slots=True)
class As4Aggregator(KnownAttribute):
    TYPE_CODE = AttrType.AS4_AGGREGATOR
    FLAGS = OPTIONAL_TRANSITIVE
    ON_MALFORMED = OnMalformed.ATTRIBUTE_DISCARD
    asn: int
    address: IPv4Address

    def pack_value(self, ctx: Context) -> bytes:
        return struct.pack("!I", self.asn) + self.address.packed

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        _expect_length(value, 8)
        return cls(struct.unpack("!I", value[:4])[0], IPv4Address(value[4:]))


# The community values are the configuration's own (`core.community`): one type from a
# BGPAdvertisement to the wire. Their names here are the codec's vocabulary.
Community = community.Community
LargeCommunity = community.LargeCommunity
WELL_KNOWN_COMMUNITIES = community.WELL_KNOWN


def parse_community(text: str) -> Community | LargeCommunity:
    """A community as users write them in a BGPAdvertisement: AA:NN, a name, or large:A:B:C."""
    if text.strip().lower().startswith("large:"):
        return LargeCommunity.parse(text)
    return Community.parse(text)


def _unpack_list(value: bytes, size: int) -> list[bytes]:
    # RFC 7606 §7.8 and RFC 8092 §6: empty or not a whole number of entries is malformed.
    if not value or len(value) % size:
        raise _error(errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, f"length {len(value)}")
    return [value[i : i + size] for i in range(0, len(value), size)]


@_register
@dataclass(frozen=True, slots=True)
class Communities(KnownAttribute):
    TYPE_CODE = AttrType.COMMUNITIES
    FLAGS = OPTIONAL_TRANSITIVE
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW
    communities: tuple[Community, ...]

    def pack_value(self, ctx: Context) -> bytes:
        return b"".join(c.pack() for c in self.communities)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        return cls(tuple(Community.from_wire(v) for v in _unpack_list(value, 4)))


@_register
@dataclass(frozen=True, slots=True)
class LargeCommunities(KnownAttribute):
    TYPE_CODE = AttrType.LARGE_COMMUNITY
    FLAGS = OPTIONAL_TRANSITIVE
    ON_MALFORMED = OnMalformed.TREAT_AS_WITHDRAW
    communities: tuple[LargeCommunity, ...]

    def pack_value(self, ctx: Context) -> bytes:
        return b"".join(c.pack() for c in self.communities)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        return cls(tuple(LargeCommunity.from_wire(v) for v in _unpack_list(value, 12)))


NextHopAddress = IPv4Address | IPv6Address

# RFC 2545 §3: an IPv6 next hop is a global address, optionally followed by a link-local one.
# IPv4 NLRI may carry IPv6 next hops (RFC 8950); decoding accepts them, ironlb never sends them.
_NEXT_HOP_LENGTHS = {
    families.Family.IPV4_UNICAST: (4, 16, 32),
    families.Family.IPV6_UNICAST: (16, 32),
}


def _mp_error(reason: str) -> errors.BgpError:
    # RFC 4760 §7 / RFC 7606 §7.11: when the NLRI cannot be located, the session is reset.
    return _error(errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR, reason)


def _mp_family(value: bytes) -> families.Family:
    if len(value) < 3:
        raise _mp_error("truncated AFI/SAFI")
    afi, safi = struct.unpack_from("!HB", value)
    family = families.Family.lookup(afi, safi)
    assert family is not None, "guarded by understands()"
    return family


def _speaks_family(value: bytes) -> bool:
    # Too short to tell: let unpack_value report the malformed attribute.
    return len(value) < 3 or families.Family.lookup(*struct.unpack_from("!HB", value)) is not None


@_register
@dataclass(frozen=True, slots=True)
class MpReachNlri(KnownAttribute):
    TYPE_CODE = AttrType.MP_REACH_NLRI
    FLAGS = OPTIONAL_NON_TRANSITIVE
    ON_MALFORMED = OnMalformed.SESSION_RESET
    family: families.Family
    next_hops: tuple[NextHopAddress, ...]
    nlri: tuple[families.Prefix, ...] = ()

    def pack_value(self, ctx: Context) -> bytes:
        next_hop = b"".join(a.packed for a in self.next_hops)
        head = struct.pack("!HBB", self.family.afi, self.family.safi, len(next_hop))
        return head + next_hop + b"\0" + families.pack_prefixes(self.nlri)

    @classmethod
    def understands(cls, value: bytes) -> bool:
        return _speaks_family(value)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        family = _mp_family(value)
        if len(value) < 4:
            raise _mp_error("truncated next hop length")
        length = value[3]
        if length not in _NEXT_HOP_LENGTHS[family] or len(value) < 5 + length:
            raise _mp_error(f"next hop of {length} bytes for {family}")
        raw = value[4 : 4 + length]
        next_hops: tuple[NextHopAddress, ...]
        if length == 4:
            next_hops = (IPv4Address(raw),)
        else:
            next_hops = tuple(IPv6Address(raw[i : i + 16]) for i in range(0, length, 16))
        # The octet after the next hop is reserved (formerly SNPAs): ignored, RFC 4760 §3.
        nlri = families.unpack_prefixes(
            value[5 + length :], family, errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR
        )
        return cls(family, next_hops, nlri)


@_register
@dataclass(frozen=True, slots=True)
class MpUnreachNlri(KnownAttribute):
    TYPE_CODE = AttrType.MP_UNREACH_NLRI
    FLAGS = OPTIONAL_NON_TRANSITIVE
    ON_MALFORMED = OnMalformed.SESSION_RESET
    family: families.Family
    withdrawn: tuple[families.Prefix, ...] = ()

    def pack_value(self, ctx: Context) -> bytes:
        head = struct.pack("!HB", self.family.afi, self.family.safi)
        return head + families.pack_prefixes(self.withdrawn)

    @classmethod
    def understands(cls, value: bytes) -> bool:
        return _speaks_family(value)

    @classmethod
    def unpack_value(cls, value: bytes, ctx: Context) -> Self:
        family = _mp_family(value)
        withdrawn = families.unpack_prefixes(
            value[3:], family, errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR
        )
        return cls(family, withdrawn)


@dataclass(frozen=True, slots=True)
class UnknownAttribute:
    """An optional attribute ironlb does not interpret, kept byte for byte."""

    type_code: int
    flags: int
    value: bytes

    def propagated(self) -> UnknownAttribute | None:
        """This attribute as passed on to another peer: optional transitive ones go with the
        Partial bit set, optional non-transitive ones are not passed on (RFC 4271 §5)."""
        if not self.flags & AttrFlag.TRANSITIVE:
            return None
        return UnknownAttribute(self.type_code, self.flags | AttrFlag.PARTIAL, self.value)


Attribute = KnownAttribute | UnknownAttribute


def type_code(attribute: Attribute) -> int:
    if isinstance(attribute, UnknownAttribute):
        return attribute.type_code
    return attribute.TYPE_CODE


def pack(attribute: Attribute, ctx: Context) -> bytes:
    """Flags, type, length, value; the Extended Length bit exactly when the value needs it."""
    flags: int
    if isinstance(attribute, UnknownAttribute):
        flags, value = attribute.flags & _SENT_FLAGS, attribute.value
    else:
        flags, value = attribute.FLAGS, attribute.pack_value(ctx)
    code = type_code(attribute)
    if len(value) > 0xFF:
        return struct.pack("!BBH", flags | AttrFlag.EXTENDED_LENGTH, code, len(value)) + value
    return struct.pack("!BBB", flags, code, len(value)) + value


@dataclass(frozen=True, slots=True)
class Decoded:
    attributes: tuple[Attribute, ...]
    malformed: errors.BgpError | None
    """The first error that RFC 7606 answers with treat-as-withdraw; None when sound."""


def unpack_all(data: bytes, ctx: Context) -> Decoded:
    """Decode an UPDATE's path attributes (RFC 4271 §6.3 as revised by RFC 7606)."""
    found: dict[int, Attribute] = {}
    seen: set[int] = set()
    malformed: errors.BgpError | None = None
    offset = 0
    while offset < len(data):
        flags = data[offset]
        header = 4 if flags & AttrFlag.EXTENDED_LENGTH else 3
        if offset + header > len(data):
            # RFC 7606 §4: the Total Attribute Length still locates the NLRI; treat-as-withdraw.
            malformed = malformed or _error(
                errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, "truncated attribute header"
            )
            break
        code = data[offset + 1]
        length = int.from_bytes(data[offset + 2 : offset + header], "big")
        end = offset + header + length
        if end > len(data):
            malformed = malformed or _error(
                errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR, f"attribute {code} overruns the list"
            )
            break
        raw, value = data[offset:end], data[offset + header : end]
        offset = end
        if code in seen:
            # RFC 7606 §3 g: a repeated MP attribute is fatal, any other repeat is dropped.
            if code in (AttrType.MP_REACH_NLRI, AttrType.MP_UNREACH_NLRI):
                raise _error(errors.UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, f"repeated {code}")
            continue
        seen.add(code)
        known = _REGISTRY.get(code)
        if known is None or not known.understands(value):
            if not flags & AttrFlag.OPTIONAL:
                raise errors.BgpError(
                    errors.ErrorCode.UPDATE_MESSAGE,
                    errors.UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                    raw,
                    f"well-known attribute {code}",
                )
            found[code] = UnknownAttribute(code, flags & _SENT_FLAGS, value)
            continue
        try:
            if flags & _CATEGORY != known.FLAGS & _CATEGORY:
                raise _error(errors.UpdateSubcode.ATTRIBUTE_FLAGS_ERROR, f"flags {flags:#04x}")
            found[code] = known.unpack_value(value, ctx)
        except errors.BgpError as e:
            error = errors.BgpError(e.code, e.subcode, raw, f"{known.TYPE_CODE.name}: {e.reason}")
            if known.ON_MALFORMED is OnMalformed.SESSION_RESET:
                raise error from None
            if known.ON_MALFORMED is OnMalformed.TREAT_AS_WITHDRAW:
                malformed = malformed or error
    return Decoded(tuple(found.values()), malformed)
