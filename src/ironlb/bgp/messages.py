"""BGP messages (RFC 4271 §4, RFC 2918, RFC 4724 End-of-RIB) and stream framing.

`FrameReader` cuts a TCP byte stream into whole messages, checking only the header (marker,
19-4096 length; no Extended Message support) and holding at most `max_buffered` bytes.
`decode(frame, ctx)` turns one whole message into an `Open`, `Update`, `Notification`,
`Keepalive` or `RouteRefresh`; `encode(message, ctx)` is its inverse. Both are pure; the context
is the negotiated 2-/4-octet AS mode, which only matters for UPDATE.

Invariants: every failure is a `BgpError` naming the NOTIFICATION to send (RFC 4271 §6);
`decode(encode(m)) == m` for every message ironlb can build; an UPDATE whose attributes RFC 7606
says to treat-as-withdraw decodes fine and carries the error in `Update.malformed`.
"""

from __future__ import annotations

import abc
import enum
import struct
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import ClassVar, Self, TypeVar

from ironlb.bgp import attributes, capabilities, errors, families

HEADER_SIZE = 19
MAX_MESSAGE_SIZE = 4096
MARKER = b"\xff" * 16
VERSION = 4
DEFAULT_CONTEXT = attributes.Context()


class MessageType(enum.IntEnum):
    OPEN = 1
    UPDATE = 2
    NOTIFICATION = 3
    KEEPALIVE = 4
    ROUTE_REFRESH = 5


def _header_error(subcode: errors.HeaderSubcode, data: bytes, reason: str) -> errors.BgpError:
    return errors.BgpError(errors.ErrorCode.MESSAGE_HEADER, subcode, data, reason)


def check_header(header: bytes) -> int:
    """Validate a 19-byte header; returns the message length it announces."""
    if header[:16] != MARKER:
        raise _header_error(errors.HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED, b"", "bad marker")
    length = int.from_bytes(header[16:18], "big")
    if not HEADER_SIZE <= length <= MAX_MESSAGE_SIZE:
        raise _header_error(
            errors.HeaderSubcode.BAD_MESSAGE_LENGTH, header[16:18], f"length {length}"
        )
    return length


class KnownMessage(abc.ABC):
    __slots__ = ()
    TYPE: ClassVar[MessageType]
    MIN_LENGTH: ClassVar[int]
    MAX_LENGTH: ClassVar[int] = MAX_MESSAGE_SIZE

    @abc.abstractmethod
    def pack_body(self, ctx: attributes.Context) -> bytes: ...

    @classmethod
    @abc.abstractmethod
    def unpack_body(cls, body: bytes, ctx: attributes.Context) -> Self: ...


def _open_error(subcode: errors.OpenSubcode, reason: str, data: bytes = b"") -> errors.BgpError:
    return errors.BgpError(errors.ErrorCode.OPEN_MESSAGE, subcode, data, reason)


_CAPABILITIES_PARAMETER = 2
# RFC 9072: a first parameter of type 255 under a length of 255 announces 2-octet lengths.
_EXTENDED_PARAMETERS = 255

_C = TypeVar("_C", bound=capabilities.KnownCapability)


