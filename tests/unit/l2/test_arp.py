from ipaddress import IPv4Address

import pytest

from ironlb.l2 import arp, errors, ethernet, frames

MAC = ethernet.MacAddress.parse("02:00:5e:10:00:01")
PEER = ethernet.MacAddress.parse("02:00:5e:10:00:02")
VIP = IPv4Address("198.18.0.10")
CLIENT = IPv4Address("198.18.0.99")


def _arp(frame: bytes) -> arp.Arp:
    message = frames.decode_frame(frame).message
    assert isinstance(message, arp.Arp)
    return message


def test_request_wire_layout() -> None:
    frame = frames.arp_request(MAC, CLIENT, VIP)
    assert len(frame) == ethernet.MIN_FRAME_SIZE
    assert frame[:6] == b"\xff" * 6
    assert frame[6:12] == MAC.packed
    assert frame[12:14] == b"\x08\x06"
    assert frame[14:22] == bytes.fromhex("0001 0800 06 04 0001")
    assert frame[22:42] == MAC.packed + CLIENT.packed + bytes(6) + VIP.packed
    assert frame[42:] == bytes(18)


def test_gratuitous_request_is_the_rfc5227_announcement() -> None:
    message = _arp(frames.gratuitous_arp_request(MAC, VIP))
    assert message == arp.Arp(arp.Operation.REQUEST, MAC, VIP, ethernet.ZERO, VIP)
    assert message.kind is arp.Kind.GRATUITOUS


def test_gratuitous_reply_has_target_mac_equal_sender_mac_as_linux_requires() -> None:
    message = _arp(frames.gratuitous_arp_reply(MAC, VIP))
    assert message == arp.Arp(arp.Operation.REPLY, MAC, VIP, MAC, VIP)
    assert message.kind is arp.Kind.GRATUITOUS


def test_probe_has_unspecified_sender() -> None:
    message = _arp(frames.arp_probe(MAC, VIP))
    assert message == arp.Arp(arp.Operation.REQUEST, MAC, arp.UNSPECIFIED, ethernet.ZERO, VIP)
    assert message.kind is arp.Kind.PROBE


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (arp.Arp(arp.Operation.REQUEST, PEER, CLIENT, ethernet.ZERO, VIP), arp.Kind.REQUEST),
        (arp.Arp(arp.Operation.REPLY, PEER, VIP, MAC, CLIENT), arp.Kind.REPLY),
        (arp.Arp(arp.Operation.REPLY, PEER, VIP, ethernet.BROADCAST, VIP), arp.Kind.GRATUITOUS),
        (arp.Arp(arp.Operation.REQUEST, PEER, arp.UNSPECIFIED, ethernet.ZERO, VIP), arp.Kind.PROBE),
    ],
)
def test_classification(message: arp.Arp, kind: arp.Kind) -> None:
    assert message.kind is kind


def test_reply_goes_unicast_to_the_asker() -> None:
    request = frames.decode_frame(frames.arp_request(PEER, CLIENT, VIP))
    reply = frames.decode_frame(frames.arp_reply(request, MAC))
    assert reply.header == ethernet.Header(destination=PEER, source=MAC)
    assert reply.message == arp.Arp(arp.Operation.REPLY, MAC, VIP, PEER, CLIENT)


def test_reply_to_a_probe_answers_the_probing_mac() -> None:
    probe = frames.decode_frame(frames.arp_probe(PEER, VIP))
    reply = frames.decode_frame(frames.arp_reply(probe, MAC))
    assert reply.header.destination == PEER
    assert reply.message == arp.Arp(arp.Operation.REPLY, MAC, VIP, PEER, arp.UNSPECIFIED)


def test_reply_keeps_the_vlan_of_the_request() -> None:
    tag = ethernet.VlanTag(vid=100, priority=5)
    asked = arp.Arp(arp.Operation.REQUEST, PEER, CLIENT, ethernet.ZERO, VIP)
    request = frames.Frame(ethernet.Header(ethernet.BROADCAST, PEER, tag), asked)
    reply = frames.decode_frame(
        frames.arp_reply(frames.decode_frame(frames.encode_frame(request)), MAC)
    )
    assert reply.header.vlan == tag


def test_only_requests_are_answered() -> None:
    reply = frames.decode_frame(frames.gratuitous_arp_reply(PEER, VIP))
    with pytest.raises(ValueError, match="not an ARP request"):
        frames.arp_reply(reply, MAC)


@pytest.mark.parametrize(
    ("offset", "value", "reason"),
    [
        (14, b"\x00\x06", errors.Reason.ARP_HARDWARE),  # IEEE 802 hardware type
        (18, b"\x08", errors.Reason.ARP_HARDWARE),  # hardware length 8
        (16, b"\x86\xdd", errors.Reason.ARP_PROTOCOL),
        (19, b"\x10", errors.Reason.ARP_PROTOCOL),
        (20, b"\x00\x03", errors.Reason.ARP_OPERATION),  # RARP request
    ],
)
def test_rejects_other_formats(offset: int, value: bytes, reason: errors.Reason) -> None:
    frame = bytearray(frames.arp_request(PEER, CLIENT, VIP))
    frame[offset : offset + len(value)] = value
    with pytest.raises(errors.MalformedFrame) as caught:
        frames.decode_frame(bytes(frame))
    assert caught.value.reason is reason


def test_rejects_truncated_packet() -> None:
    frame = frames.arp_request(PEER, CLIENT, VIP)[: ethernet.HEADER_SIZE + arp.PACKET_SIZE - 1]
    with pytest.raises(errors.MalformedFrame) as caught:
        frames.decode_frame(frame)
    assert caught.value.reason is errors.Reason.TRUNCATED
