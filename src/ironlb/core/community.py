"""BGP community values, from the configuration to the wire: a standard community (RFC 1997:
32 bits, written AA:NN) or a large one (RFC 8092: three 32-bit numbers, written large:A:B:C as
in MetalLB). `config` parses them from BGPAdvertisements and Community aliases, `bgp.attributes`
packs them: one type for each kind, so nothing converts between representations.

Both are immutable, hashable and ordered (the RIB sends them sorted). `str()` is the numeric
form MetalLB shows (a well-known community too: `Community.parse` also reads its name).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self


class Value:
    """Either kind of community (a plain base class, so that msgspec hands configuration text to
    `config.parse_community`)."""

    __slots__ = ()

    @property
    def parts(self) -> tuple[int, ...]:
        """The numbers as written: (AA, NN) or (A, B, C)."""
        raise NotImplementedError


def _parse_uint(text: str, bits: int, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) >= 1 << bits:
        raise ValueError(f"{what}: {text!r} is not a number in 0-{(1 << bits) - 1}")
    return int(text)


@dataclass(frozen=True, slots=True, order=True)
class Community(Value):
    """A standard community (RFC 1997): 32 bits, written AA:NN."""

    value: int

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        return cls(int.from_bytes(data, "big"))

    @classmethod
    def parse(cls, text: str) -> Community:
        """ "AA:NN" (each 0-65535) or a well-known name such as "no-export"."""
        well_known = WELL_KNOWN.get(text.strip().lower())
        if well_known is not None:
            return well_known
        parts = text.strip().split(":")
        if len(parts) != 2:
            names = ", ".join(WELL_KNOWN)
            raise ValueError(f"invalid community {text!r}: expected AA:NN or one of {names}")
        what = f"invalid community {text!r}"
        return cls(_parse_uint(parts[0], 16, what) << 16 | _parse_uint(parts[1], 16, what))

    def pack(self) -> bytes:
        return struct.pack("!I", self.value)

    @property
    def parts(self) -> tuple[int, int]:
        """AA and NN."""
        return self.value >> 16, self.value & 0xFFFF

    def __str__(self) -> str:
        return f"{self.value >> 16}:{self.value & 0xFFFF}"


WELL_KNOWN = {
    "graceful-shutdown": Community(0xFFFF0000),  # RFC 8326
    "blackhole": Community(0xFFFF029A),  # RFC 7999
    "no-export": Community(0xFFFFFF01),  # RFC 1997
    "no-advertise": Community(0xFFFFFF02),  # RFC 1997
    "no-export-subconfed": Community(0xFFFFFF03),  # RFC 1997
    "no-peer": Community(0xFFFFFF04),  # RFC 3765
}


@dataclass(frozen=True, slots=True, order=True)
class LargeCommunity(Value):
    """A large community (RFC 8092): three 32-bit numbers, written large:A:B:C as in MetalLB."""

    global_admin: int
    local_data_1: int
    local_data_2: int

    @classmethod
    def from_wire(cls, data: bytes) -> Self:
        return cls(*struct.unpack("!III", data))

    @classmethod
    def parse(cls, text: str) -> Self:
        parts = text.strip().split(":")
        if len(parts) != 4 or parts[0].lower() != "large":
            raise ValueError(f"invalid large community {text!r}: expected large:A:B:C")
        what = f"invalid large community {text!r}"
        return cls(*(_parse_uint(p, 32, what) for p in parts[1:]))

    def pack(self) -> bytes:
        return struct.pack("!III", self.global_admin, self.local_data_1, self.local_data_2)

    @property
    def parts(self) -> tuple[int, int, int]:
        return self.global_admin, self.local_data_1, self.local_data_2

    def __str__(self) -> str:
        return f"large:{self.global_admin}:{self.local_data_1}:{self.local_data_2}"