@dataclass(frozen=True, slots=True)
class Open(KnownMessage):
    TYPE = MessageType.OPEN
    MIN_LENGTH = 29
    my_as: int
    """The 2-octet My Autonomous System field: AS_TRANS when the real AS needs 4 octets."""
    hold_time: int
    router_id: IPv4Address
    capabilities: tuple[capabilities.Capability, ...] = ()

    @property
    def asn(self) -> int:
        """The speaker's AS: from the 4-octet AS capability when present (RFC 6793 §4.1)."""
        four = self.capability(capabilities.FourOctetAs)
        return four.asn if four is not None else self.my_as

    def capability(self, kind: type[_C]) -> _C | None:
        return next((c for c in self.capabilities if isinstance(c, kind)), None)

    def pack_body(self, ctx: attributes.Context) -> bytes:
        caps = [capabilities.pack(c) for c in self.capabilities]
        params = b"".join(struct.pack("!BB", _CAPABILITIES_PARAMETER, len(c)) + c for c in caps)
        if len(params) > 0xFF:
            params = b"".join(struct.pack("!BH", _CAPABILITIES_PARAMETER, len(c)) + c for c in caps)
            params = struct.pack("!BBH", 0xFF, _EXTENDED_PARAMETERS, len(params)) + params
        else:
            params = bytes((len(params),)) + params
        head = struct.pack("!BHH", VERSION, self.my_as, self.hold_time)
        return head + self.router_id.packed + params

    @classmethod
    def unpack_body(cls, body: bytes, ctx: attributes.Context) -> Self:
        version, my_as, hold_time = struct.unpack_from("!BHH", body)
        if version != VERSION:
            raise _open_error(
                errors.OpenSubcode.UNSUPPORTED_VERSION_NUMBER,
                f"version {version}",
                struct.pack("!H", VERSION),
            )
        length, params = body[9], body[10:]
        size = 1
        if length == 0xFF and params[:1] == bytes((_EXTENDED_PARAMETERS,)):
            if len(params) < 3:
                raise _open_error(errors.OpenSubcode.UNSPECIFIC, "truncated extended parameters")
            length, params, size = int.from_bytes(params[1:3], "big"), params[3:], 2
        if length != len(params):
            raise _open_error(errors.OpenSubcode.UNSPECIFIC, "optional parameters length")
        found: list[capabilities.Capability] = []
        offset = 0
        while offset < len(params):
            if offset + 1 + size > len(params):
                raise _open_error(errors.OpenSubcode.UNSPECIFIC, "truncated optional parameter")
            kind = params[offset]
            value_length = int.from_bytes(params[offset + 1 : offset + 1 + size], "big")
            start = offset + 1 + size
            value = params[start : start + value_length]
            if len(value) != value_length:
                raise _open_error(errors.OpenSubcode.UNSPECIFIC, "optional parameter overrun")
            if kind != _CAPABILITIES_PARAMETER:
                raise _open_error(
                    errors.OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER, f"parameter {kind}"
                )
            found += capabilities.unpack_all(value)
            offset = start + value_length
        return cls(my_as, hold_time, IPv4Address(body[5:9]), tuple(found))


_A = TypeVar("_A", bound=attributes.KnownAttribute)


def _update_error(subcode: errors.UpdateSubcode, reason: str, data: bytes = b"") -> errors.BgpError:
    return errors.BgpError(errors.ErrorCode.UPDATE_MESSAGE, subcode, data, reason)


@dataclass(frozen=True, slots=True)
class Update(KnownMessage):
    TYPE = MessageType.UPDATE
    MIN_LENGTH = 23
    withdrawn: tuple[families.Prefix, ...] = ()
    """IPv4 unicast withdrawals; IPv6 ones travel in MP_UNREACH_NLRI."""
    path_attributes: tuple[attributes.Attribute, ...] = ()
    nlri: tuple[families.Prefix, ...] = ()
    """IPv4 unicast announcements; IPv6 ones travel in MP_REACH_NLRI."""
    malformed: errors.BgpError | None = field(default=None, compare=False)
    """Set on receipt when RFC 7606 says treat-as-withdraw: the NLRI parsed, the path did not."""

    def attribute(self, kind: type[_A]) -> _A | None:
        return next((a for a in self.path_attributes if type(a) is kind), None)

    def end_of_rib(self) -> families.Family | None:
        """The family this UPDATE closes the initial table of, if it is an End-of-RIB marker
        (RFC 4724 §2: empty for IPv4, a lone empty MP_UNREACH_NLRI otherwise)."""
        if self.withdrawn or self.nlri:
            return None
        if not self.path_attributes:
            return families.Family.IPV4_UNICAST
        match self.path_attributes:
            case (attributes.MpUnreachNlri(family=family, withdrawn=()),):
                return family
        return None

    def pack_body(self, ctx: attributes.Context) -> bytes:
        withdrawn = families.pack_prefixes(self.withdrawn)
        path = b"".join(attributes.pack(a, ctx) for a in self.path_attributes)
        return (
            struct.pack("!H", len(withdrawn))
            + withdrawn
            + struct.pack("!H", len(path))
            + path
            + families.pack_prefixes(self.nlri)
        )

    @classmethod
    def unpack_body(cls, body: bytes, ctx: attributes.Context) -> Self:
        ipv4 = families.Family.IPV4_UNICAST
        invalid = errors.UpdateSubcode.INVALID_NETWORK_FIELD
        (withdrawn_length,) = struct.unpack_from("!H", body)
        path_at = 2 + withdrawn_length
        if path_at + 2 > len(body):
            raise _update_error(errors.UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "withdrawn length")
        (path_length,) = struct.unpack_from("!H", body, path_at)
        nlri_at = path_at + 2 + path_length
        if nlri_at > len(body):
            raise _update_error(errors.UpdateSubcode.MALFORMED_ATTRIBUTE_LIST, "attribute length")
        withdrawn = families.unpack_prefixes(body[2:path_at], ipv4, invalid)
        decoded = attributes.unpack_all(body[path_at + 2 : nlri_at], ctx)
        nlri = families.unpack_prefixes(body[nlri_at:], ipv4, invalid)
        update = cls(withdrawn, decoded.attributes, nlri, decoded.malformed)
        return update if update.malformed else update._checked_mandatory()

    def _checked_mandatory(self) -> Self:
        # RFC 7606 §3 d: a missing well-known mandatory attribute means treat-as-withdraw.
        # NEXT_HOP is only mandatory beside classic NLRI (RFC 4760 §3).
        required = []
        if self.nlri or self.attribute(attributes.MpReachNlri):
            required = [attributes.AttrType.ORIGIN, attributes.AttrType.AS_PATH]
        if self.nlri:
            required.append(attributes.AttrType.NEXT_HOP)
        present = {attributes.type_code(a) for a in self.path_attributes}
        missing = next((code for code in required if code not in present), None)
        if missing is None:
            return self
        error = _update_error(
            errors.UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE, missing.name, bytes((missing,))
        )
        return type(self)(self.withdrawn, self.path_attributes, self.nlri, error)


