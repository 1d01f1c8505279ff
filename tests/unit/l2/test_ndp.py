import struct
from dataclasses import replace
from ipaddress import IPv6Address

import pytest

from ironlb.l2 import errors, ethernet, frames, ndp

MAC = ethernet.MacAddress.parse("02:00:5e:10:00:01")
PEER = ethernet.MacAddress.parse("02:00:5e:10:00:02")
VIP = IPv6Address("2001:db8::10")
CLIENT = IPv6Address("2001:db8::99")

ND_OFFSET = ethernet.HEADER_SIZE + ndp.HEADER_SIZE


SOLICITATION = ndp.NeighborSolicitation(
    source=CLIENT,
    destination=ndp.solicited_node_multicast(VIP),
    target=VIP,
    source_link_layer=PEER,
)


def _frame(message: ndp.Message) -> bytes:
    header = ethernet.Header(ndp.multicast_mac(ndp.solicited_node_multicast(VIP)), PEER)
    return frames.encode_frame(frames.Frame(header, message))


def _with_checksum(frame: bytearray) -> bytes:
    """Recompute the ICMPv6 checksum of a hand-edited frame, so only the intended fault shows."""
    frame[ND_OFFSET + 2 : ND_OFFSET + 4] = b"\0\0"
    source = IPv6Address(bytes(frame[22:38]))
    destination = IPv6Address(bytes(frame[38:54]))
    body = bytes(frame[ND_OFFSET:])
    pseudo = source.packed + destination.packed + struct.pack("!I3xB", len(body), 58)
    data = pseudo + body + b"\0" * (len(body) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    frame[ND_OFFSET + 2 : ND_OFFSET + 4] = (0xFFFF ^ total).to_bytes(2, "big")
    return bytes(frame)


def _reason(frame: bytes) -> errors.Reason:
    with pytest.raises(errors.MalformedFrame) as caught:
        frames.decode_frame(frame)
    return caught.value.reason


def test_checksum_matches_a_wireshark_verified_capture() -> None:
    # A solicited NA from a QEMU guest whose checksum Wireshark reports as 0x9638 [correct].
    advertisement = ndp.NeighborAdvertisement(
        source=IPv6Address("2001:db8:2000:aff0::2"),
        destination=IPv6Address("2001:db8:2000:aff0::1"),
        target=IPv6Address("2001:db8:2000:aff0::2"),
        target_link_layer=ethernet.MacAddress.parse("52:54:00:12:34:02"),
        solicited=True,
        override=True,
    )
    packet = ndp.encode(advertisement)
    assert packet[ndp.HEADER_SIZE + 2 : ndp.HEADER_SIZE + 4] == b"\x96\x38"
    assert ndp.decode(packet) == advertisement


def test_solicited_node_multicast_and_its_mac() -> None:
    group = ndp.solicited_node_multicast(IPv6Address("2001:db8::abcd:12:3456"))
    assert group == IPv6Address("ff02::1:ff12:3456")
    assert str(ndp.multicast_mac(group)) == "33:33:ff:12:34:56"
    assert str(ndp.multicast_mac(ndp.ALL_NODES)) == "33:33:00:00:00:01"
    with pytest.raises(ValueError, match="not a multicast"):
        ndp.multicast_mac(VIP)


def test_unsolicited_advertisement_wire_form() -> None:
    frame = frames.unsolicited_neighbor_advertisement(MAC, VIP)
    assert frame[:14] == bytes.fromhex("333300000001") + MAC.packed + b"\x86\xdd"
    assert frame[14:22] == bytes.fromhex("60000000 0020 3a ff")  # 32-byte payload, hop limit 255
    assert frame[ND_OFFSET + 4] == 0x20  # override only
    assert frame[-8:] == b"\x02\x01" + MAC.packed  # target link-layer option
    decoded = frames.decode_frame(frame).message
    assert decoded == ndp.NeighborAdvertisement(
        source=VIP, destination=ndp.ALL_NODES, target=VIP, target_link_layer=MAC, override=True
    )


def test_duplicate_address_probe_wire_form() -> None:
    decoded = frames.decode_frame(frames.duplicate_address_probe(MAC, VIP))
    assert decoded.header.destination == ethernet.MacAddress.parse("33:33:ff:00:00:10")
    assert decoded.message == ndp.NeighborSolicitation(
        source=ndp.UNSPECIFIED, destination=IPv6Address("ff02::1:ff00:10"), target=VIP
    )
    assert isinstance(decoded.message, ndp.NeighborSolicitation)
    assert decoded.message.is_duplicate_address_detection


def test_answer_to_a_solicitation_is_solicited_and_unicast() -> None:
    request = frames.decode_frame(_frame(SOLICITATION))
    answer = frames.decode_frame(frames.neighbor_advertisement(request, MAC))
    assert answer.header == ethernet.Header(destination=PEER, source=MAC)
    assert answer.message == ndp.NeighborAdvertisement(
        source=VIP,
        destination=CLIENT,
        target=VIP,
        target_link_layer=MAC,
        solicited=True,
        override=True,
    )


def test_answer_without_source_link_layer_option_goes_to_the_frame_source() -> None:
    request = frames.decode_frame(_frame(replace(SOLICITATION, source_link_layer=None)))
    answer = frames.decode_frame(frames.neighbor_advertisement(request, MAC))
    assert answer.header.destination == PEER


def test_answer_to_dad_goes_to_all_nodes_unsolicited() -> None:
    request = frames.decode_frame(frames.duplicate_address_probe(PEER, VIP))
    answer = frames.decode_frame(frames.neighbor_advertisement(request, MAC))
    assert answer.header.destination == ndp.multicast_mac(ndp.ALL_NODES)
    assert answer.message == ndp.NeighborAdvertisement(
        source=VIP, destination=ndp.ALL_NODES, target=VIP, target_link_layer=MAC, override=True
    )


def test_only_solicitations_are_answered() -> None:
    advertisement = frames.decode_frame(frames.unsolicited_neighbor_advertisement(PEER, VIP))
    with pytest.raises(ValueError, match="not a neighbor solicitation"):
        frames.neighbor_advertisement(advertisement, MAC)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (replace(SOLICITATION, target=IPv6Address("ff02::1")), errors.Reason.ND_TARGET),
        (replace(SOLICITATION, source=ndp.UNSPECIFIED), errors.Reason.ND_DAD_FORM),
        (
            replace(SOLICITATION, source=ndp.UNSPECIFIED, source_link_layer=None, destination=VIP),
            errors.Reason.ND_DAD_FORM,
        ),
        (
            ndp.NeighborAdvertisement(CLIENT, ndp.ALL_NODES, CLIENT, PEER, solicited=True),
            errors.Reason.NA_SOLICITED_TO_MULTICAST,
        ),
    ],
)
def test_message_rules_refuse_to_encode_and_reject_on_decode(
    message: ndp.Message, reason: errors.Reason, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ndp.violation(message) is reason
    with pytest.raises(ValueError, match=reason.value):
        ndp.encode(message)
    with monkeypatch.context() as patched:
        patched.setattr(ndp, "violation", lambda message: None)
        packet = ndp.encode(message)  # what a peer that breaks the rule would send
    with pytest.raises(errors.MalformedFrame) as caught:
        ndp.decode(packet)
    assert caught.value.reason is reason


def test_hop_limit_must_be_255() -> None:
    frame = bytearray(_frame(SOLICITATION))
    frame[21] = 254  # one router hop: not from a neighbour
    assert _reason(bytes(frame)) is errors.Reason.HOP_LIMIT


def test_bad_checksum_is_rejected() -> None:
    frame = bytearray(_frame(SOLICITATION))
    frame[ND_OFFSET + 3] ^= 0x01
    assert _reason(bytes(frame)) is errors.Reason.CHECKSUM


def test_code_must_be_zero() -> None:
    frame = bytearray(_frame(SOLICITATION))
    frame[ND_OFFSET + 1] = 1
    assert _reason(_with_checksum(frame)) is errors.Reason.ICMPV6_CODE


@pytest.mark.parametrize(
    "options",
    [
        b"\x01\x00" + PEER.packed,  # length 0 would loop for ever: RFC 4861 says drop
        b"\x01\x02" + PEER.packed,  # claims 16 bytes, has 8
        b"\x01\x02" + PEER.packed + bytes(8),  # link-layer option of 16 bytes on Ethernet
        b"\x01",  # half an option header
    ],
    ids=["zero-length", "overrun", "wrong-lla-size", "half-header"],
)
def test_bad_options_are_rejected(options: bytes) -> None:
    frame = bytearray(_frame(SOLICITATION))
    frame[ND_OFFSET + 24 :] = options
    frame[18:20] = (24 + len(options)).to_bytes(2, "big")
    assert _reason(_with_checksum(frame)) is errors.Reason.ND_OPTION


def test_unknown_options_are_skipped_and_the_first_link_layer_option_wins() -> None:
    frame = bytearray(_frame(replace(SOLICITATION, source_link_layer=None)))
    options = b"\x0e\x01" + bytes(6) + b"\x01\x01" + PEER.packed + b"\x01\x01" + MAC.packed
    frame += options
    frame[18:20] = (24 + len(options)).to_bytes(2, "big")
    message = frames.decode_frame(_with_checksum(frame)).message
    assert isinstance(message, ndp.NeighborSolicitation)
    assert message.source_link_layer == PEER


def test_trailing_bytes_after_the_ipv6_payload_are_ignored() -> None:
    frame = _frame(SOLICITATION)
    assert frames.decode_frame(frame + bytes(20)).message == SOLICITATION


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (14, 0x40, errors.Reason.IPV6_VERSION),
        (20, 17, errors.Reason.UNSUPPORTED_NEXT_HEADER),  # UDP
        (20, 0, errors.Reason.UNSUPPORTED_NEXT_HEADER),  # hop-by-hop options header
        (ND_OFFSET, 128, errors.Reason.UNSUPPORTED_ICMPV6_TYPE),  # echo request
    ],
)
def test_other_ipv6_traffic_is_rejected(offset: int, value: int, reason: errors.Reason) -> None:
    frame = bytearray(_frame(SOLICITATION))
    frame[offset] = value
    assert _reason(bytes(frame)) is reason


def test_payload_length_beyond_the_frame_is_truncation() -> None:
    frame = _frame(SOLICITATION)
    assert _reason(frame[:-1]) is errors.Reason.TRUNCATED
    short = bytearray(frame[: ND_OFFSET + 20])
    short[18:20] = (20).to_bytes(2, "big")
    assert _reason(bytes(short)) is errors.Reason.TRUNCATED
