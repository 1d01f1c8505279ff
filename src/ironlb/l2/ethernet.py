"""Ethernet II framing, with an optional 802.1Q tag, as seen by an AF_PACKET SOCK_RAW socket.

Frames here carry no preamble and no FCS (the NIC adds and strips them). Encoding pads to the
60-byte Ethernet minimum, because not every driver pads short frames (veth does not) and switches
drop runts. Decoding accepts trailing padding: the payload decoders know their own length.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ironlb.l2 import errors

HEADER_SIZE = 14
VLAN_TAG_SIZE = 4
MIN_FRAME_SIZE = 60

_HEADER = struct.Struct("!6s6sH")
_TAG = struct.Struct("!HH")


class EtherType(enum.IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


@dataclass(frozen=True, slots=True)
class MacAddress:
    """A 48-bit IEEE 802 MAC address."""

    packed: bytes

    def __post_init__(self) -> None:
        if len(self.packed) != 6:
            raise ValueError(f"a MAC address is 6 bytes, got {len(self.packed)}")

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """From the usual colon-separated form, e.g. `02:00:5e:10:00:01`."""
        parts = text.split(":")
        if len(parts) != 6 or not all(len(p) == 2 for p in parts):
            raise ValueError(f"not a MAC address: {text!r}")
        return cls(bytes.fromhex("".join(parts)))

    def __str__(self) -> str:
        return self.packed.hex(":")


BROADCAST = MacAddress(b"\xff" * 6)
ZERO = MacAddress(bytes(6))


@dataclass(frozen=True, slots=True)
class VlanTag:
    """An 802.1Q tag: VLAN id, priority code point and drop-eligible indicator."""

    vid: int
    priority: int = 0
    drop_eligible: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.vid <= 0xFFF or not 0 <= self.priority <= 7:
            raise ValueError(f"invalid 802.1Q tag {self!r}")


@dataclass(frozen=True, slots=True)
class Header:
    """Ethernet addresses and optional VLAN tag; the EtherType follows from the payload."""

    destination: MacAddress
    source: MacAddress
    vlan: VlanTag | None = None


def encode(header: Header, ethertype: EtherType, payload: bytes) -> bytes:
    """A complete frame, padded to the Ethernet minimum."""
    if header.vlan is None:
        head = _HEADER.pack(header.destination.packed, header.source.packed, ethertype)
    else:
        tag = header.vlan
        tci = tag.priority << 13 | int(tag.drop_eligible) << 12 | tag.vid
        head = _HEADER.pack(header.destination.packed, header.source.packed, EtherType.VLAN)
        head += _TAG.pack(tci, ethertype)
    frame = head + payload
    return frame.ljust(MIN_FRAME_SIZE, b"\0")


def decode(frame: bytes) -> tuple[Header, int, bytes]:
    """Header, EtherType of the payload, and the payload (with any trailing padding).

    One 802.1Q tag is understood; a second (QinQ) shows up as EtherType 0x8100, which callers
    do not handle.
    """
    if len(frame) < HEADER_SIZE:
        raise errors.MalformedFrame(errors.Reason.TRUNCATED)
    destination, source, ethertype = _HEADER.unpack_from(frame)
    offset = HEADER_SIZE
    vlan = None
    if ethertype == EtherType.VLAN:
        if len(frame) < HEADER_SIZE + VLAN_TAG_SIZE:
            raise errors.MalformedFrame(errors.Reason.TRUNCATED)
        tci, ethertype = _TAG.unpack_from(frame, offset)
        vlan = VlanTag(vid=tci & 0xFFF, priority=tci >> 13, drop_eligible=bool(tci >> 12 & 1))
        offset += VLAN_TAG_SIZE
    header = Header(MacAddress(destination), MacAddress(source), vlan)
    return header, ethertype, frame[offset:]
