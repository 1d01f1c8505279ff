"""Membership packets: a compact, versioned, authenticated binary format (struct, no pickle).

Layout of version 2, big-endian; a name is a length octet and 1..253 bytes of UTF-8 (a
Kubernetes node name), meta a length octet and 0..64 bytes:

    magic "IL" (2) | version (1) | kind (1) | sequence (8) | sender name | recipient name
    body, by kind:
        PING      probe id (4) | target name
        ACK       probe id (4) | incarnation (4) | meta
        PING_REQ  probe id (4) | target name | family 4 or 6 (1) | address (4 or 16) | port (2)
        GOSSIP    (nothing: a carrier for updates, e.g. a LEAVE)
    update count (1), then per update: state (1) | incarnation (4) | name | meta
    tag (16): HMAC-SHA256 over everything before it, truncated to 128 bits

The tag is checked before anything after the version is parsed; RFC 2104 §5 allows truncation
to half the hash output. The key authenticates the cluster, not a node: every speaker holds it,
so any speaker can sign as any other, and a host without it can neither join nor speak for a
member. The sequence number is per sender and strictly increasing across restarts (the caller
seeds it with wall-clock nanoseconds), which is what lets receivers refuse replays.

The recipient's name is signed too, so a packet captured on its way to one member and replayed
to another is refused by the second (the replay window alone would take it: it is per sender and
receiver, and that receiver has not seen the sequence number yet). Version 1, which speakers
before it sent, is the same without the recipient name; it still decodes, with `recipient` None,
so that a rolling upgrade keeps the members of both versions talking (see `swim` for who still
accepts and sends it, and why that does not reopen the replay for members that both have 2).
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

from ironlb.core import election
from ironlb.membership import model, states

MAGIC = b"IL"
VERSION = 2
LEGACY_VERSION = 1
"""Without the recipient name: refusable only by its receiver's replay window."""
TAG_SIZE = 16
MAX_NAME_SIZE = 253
MAX_UPDATES = 255
MAX_INCARNATION = 2**32 - 1

_PREAMBLE = struct.Struct("!2sBBQ")  # magic, version, kind, sequence
_PROBE_ID = struct.Struct("!I")
_ACK = struct.Struct("!II")
_PORT = struct.Struct("!H")
_UPDATE = struct.Struct("!BI")
_COUNT = struct.Struct("!B")
_STATE_CODES = {
    states.MemberState.ALIVE: 1,
    states.MemberState.SUSPECT: 2,
    states.MemberState.DEAD: 3,
    states.MemberState.LEFT: 4,
}
_STATES = {code: state for state, code in _STATE_CODES.items()}


class Kind(enum.IntEnum):
    PING = 1
    ACK = 2
    PING_REQ = 3
    GOSSIP = 4


class DropReason(enum.StrEnum):
    """Why a received packet was dropped: a closed set, usable as a metric label."""

    BAD_LENGTH = "bad_length"
    NOT_IRONLB = "not_ironlb"
    UNKNOWN_VERSION = "unknown_version"
    BAD_MAC = "bad_mac"
    MALFORMED = "malformed"
    REPLAYED = "replayed"
    FROM_SELF = "from_self"
    WRONG_TARGET = "wrong_target"
    WRONG_RECIPIENT = "wrong_recipient"
    """Signed for another member: captured on its way there and replayed to us."""