def end_of_rib(family: families.Family) -> Update:
    if family is families.Family.IPV4_UNICAST:
        return Update()
    return Update(path_attributes=(attributes.MpUnreachNlri(family),))


@dataclass(frozen=True, slots=True)
class Notification(KnownMessage):
    TYPE = MessageType.NOTIFICATION
    MIN_LENGTH = 21
    code: int
    subcode: int
    data: bytes = b""

    @classmethod
    def from_error(cls, error: errors.BgpError) -> Self:
        return cls(error.code, error.subcode, error.data)

    @classmethod
    def cease(cls, subcode: errors.CeaseSubcode, communication: str = "") -> Self:
        """A Cease, with an RFC 9003 shutdown communication for shutdown and reset."""
        if not communication or subcode not in _COMMUNICATING:
            return cls(errors.ErrorCode.CEASE, subcode)
        # At most 255 octets of UTF-8, cut on a character boundary.
        text = communication.encode()[:0xFF].decode(errors="ignore").encode()
        return cls(errors.ErrorCode.CEASE, subcode, bytes((len(text),)) + text)

    @property
    def communication(self) -> str | None:
        """The operator's shutdown message (RFC 9003), if this Cease carries a valid one."""
        if self.code != errors.ErrorCode.CEASE or self.subcode not in _COMMUNICATING:
            return None
        if not self.data or self.data[0] != len(self.data) - 1:
            return None
        try:
            return self.data[1:].decode()
        except UnicodeDecodeError:
            return None

    def __str__(self) -> str:
        text = errors.describe(self.code, self.subcode)
        return f"{text} ({self.communication})" if self.communication else text

    def pack_body(self, ctx: attributes.Context) -> bytes:
        return struct.pack("!BB", self.code, self.subcode) + self.data

    @classmethod
    def unpack_body(cls, body: bytes, ctx: attributes.Context) -> Self:
        return cls(body[0], body[1], body[2:])


_COMMUNICATING = (
    errors.CeaseSubcode.ADMINISTRATIVE_SHUTDOWN,
    errors.CeaseSubcode.ADMINISTRATIVE_RESET,
)


