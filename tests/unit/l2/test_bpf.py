"""The socket filters, run by a small classic-BPF interpreter over frames the codecs build."""

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import pytest

from ironlb.l2 import bpf, ethernet, frames, ndp

MAC = ethernet.MacAddress.parse("02:00:5e:10:00:01")
PEER = ethernet.MacAddress.parse("02:00:5e:10:00:02")
VIP4 = IPv4Address("198.18.0.10")
VIP6 = IPv6Address("2001:db8::10")
CLIENT6 = IPv6Address("2001:db8::99")

SKF_AD_OFF = 0x1_0000_0000 - 0x1000
PACKET_HOST, PACKET_BROADCAST, PACKET_OUTGOING = 0, 1, 4


@dataclass(frozen=True)
class Metadata:
    """What the kernel knows about a frame besides its bytes."""

    pkttype: int = PACKET_BROADCAST
    vlan_tag_present: bool = False


def run(program: bpf.Program, frame: bytes, meta: Metadata = Metadata()) -> int:
    """Classic BPF as Linux runs it for SO_ATTACH_FILTER, for the opcodes our programs use."""
    accumulator = 0
    pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code in (0x30, 0x28, 0x20):  # ld b/h/w [k]
            size = {0x30: 1, 0x28: 2, 0x20: 4}[code]
            if k >= SKF_AD_OFF:
                ancillary = {4: meta.pkttype, 48: int(meta.vlan_tag_present)}
                accumulator = ancillary[k - SKF_AD_OFF]
            elif k + size > len(frame):
                return 0  # the kernel aborts the program and drops the frame
            else:
                accumulator = int.from_bytes(frame[k : k + size], "big")
        elif code == 0x15:  # jeq #k
            pc += jt if accumulator == k else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not modelled")


def test_programs_are_well_formed() -> None:
    for program in (bpf.ARP, bpf.NEIGHBOR_DISCOVERY):
        assert program[-1].code == 0x06
        for index, instruction in enumerate(program):
            if instruction.code != 0x15:
                continue
            for offset in (instruction.jt, instruction.jf):
                assert index + 1 + offset < len(program)


def _ipv4_tcp() -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, bytes(4), VIP4.packed)
    return ethernet.encode(ethernet.Header(MAC, PEER), ethernet.EtherType.IPV4, ip + bytes(20))


def _ipv6(next_header: int, body: bytes) -> bytes:
    ip = struct.pack(
        "!IHBB16s16s", 6 << 28, len(body), next_header, 64, CLIENT6.packed, VIP6.packed
    )
    return ethernet.encode(ethernet.Header(MAC, PEER), ethernet.EtherType.IPV6, ip + body)


def _solicitation() -> bytes:
    message = ndp.NeighborSolicitation(
        CLIENT6, ndp.solicited_node_multicast(VIP6), VIP6, source_link_layer=PEER
    )
    return frames.encode_frame(frames.Frame(ethernet.Header(MAC, PEER), message))


def _tagged(frame: bytes) -> bytes:
    return frame[:12] + b"\x81\x00\x00\x64" + frame[12:]


ARP_REQUEST = frames.arp_request(PEER, IPv4Address("198.18.0.99"), VIP4)
NS = _solicitation()
NA = frames.unsolicited_neighbor_advertisement(PEER, VIP6)
DAD = frames.duplicate_address_probe(PEER, VIP6)
IPV4_TCP = _ipv4_tcp()
IPV6_UDP = _ipv6(17, bytes(8))
IPV6_ECHO = _ipv6(58, b"\x80\x00" + bytes(6))

CASES = [
    # (name, frame, metadata, accepted by ARP, accepted by ND)
    ("arp", ARP_REQUEST, Metadata(), True, False),
    ("garp-reply", frames.gratuitous_arp_reply(PEER, VIP4), Metadata(), True, False),
    ("ns", NS, Metadata(PACKET_HOST), False, True),
    ("dad-ns", DAD, Metadata(), False, True),
    ("na", NA, Metadata(), False, True),
    ("ipv4-tcp", IPV4_TCP, Metadata(PACKET_HOST), False, False),
    ("ipv6-udp", IPV6_UDP, Metadata(PACKET_HOST), False, False),
    ("icmpv6-echo", IPV6_ECHO, Metadata(PACKET_HOST), False, False),
    ("arp-in-band-vlan", _tagged(ARP_REQUEST), Metadata(), False, False),
    ("ns-in-band-vlan", _tagged(NS), Metadata(), False, False),
    ("arp-offloaded-vlan", ARP_REQUEST, Metadata(vlan_tag_present=True), False, False),
    ("ns-offloaded-vlan", NS, Metadata(vlan_tag_present=True), False, False),
    ("arp-we-sent", ARP_REQUEST, Metadata(PACKET_OUTGOING), False, False),
    ("na-we-sent", NA, Metadata(PACKET_OUTGOING), False, False),
    ("arp-truncated", ARP_REQUEST[:13], Metadata(), False, False),
    ("ns-truncated", NS[:54], Metadata(), False, False),
    ("empty", b"", Metadata(), False, False),
]


@pytest.mark.parametrize(
    ("frame", "meta", "arp_accepts", "nd_accepts"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_filters(frame: bytes, meta: Metadata, arp_accepts: bool, nd_accepts: bool) -> None:
    assert bool(run(bpf.ARP, frame, meta)) is arp_accepts
    assert bool(run(bpf.NEIGHBOR_DISCOVERY, frame, meta)) is nd_accepts


def test_accepted_frames_are_kept_whole() -> None:
    assert run(bpf.ARP, ARP_REQUEST) >= len(ARP_REQUEST)
    assert run(bpf.NEIGHBOR_DISCOVERY, NA) >= len(NA)


def test_pack_is_the_sock_filter_array() -> None:
    packed = bpf.pack(bpf.ARP)
    assert len(packed) == 8 * len(bpf.ARP)
    assert [bpf.Instruction(*fields) for fields in struct.iter_unpack("=HBBI", packed)] == list(
        bpf.ARP
    )
    with pytest.raises(ValueError, match="instructions"):
        bpf.pack(())


def test_pack_fprog_is_the_native_sock_fprog() -> None:
    packed = bpf.pack_fprog(13, 0xDEADBEEF)
    assert len(packed) == struct.calcsize("@HP")  # length, padding, pointer
    assert struct.unpack("@HP", packed) == (13, 0xDEADBEEF)