class PacketRejected(Exception):
    def __init__(self, reason: DropReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Update:
    """What the sender believes about a member; meta only travels with ALIVE."""

    name: election.NodeName
    state: states.MemberState
    incarnation: int
    meta: bytes = b""


@dataclass(frozen=True, slots=True)
class Ping:
    probe_id: int
    target: election.NodeName
    """Who the sender thinks it pings: a node that got the address of another does not answer."""


@dataclass(frozen=True, slots=True)
class Ack:
    probe_id: int
    incarnation: int
    meta: bytes
    """Incarnation and meta of the member probed, so an ACK is also news that it is alive."""


@dataclass(frozen=True, slots=True)
class PingReq:
    probe_id: int
    target: election.NodeName
    target_endpoint: model.Endpoint


@dataclass(frozen=True, slots=True)
class Gossip:
    pass


Message: TypeAlias = Ping | Ack | PingReq | Gossip


@dataclass(frozen=True, slots=True)
class Packet:
    sender: election.NodeName
    recipient: election.NodeName | None
    """The member it is for; None only in (and encodes as) the legacy version 1."""
    sequence: int
    message: Message
    updates: tuple[Update, ...] = ()


_KIND: dict[type[Message], Kind] = {
    Ping: Kind.PING,
    Ack: Kind.ACK,
    PingReq: Kind.PING_REQ,
    Gossip: Kind.GOSSIP,
}


def encode(packet: Packet, key: bytes) -> bytes:
    if len(packet.updates) > MAX_UPDATES:
        raise ValueError(f"at most {MAX_UPDATES} updates fit in a packet")
    updates = b"".join(_update(update) for update in packet.updates)
    signed = _head(packet) + _COUNT.pack(len(packet.updates)) + updates
    return signed + _tag(key, signed)


def size(packet: Packet) -> int:
    """Length of `encode(packet, key)`."""
    updates = sum(update_size(update) for update in packet.updates)
    return len(_head(packet)) + _COUNT.size + updates + TAG_SIZE


def update_size(update: Update) -> int:
    return len(_update(update))


def decode(data: bytes, keys: Sequence[bytes]) -> Packet:
    """The packet in `data` if it is well formed and signed with one of `keys`.

    Raises `PacketRejected` and nothing else.
    """
    if len(data) < _PREAMBLE.size + TAG_SIZE:
        raise PacketRejected(DropReason.BAD_LENGTH)
    magic, version, kind, sequence = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise PacketRejected(DropReason.NOT_IRONLB)
    if version not in (VERSION, LEGACY_VERSION):
        raise PacketRejected(DropReason.UNKNOWN_VERSION)
    signed, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not any(hmac.compare_digest(_tag(key, signed), tag) for key in keys):
        raise PacketRejected(DropReason.BAD_MAC)
    reader = _Reader(signed, _PREAMBLE.size)
    sender = reader.name()
    recipient = reader.name() if version == VERSION else None
    message: Message
    if kind == Kind.PING:
        message = Ping(reader.unpack(_PROBE_ID)[0], reader.name())
    elif kind == Kind.ACK:
        probe_id, incarnation = reader.unpack(_ACK)
        message = Ack(probe_id, incarnation, reader.meta())
    elif kind == Kind.PING_REQ:
        probe_id, target = reader.unpack(_PROBE_ID)[0], reader.name()
        message = PingReq(probe_id, target, reader.endpoint())
    elif kind == Kind.GOSSIP:
        message = Gossip()
    else:
        raise PacketRejected(DropReason.MALFORMED)
    updates = tuple(reader.update() for _ in range(reader.unpack(_COUNT)[0]))
    if not reader.at_end():
        raise PacketRejected(DropReason.MALFORMED)
    return Packet(sender, recipient, sequence, message, updates)


def _head(packet: Packet) -> bytes:
    """Preamble, sender and message body."""
    message = packet.message
    version = LEGACY_VERSION if packet.recipient is None else VERSION
    parts = [_PREAMBLE.pack(MAGIC, version, _KIND[type(message)], packet.sequence)]
    parts.append(_name(packet.sender))
    if packet.recipient is not None:
        parts.append(_name(packet.recipient))
    if isinstance(message, Ping):
        parts += [_PROBE_ID.pack(message.probe_id), _name(message.target)]
    elif isinstance(message, Ack):
        parts += [_ACK.pack(message.probe_id, message.incarnation), _meta(message.meta)]
    elif isinstance(message, PingReq):
        endpoint = message.target_endpoint
        parts += [_PROBE_ID.pack(message.probe_id), _name(message.target)]
        parts += [bytes([endpoint.ip.version]), endpoint.ip.packed, _PORT.pack(endpoint.port)]
    return b"".join(parts)


def _update(update: Update) -> bytes:
    head = _UPDATE.pack(_STATE_CODES[update.state], update.incarnation)
    return head + _name(update.name) + _meta(update.meta)


def _tag(key: bytes, signed: bytes) -> bytes:
    return hmac.digest(key, signed, "sha256")[:TAG_SIZE]


def _name(name: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) <= MAX_NAME_SIZE:
        raise ValueError(f"a node name is 1..{MAX_NAME_SIZE} bytes: {name!r}")
    return bytes([len(raw)]) + raw


def _meta(meta: bytes) -> bytes:
    if len(meta) > model.MAX_META_SIZE:
        raise ValueError(f"meta is at most {model.MAX_META_SIZE} bytes")
    return bytes([len(meta)]) + meta


class _Reader:
    """Cursor over authenticated bytes; any inconsistency is MALFORMED."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def take(self, count: int) -> bytes:
        end = self._offset + count
        if end > len(self._data):
            raise PacketRejected(DropReason.MALFORMED)
        chunk = self._data[self._offset : end]
        self._offset = end
        return chunk

    def unpack(self, layout: struct.Struct) -> tuple[int, ...]:
        return layout.unpack(self.take(layout.size))

    def name(self) -> election.NodeName:
        raw = self.take(self.take(1)[0])
        if not raw:
            raise PacketRejected(DropReason.MALFORMED)
        try:
            return election.NodeName(raw.decode())
        except UnicodeDecodeError:
            raise PacketRejected(DropReason.MALFORMED) from None

    def meta(self) -> bytes:
        length = self.take(1)[0]
        if length > model.MAX_META_SIZE:
            raise PacketRejected(DropReason.MALFORMED)
        return self.take(length)

    def endpoint(self) -> model.Endpoint:
        family = self.take(1)[0]
        ip: IPv4Address | IPv6Address
        if family == 4:
            ip = IPv4Address(self.take(4))
        elif family == 6:
            ip = IPv6Address(self.take(16))
        else:
            raise PacketRejected(DropReason.MALFORMED)
        return model.Endpoint(ip, self.unpack(_PORT)[0])

    def update(self) -> Update:
        code, incarnation = self.unpack(_UPDATE)
        state = _STATES.get(code)
        if state is None:
            raise PacketRejected(DropReason.MALFORMED)
        name, meta = self.name(), self.meta()
        if meta and state is not states.MemberState.ALIVE:
            raise PacketRejected(DropReason.MALFORMED)
        return Update(name, state, incarnation, meta)

    def at_end(self) -> bool:
        return self._offset == len(self._data)
