"""Every decoder that reads the network, fed random and corrupted input: nothing escapes but
the decoder's own "malformed" error (which the shells count and drop).

Inputs are random bytes and valid encodings corrupted the ways a wire or an attacker corrupts
them (bytes overwritten, cut short, extended, length fields bent). `IRONLB_FUZZ_EXAMPLES` sets
how many inputs each case gets: a bounded number by default, so CI runs each decoder in
seconds; `make fuzz` runs 10^6 each. Pure: no I/O, no clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, ip_network

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ironlb.bgp import attributes, bfd, errors, families, messages
from ironlb.core import election
from ironlb.l2 import arp, ethernet, frames, ndp
from ironlb.l2 import errors as l2_errors
from ironlb.membership import model as member_model
from ironlb.membership import wire

EXAMPLES = int(os.environ.get("IRONLB_FUZZ_EXAMPLES", "2000"))
fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def corrupted(seeds: list[bytes], *, keep_prefix: int = 0) -> st.SearchStrategy[bytes]:
    """One of `seeds`, damaged: bytes overwritten, cut, extended or a 16-bit field bent;
    the first `keep_prefix` bytes stay intact (a marker the decoder checks first)."""

    @st.composite
    def damage(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["byte", "cut", "extend", "u16"]))
            span = len(data) - keep_prefix
            if kind == "byte" and span > 0:
                data[draw(st.integers(keep_prefix, len(data) - 1))] = draw(st.integers(0, 255))
            elif kind == "cut" and span > 0:
                del data[draw(st.integers(keep_prefix, len(data) - 1)) :]
            elif kind == "extend":
                data += draw(st.binary(min_size=1, max_size=64))
            elif kind == "u16" and span > 1:
                at = draw(st.integers(keep_prefix, len(data) - 2))
                data[at : at + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        return bytes(data)

    return damage()


def only(error: type[Exception], decode: Callable[[], object]) -> None:
    """Run `decode`; `error` (the decoder's "malformed") is fine, anything else fails."""
    with contextlib.suppress(error):
        decode()


# --- layer 2: Ethernet frames with ARP and NDP, and the bare ARP and NDP codecs ------------------

MAC = ethernet.MacAddress(bytes.fromhex("020000000001"))
OTHER = ethernet.MacAddress(bytes.fromhex("020000000002"))
V4, V4B = IPv4Address("198.18.0.10"), IPv4Address("198.18.0.241")
V6, V6B = IPv6Address("2001:db8::a"), IPv6Address("2001:db8::f1")
ARP_REQUEST = frames.arp_request(MAC, V4, V4B)
FRAME_SEEDS = [
    ARP_REQUEST,
    frames.arp_probe(MAC, V4B),
    frames.gratuitous_arp_reply(MAC, V4B),
    frames.arp_reply(frames.decode_frame(ARP_REQUEST), OTHER),
    frames.unsolicited_neighbor_advertisement(MAC, V6B),
    frames.duplicate_address_probe(MAC, V6B),
]
ARP_SEEDS = [
    arp.encode(message)
    for f in FRAME_SEEDS
    if isinstance(message := frames.decode_frame(f).message, arp.Arp)
]
NDP_SEEDS = [
    ndp.encode(ndp.NeighborSolicitation(V6, ndp.solicited_node_multicast(V6B), V6B, MAC)),
    ndp.encode(ndp.NeighborAdvertisement(V6B, V6, V6B, MAC, solicited=True, override=True)),
]


@fuzz
@given(st.binary(max_size=200) | corrupted(FRAME_SEEDS))
def test_ethernet_frames(data: bytes) -> None:
    only(l2_errors.MalformedFrame, lambda: frames.decode_frame(data))


@fuzz
@given(st.binary(max_size=64) | corrupted(ARP_SEEDS))
def test_arp(data: bytes) -> None:
    only(l2_errors.MalformedFrame, lambda: arp.decode(data))


@fuzz
@given(st.binary(max_size=200) | corrupted(NDP_SEEDS))
def test_ndp(data: bytes) -> None:
    only(l2_errors.MalformedFrame, lambda: ndp.decode(data))


# --- BGP messages and path attributes ----------------------------------------------------------

FOUR = attributes.Context(True)
TWO = attributes.Context(False)
UPDATE = messages.Update(
    path_attributes=(
        attributes.MpReachNlri(
            families.Family.IPV6_UNICAST,
            (IPv6Address("2001:db8::1"),),
            (ip_network("2001:db8:1::/48"),),
        ),
        attributes.Origin(),
        attributes.AsPath.sequence(65001),
        attributes.Communities((attributes.Community(1),)),
        attributes.LargeCommunities((attributes.LargeCommunity(65000, 1, 2),)),
    ),
    withdrawn=(ip_network("192.0.2.0/24"),),
)
BGP_SEEDS = [
    messages.encode(UPDATE, FOUR),
    messages.encode(UPDATE, TWO),
    messages.encode(messages.Keepalive()),
    messages.encode(
        messages.Notification.cease(errors.CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, "bye")
    ),
    messages.encode(messages.RouteRefresh(1, 1)),
    messages.encode(messages.end_of_rib(families.Family.IPV4_UNICAST)),
]
ATTRIBUTE_SEEDS = [
    b"".join(attributes.pack(a, ctx) for a in UPDATE.path_attributes) for ctx in (FOUR, TWO)
]


@fuzz
@given(st.binary(max_size=300) | corrupted(BGP_SEEDS, keep_prefix=16), st.booleans())
def test_bgp_messages(data: bytes, four_octet: bool) -> None:
    only(errors.BgpError, lambda: messages.decode(data, FOUR if four_octet else TWO))


@fuzz
@given(st.binary(max_size=300) | corrupted(ATTRIBUTE_SEEDS), st.booleans())
def test_bgp_path_attributes(data: bytes, four_octet: bool) -> None:
    only(errors.BgpError, lambda: attributes.unpack_all(data, FOUR if four_octet else TWO))


def test_the_bgp_seeds_decode() -> None:
    for seed in BGP_SEEDS:
        messages.decode(seed, FOUR if seed is not BGP_SEEDS[1] else TWO)


# --- BFD control packets -------------------------------------------------------------------------

BFD_SEEDS = [
    bfd.encode(
        bfd.ControlPacket(
            state=bfd.State.UP,
            diagnostic=0,
            detect_mult=3,
            my_discriminator=1,
            your_discriminator=2,
            desired_min_tx=300_000,
            required_min_rx=300_000,
            poll=True,
        )
    ),
    bfd.encode(
        bfd.ControlPacket(
            state=bfd.State.DOWN,
            diagnostic=1,
            detect_mult=5,
            my_discriminator=7,
            your_discriminator=0,
            desired_min_tx=1_000_000,
            required_min_rx=50_000,
        )
    ),
]


@fuzz
@given(st.binary(max_size=80) | corrupted(BFD_SEEDS))
def test_bfd(data: bytes) -> None:
    only(bfd.BfdError, lambda: bfd.decode(data))


# --- membership: signed packets (a holder of the key may send anything) -------------------------

KEY = b"fuzz-key-0123456789abcdef"
NODE = election.NodeName("node-a")
NODE_B = election.NodeName("node-b")
MEMBER_SEEDS = [
    wire.encode(wire.Packet(NODE, NODE_B, 7, wire.Ping(1, election.NodeName("node-b"))), KEY),
    wire.encode(
        wire.Packet(
            NODE,
            NODE_B,
            8,
            wire.PingReq(
                2,
                election.NodeName("node-c"),
                member_model.Endpoint(IPv4Address("198.18.0.13"), 7946),
            ),
        ),
        KEY,
    ),
    wire.encode(wire.Packet(NODE, None, 9, wire.Gossip()), KEY),
]


def _resigned(data: bytes) -> bytes:
    """A corrupted packet signed again with the key: the decoder must survive its body."""
    body = data[: -wire.TAG_SIZE] if len(data) > wire.TAG_SIZE else data
    return body + hmac.new(KEY, body, hashlib.sha256).digest()[: wire.TAG_SIZE]


@fuzz
@given(
    st.binary(max_size=300)
    | corrupted(MEMBER_SEEDS)
    | corrupted(MEMBER_SEEDS, keep_prefix=4).map(_resigned)
)
def test_membership_packets(data: bytes) -> None:
    only(wire.PacketRejected, lambda: wire.decode(data, [KEY]))