@dataclass(frozen=True, slots=True)
class Keepalive(KnownMessage):
    TYPE = MessageType.KEEPALIVE
    MIN_LENGTH = HEADER_SIZE
    MAX_LENGTH = HEADER_SIZE

    def pack_body(self, ctx: attributes.Context) -> bytes:
        return b""

    @classmethod
    def unpack_body(cls, body: bytes, ctx: attributes.Context) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class RouteRefresh(KnownMessage):
    """A request to re-send one (AFI, SAFI) (RFC 2918). Kept as integers: a peer may ask for a
    family that was not negotiated, which RFC 2918 says to ignore, not to fail on."""

    TYPE = MessageType.ROUTE_REFRESH
    MIN_LENGTH = 23
    afi: int
    safi: int
    subtype: int = 0
    """RFC 7313 message subtype; 0 is a plain refresh request."""

    def pack_body(self, ctx: attributes.Context) -> bytes:
        return struct.pack("!HBB", self.afi, self.subtype, self.safi)

    @classmethod
    def unpack_body(cls, body: bytes, ctx: attributes.Context) -> Self:
        if len(body) != 4:
            # ORF entries (RFC 5291) are never negotiated: anything longer is malformed.
            message = MARKER + struct.pack("!HB", HEADER_SIZE + len(body), cls.TYPE) + body
            raise errors.BgpError(
                errors.ErrorCode.ROUTE_REFRESH_MESSAGE,
                errors.RouteRefreshSubcode.INVALID_MESSAGE_LENGTH,
                message,
                f"body of {len(body)} bytes",
            )
        afi, subtype, safi = struct.unpack("!HBB", body)
        return cls(afi, safi, subtype)


Message = Open | Update | Notification | Keepalive | RouteRefresh
_REGISTRY: dict[int, type[Message]] = {
    kind.TYPE: kind for kind in (Open, Update, Notification, Keepalive, RouteRefresh)
}
KEEPALIVE = Keepalive()


def encode(message: KnownMessage, ctx: attributes.Context = DEFAULT_CONTEXT) -> bytes:
    body = message.pack_body(ctx)
    length = HEADER_SIZE + len(body)
    if length > MAX_MESSAGE_SIZE:
        raise ValueError(f"{message.TYPE.name} of {length} bytes exceeds {MAX_MESSAGE_SIZE}")
    return MARKER + struct.pack("!HB", length, message.TYPE) + body


def decode(frame: bytes, ctx: attributes.Context = DEFAULT_CONTEXT) -> Message:
    """Decode one whole message, header included."""
    if len(frame) < HEADER_SIZE:
        raise _header_error(
            errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"", f"{len(frame)} bytes is no header"
        )
    length = check_header(frame)
    if length != len(frame):
        raise _header_error(
            errors.HeaderSubcode.BAD_MESSAGE_LENGTH, frame[16:18], f"{len(frame)} bytes"
        )
    kind = _REGISTRY.get(frame[18])
    if kind is None:
        raise _header_error(errors.HeaderSubcode.BAD_MESSAGE_TYPE, frame[18:19], "unknown type")
    if not kind.MIN_LENGTH <= length <= kind.MAX_LENGTH:
        raise _header_error(
            errors.HeaderSubcode.BAD_MESSAGE_LENGTH, frame[16:18], f"{kind.TYPE.name} of {length}"
        )
    return kind.unpack_body(frame[HEADER_SIZE:], ctx)


class FrameReader:
    """Cuts a byte stream into whole BGP messages (h11-style: feed bytes, pull frames)."""

    def __init__(self, max_buffered: int = 1 << 20) -> None:
        self._max_buffered = max_buffered
        self._buffer = bytearray()
        self._start = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def receive_data(self, data: bytes) -> None:
        """Buffer `data`. Raises BufferError rather than hold more than `max_buffered` bytes:
        the consumer must drain `next_frame()` between reads."""
        if self.buffered + len(data) > self._max_buffered:
            raise BufferError(f"more than {self._max_buffered} bytes buffered")
        del self._buffer[: self._start]
        self._start = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole message, or None until more bytes arrive. A bad header raises."""
        if self.buffered < HEADER_SIZE:
            return None
        length = check_header(bytes(self._buffer[self._start : self._start + HEADER_SIZE]))
        if self.buffered < length:
            return None
        frame = bytes(self._buffer[self._start : self._start + length])
        self._start += length
        return frame

    def clear(self) -> None:
        self._buffer.clear()
        self._start = 0
