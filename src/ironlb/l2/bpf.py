"""Classic BPF socket filters for the responder's AF_PACKET sockets, and their packing.

The kernel runs these on every frame of the interface, so the responder's Python loop only
wakes up for frames it may answer:
- `ARP`: untagged ARP;
- `NEIGHBOR_DISCOVERY`: untagged IPv6 whose next header is ICMPv6 and whose ICMPv6 type is
  Neighbor Solicitation or Advertisement. Extension headers are not followed (ND from a
  neighbour carries none), so ND behind one is dropped here, as `ndp.decode` would.
Both drop frames the host itself sends (a packet socket also sees outgoing frames) and frames
whose 802.1Q tag the NIC stripped into metadata: those belong to a VLAN device, whose own socket
sees them untagged. A frame too short for a load is dropped by the kernel (a failed load returns
0). The filters only narrow traffic: `frames.decode_frame` still validates everything.

Attaching is the shell's job: keep the `pack` result alive in a buffer (ctypes) while
`setsockopt(SOL_SOCKET, SO_ATTACH_FILTER, pack_fprog(len(program), address_of_buffer))` runs.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from ironlb.l2 import ethernet, ndp

SO_ATTACH_FILTER = 26
"""Linux asm-generic value (x86-64, arm64), not exported by Python's socket module."""

MAX_INSTRUCTIONS = 4096
"""BPF_MAXINSNS: the kernel refuses longer classic programs."""

# Opcode parts from linux/filter.h and linux/bpf_common.h.
_LD, _JMP, _RET = 0x00, 0x05, 0x06
_B, _H = 0x10, 0x08
_ABS = 0x20
_JEQ, _K = 0x10, 0x00

# Loads at SKF_AD_OFF (-0x1000) + n read packet metadata instead of packet bytes.
_SKF_AD_OFF = -0x1000
_SKF_AD_PKTTYPE = 4
_SKF_AD_VLAN_TAG_PRESENT = 48
_PACKET_OUTGOING = 4

_ACCEPT_WHOLE_FRAME = 0xFFFFFFFF
_ETHERTYPE_OFFSET = 12
_NEXT_HEADER_OFFSET = ethernet.HEADER_SIZE + 6
_ICMPV6_TYPE_OFFSET = ethernet.HEADER_SIZE + ndp.HEADER_SIZE

_SOCK_FILTER = struct.Struct("=HBBI")
_SOCK_FPROG = struct.Struct("@HP")


class Instruction(NamedTuple):
    """One `struct sock_filter`: opcode, jump-if-true and jump-if-false offsets, constant."""

    code: int
    jt: int
    jf: int
    k: int


Program = tuple[Instruction, ...]


def _load_byte(offset: int) -> Instruction:
    return Instruction(_LD | _B | _ABS, 0, 0, offset & 0xFFFFFFFF)


def _load_half(offset: int) -> Instruction:
    return Instruction(_LD | _H | _ABS, 0, 0, offset & 0xFFFFFFFF)


def _jump_if_equal(value: int, jt: int, jf: int) -> Instruction:
    return Instruction(_JMP | _JEQ | _K, jt, jf, value)


def _ret(value: int) -> Instruction:
    return Instruction(_RET | _K, 0, 0, value)


# Jump offsets count instructions skipped: from index i, offset o lands on i + 1 + o.
ARP: Program = (
    _load_byte(_SKF_AD_OFF + _SKF_AD_PKTTYPE),  # 0
    _jump_if_equal(_PACKET_OUTGOING, 5, 0),  # 1: outgoing -> 7
    _load_byte(_SKF_AD_OFF + _SKF_AD_VLAN_TAG_PRESENT),  # 2
    _jump_if_equal(0, 0, 3),  # 3: tag stripped by the NIC -> 7
    _load_half(_ETHERTYPE_OFFSET),  # 4
    _jump_if_equal(ethernet.EtherType.ARP, 0, 1),  # 5: not ARP -> 7
    _ret(_ACCEPT_WHOLE_FRAME),  # 6
    _ret(0),  # 7
)

NEIGHBOR_DISCOVERY: Program = (
    _load_byte(_SKF_AD_OFF + _SKF_AD_PKTTYPE),  # 0
    _jump_if_equal(_PACKET_OUTGOING, 10, 0),  # 1: outgoing -> 12
    _load_byte(_SKF_AD_OFF + _SKF_AD_VLAN_TAG_PRESENT),  # 2
    _jump_if_equal(0, 0, 8),  # 3: tag stripped by the NIC -> 12
    _load_half(_ETHERTYPE_OFFSET),  # 4
    _jump_if_equal(ethernet.EtherType.IPV6, 0, 6),  # 5: not IPv6 -> 12
    _load_byte(_NEXT_HEADER_OFFSET),  # 6
    _jump_if_equal(ndp.NEXT_HEADER_ICMPV6, 0, 4),  # 7: not ICMPv6 -> 12
    _load_byte(_ICMPV6_TYPE_OFFSET),  # 8
    _jump_if_equal(ndp.IcmpType.NEIGHBOR_SOLICITATION, 1, 0),  # 9: NS -> 11
    _jump_if_equal(ndp.IcmpType.NEIGHBOR_ADVERTISEMENT, 0, 1),  # 10: not NA -> 12
    _ret(_ACCEPT_WHOLE_FRAME),  # 11
    _ret(0),  # 12
)


def pack(program: Program) -> bytes:
    """The program as an array of `struct sock_filter` (native byte order)."""
    if not 0 < len(program) <= MAX_INSTRUCTIONS:
        raise ValueError(f"a classic BPF program has 1..{MAX_INSTRUCTIONS} instructions")
    return b"".join(_SOCK_FILTER.pack(*instruction) for instruction in program)


def pack_fprog(count: int, filter_address: int) -> bytes:
    """`struct sock_fprog` for SO_ATTACH_FILTER: `count` instructions at `filter_address`."""
    return _SOCK_FPROG.pack(count, filter_address)
