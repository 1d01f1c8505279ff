from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.l2 import arp, errors, ethernet, frames, ndp

macs = st.binary(min_size=6, max_size=6).map(ethernet.MacAddress)
vlans = st.none() | st.builds(
    ethernet.VlanTag,
    vid=st.integers(0, 0xFFF),
    priority=st.integers(0, 7),
    drop_eligible=st.booleans(),
)
headers = st.builds(ethernet.Header, destination=macs, source=macs, vlan=vlans)
ipv4 = st.ip_addresses(v=4).map(IPv4Address)
ipv6 = st.ip_addresses(v=6).map(IPv6Address)
unicast_ipv6 = ipv6.filter(lambda address: not (address.is_multicast or address.is_unspecified))

arps = st.builds(
    arp.Arp,
    operation=st.sampled_from(arp.Operation),
    sender_mac=macs,
    sender_ip=ipv4,
    target_mac=macs,
    target_ip=ipv4,
)
solicitations = st.builds(
    ndp.NeighborSolicitation,
    source=unicast_ipv6,
    destination=ipv6,
    target=unicast_ipv6,
    source_link_layer=st.none() | macs,
) | st.builds(
    lambda target: ndp.NeighborSolicitation(
        ndp.UNSPECIFIED, ndp.solicited_node_multicast(target), target
    ),
    unicast_ipv6,
)
advertisements = st.builds(
    ndp.NeighborAdvertisement,
    source=unicast_ipv6,
    destination=unicast_ipv6,
    target=unicast_ipv6,
    target_link_layer=st.none() | macs,
    router=st.booleans(),
    solicited=st.booleans(),
    override=st.booleans(),
)
valid_frames = st.builds(
    frames.Frame, header=headers, message=arps | solicitations | advertisements
)


def _outcome(data: bytes) -> errors.Reason | None:
    """None when `data` decodes; any exception but MalformedFrame escapes and fails the test."""
    try:
        frames.decode_frame(data)
    except errors.MalformedFrame as error:
        return error.reason
    return None


@given(valid_frames)
def test_round_trip(frame: frames.Frame) -> None:
    assert frames.decode_frame(frames.encode_frame(frame)) == frame


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_malformed_frame(data: bytes) -> None:
    assert _outcome(data) in (None, *errors.Reason)


@given(valid_frames, st.data())
def test_mutated_frames_raise_only_malformed_frame(
    frame: frames.Frame, data: st.DataObject
) -> None:
    wire = bytearray(frames.encode_frame(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        position = data.draw(st.integers(0, max(len(wire) - 1, 0)))
        if action == "flip" and wire:
            wire[position] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del wire[position:]
        else:
            wire[position:position] = data.draw(st.binary(min_size=1, max_size=9))
    assert _outcome(bytes(wire)) in (None, *errors.Reason)


def test_vlan_tag_round_trip_on_the_wire() -> None:
    header = ethernet.Header(
        ethernet.BROADCAST,
        ethernet.ZERO,
        ethernet.VlanTag(vid=0xABC, priority=6, drop_eligible=True),
    )
    wire = ethernet.encode(header, ethernet.EtherType.ARP, b"")
    assert wire[12:18] == bytes.fromhex("8100 dabc 0806")
    assert ethernet.decode(wire)[0] == header


def test_other_ethertypes_and_double_tags_are_unsupported() -> None:
    header = ethernet.Header(ethernet.BROADCAST, ethernet.ZERO, ethernet.VlanTag(vid=10))
    for wire in (
        ethernet.encode(
            ethernet.Header(ethernet.BROADCAST, ethernet.ZERO), ethernet.EtherType.IPV4, b""
        ),
        ethernet.encode(header, ethernet.EtherType.VLAN, b"\x00\x0a\x08\x06" + bytes(28)),
    ):
        with pytest.raises(errors.MalformedFrame) as caught:
            frames.decode_frame(wire)
        assert caught.value.reason is errors.Reason.UNSUPPORTED_ETHERTYPE


@pytest.mark.parametrize("size", [0, 13, 16])
def test_truncated_ethernet_header(size: int) -> None:
    wire = ethernet.encode(
        ethernet.Header(ethernet.BROADCAST, ethernet.ZERO, ethernet.VlanTag(1)),
        ethernet.EtherType.ARP,
        b"",
    )
    with pytest.raises(errors.MalformedFrame) as caught:
        frames.decode_frame(wire[:size])
    assert caught.value.reason is errors.Reason.TRUNCATED


def test_mac_address_text_form() -> None:
    mac = ethernet.MacAddress.parse("02:00:5E:10:00:01")
    assert str(mac) == "02:00:5e:10:00:01"
    for bad in ("02:00:5e:10:00", "02-00-5e-10-00-01", "02:00:5e:10:00:1"):
        with pytest.raises(ValueError, match="not a MAC"):
            ethernet.MacAddress.parse(bad)
    with pytest.raises(ValueError, match="6 bytes"):
        ethernet.MacAddress(b"\x00")


def test_vlan_tag_range_is_checked() -> None:
    with pytest.raises(ValueError, match=r"802\.1Q"):
        ethernet.VlanTag(vid=4096)
