import contextlib
from ipaddress import IPv4Address, IPv6Address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.bgp import attributes, errors, families

FOUR = attributes.Context(four_octet_as=True)
TWO = attributes.Context(four_octet_as=False)
ORIGIN_IGP = bytes.fromhex("40010100")


def unpack(hex_attrs: str, ctx: attributes.Context = FOUR) -> attributes.Decoded:
    return attributes.unpack_all(bytes.fromhex(hex_attrs), ctx)


def update_error(subcode: errors.UpdateSubcode) -> str:
    return errors.describe(errors.ErrorCode.UPDATE_MESSAGE, subcode)


ROUND_TRIPS = [
    attributes.Origin(attributes.OriginType.INCOMPLETE),
    attributes.AsPath(),
    attributes.AsPath.sequence(65001, 4200000000),
    attributes.AsPath(
        (
            attributes.AsPathSegment(attributes.SegmentType.AS_SEQUENCE, (1, 2)),
            attributes.AsPathSegment(attributes.SegmentType.AS_SET, (3, 4)),
            attributes.AsPathSegment(attributes.SegmentType.AS_CONFED_SEQUENCE, (5,)),
            attributes.AsPathSegment(attributes.SegmentType.AS_CONFED_SET, (6,)),
        )
    ),
    attributes.As4Path(attributes.AsPath.sequence(4200000000).segments),
    attributes.NextHop(IPv4Address("192.0.2.1")),
    attributes.MultiExitDisc(0xFFFFFFFF),
    attributes.LocalPref(0),
    attributes.AtomicAggregate(),
    attributes.Aggregator(4200000000, IPv4Address("192.0.2.9")),
    attributes.As4Aggregator(4200000000, IPv4Address("192.0.2.9")),
    attributes.Communities((attributes.Community(1), attributes.Community.parse("no-export"))),
    attributes.LargeCommunities((attributes.LargeCommunity(4200000000, 1, 2),)),
    attributes.MpReachNlri(
        families.Family.IPV6_UNICAST,
        (IPv6Address("2001:db8::1"), IPv6Address("fe80::1")),
        (ip_network("2001:db8:1::/48"), ip_network("::/0")),
    ),
    attributes.MpReachNlri(
        families.Family.IPV4_UNICAST, (IPv4Address("192.0.2.1"),), (ip_network("198.51.100.0/24"),)
    ),
    attributes.MpUnreachNlri(families.Family.IPV6_UNICAST, (ip_network("2001:db8::1/128"),)),
    attributes.MpUnreachNlri(families.Family.IPV4_UNICAST),
    attributes.UnknownAttribute(99, 0xE0, b"opaque"),
]


@pytest.mark.parametrize("attribute", ROUND_TRIPS, ids=lambda a: type(a).__name__)
def test_every_attribute_round_trips(attribute: attributes.Attribute) -> None:
    decoded = attributes.unpack_all(attributes.pack(attribute, FOUR), FOUR)
    assert decoded == attributes.Decoded((attribute,), None)


def test_known_vector_ebgp_path() -> None:
    # ORIGIN IGP, AS_PATH sequence [65001, 4200000000] (4-octet), NEXT_HOP 192.0.2.1, MED 10,
    # COMMUNITIES 65001:100 NO_EXPORT, LARGE_COMMUNITY 65001:1:2.
    wire = (
        "40010100"
        "40020a0202"
        "0000fde9"
        "fa56ea00"
        "400304c0000201"
        "8004040000000a"
        "c00808fde90064ffffff01"
        "c0200c0000fde90000000100000002"
    )
    decoded = unpack(wire)
    assert decoded.malformed is None
    assert decoded.attributes == (
        attributes.Origin(attributes.OriginType.IGP),
        attributes.AsPath.sequence(65001, 4200000000),
        attributes.NextHop(IPv4Address("192.0.2.1")),
        attributes.MultiExitDisc(10),
        attributes.Communities(
            (attributes.Community.parse("65001:100"), attributes.Community.parse("no-export"))
        ),
        attributes.LargeCommunities((attributes.LargeCommunity.parse("large:65001:1:2"),)),
    )
    assert b"".join(attributes.pack(a, FOUR) for a in decoded.attributes).hex() == wire


def test_two_octet_as_path_uses_as_trans_and_as4_path_keeps_the_truth() -> None:
    path = attributes.AsPath.sequence(65001, 4200000000)
    assert attributes.pack(path, TWO).hex() == "4002060202fde95ba0"
    assert path.has_four_octet_asn
    assert attributes.pack(attributes.As4Path(path.segments), TWO).hex() == (
        "c0110a02020000fde9fa56ea00"
    )
    aggregator = attributes.Aggregator(4200000000, IPv4Address("192.0.2.9"))
    assert attributes.pack(aggregator, TWO).hex() == "c007065ba0c0000209"


def test_long_segments_are_split_at_255() -> None:
    path = attributes.AsPath.sequence(*range(1, 301))
    decoded = attributes.unpack_all(attributes.pack(path, FOUR), FOUR).attributes[0]
    assert isinstance(decoded, attributes.AsPath)
    assert [len(s.asns) for s in decoded.segments] == [255, 45]
    with pytest.raises(ValueError, match="at least one AS"):
        attributes.AsPathSegment(attributes.SegmentType.AS_SET, ())


def test_extended_length_is_used_exactly_when_needed() -> None:
    short = attributes.UnknownAttribute(99, 0xC0, b"x" * 255)
    long = attributes.UnknownAttribute(99, 0xC0, b"x" * 256)
    assert attributes.pack(short, FOUR)[:3] == bytes((0xC0, 99, 255))
    assert attributes.pack(long, FOUR)[:4] == bytes((0xD0, 99, 1, 0))
    # Received with Extended Length although short: decoded all the same.
    assert unpack("5001000100").attributes == (attributes.Origin(),)


def test_unknown_optional_attributes_are_kept_and_passed_on_as_partial() -> None:
    decoded = unpack("c06303abcdef80640100" + "40010100")
    transitive, non_transitive, _ = decoded.attributes
    assert transitive == attributes.UnknownAttribute(0x63, 0xC0, bytes.fromhex("abcdef"))
    assert transitive.propagated() == attributes.UnknownAttribute(0x63, 0xE0, b"\xab\xcd\xef")
    assert isinstance(non_transitive, attributes.UnknownAttribute)
    assert non_transitive.propagated() is None


def test_unknown_well_known_attribute_resets_the_session() -> None:
    with pytest.raises(errors.BgpError) as caught:
        unpack("40630100")
    assert caught.value.subcode == errors.UpdateSubcode.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE
    assert caught.value.data == bytes.fromhex("40630100")


@pytest.mark.parametrize(
    ("wire", "subcode"),
    [
        ("40010103", errors.UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE),
        ("4001020000", errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),
        ("4002020200", errors.UpdateSubcode.MALFORMED_AS_PATH),  # zero-length segment
        ("400206090100000001", errors.UpdateSubcode.MALFORMED_AS_PATH),  # unknown segment type
        ("40020302010000", errors.UpdateSubcode.MALFORMED_AS_PATH),  # overrun
        ("400303000000", errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),
        ("800403000000", errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),
        ("4005050000000000", errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),
        ("c00803000000", errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        ("c00800", errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        ("c0200400000001", errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR),
        ("80010100", errors.UpdateSubcode.ATTRIBUTE_FLAGS_ERROR),  # ORIGIN marked optional
        ("40080400000001", errors.UpdateSubcode.ATTRIBUTE_FLAGS_ERROR),  # COMMUNITIES well-known
        ("4001", errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # truncated header
        ("400105000000", errors.UpdateSubcode.ATTRIBUTE_LENGTH_ERROR),  # overruns the list
    ],
)
def test_rfc7606_treat_as_withdraw(wire: str, subcode: errors.UpdateSubcode) -> None:
    decoded = unpack(wire)
    assert decoded.malformed is not None
    assert decoded.malformed.subcode == subcode, str(decoded.malformed)


def test_treat_as_withdraw_keeps_the_offending_attribute_as_data() -> None:
    decoded = unpack("40010103")
    assert decoded.malformed is not None
    assert decoded.malformed.data == bytes.fromhex("40010103")
    assert str(decoded.malformed).startswith(
        update_error(errors.UpdateSubcode.INVALID_ORIGIN_ATTRIBUTE)
    )


@pytest.mark.parametrize(
    "wire",
    [
        "400601ff",  # ATOMIC_AGGREGATE with a value
        "c00705fde9c00002",  # AGGREGATOR of 5 bytes
        "c0120400000001",  # AS4_AGGREGATOR of 4 bytes
        "c0110402010000",  # AS4_PATH overrun
    ],
)
def test_rfc7606_attribute_discard(wire: str) -> None:
    assert unpack(wire + "40010100") == attributes.Decoded((attributes.Origin(),), None)


def test_aggregator_length_follows_the_as_width() -> None:
    assert unpack("c00706fde9c0000209", TWO).attributes == (
        attributes.Aggregator(65001, IPv4Address("192.0.2.9")),
    )
    assert unpack("c00706fde9c0000209", FOUR).attributes == ()


def test_repeated_attribute_keeps_the_first_but_repeated_mp_is_fatal() -> None:
    assert unpack("4001010040010102").attributes == (attributes.Origin(),)
    mp = attributes.pack(attributes.MpUnreachNlri(families.Family.IPV6_UNICAST), FOUR).hex()
    with pytest.raises(errors.BgpError) as caught:
        unpack(mp + mp)
    assert caught.value.subcode == errors.UpdateSubcode.MALFORMED_ATTRIBUTE_LIST


@pytest.mark.parametrize(
    "value",
    [
        "0002",  # no SAFI
        "000201",  # no next-hop length
        "00020104c000020100",  # IPv4-sized next hop for IPv6
        "0002011020010db8000000000000000000000001",  # next hop without reserved octet
        "0002011020010db80000000000000000000000010081",  # prefix longer than 128
        "0002011020010db800000000000000000000000100402001",  # truncated prefix
    ],
)
def test_malformed_mp_reach_resets_the_session(value: str) -> None:
    wire = f"800e{len(value) // 2:02x}{value}"
    with pytest.raises(errors.BgpError) as caught:
        unpack(wire)
    assert caught.value.code == errors.ErrorCode.UPDATE_MESSAGE
    assert caught.value.subcode == errors.UpdateSubcode.OPTIONAL_ATTRIBUTE_ERROR


def test_mp_attributes_of_other_families_are_kept_opaque() -> None:
    evpn = "001946040000000000"  # L2VPN EVPN, a family ironlb does not speak
    (attribute,) = unpack(f"800e{len(evpn) // 2:02x}{evpn}").attributes
    assert attribute == attributes.UnknownAttribute(14, 0x80, bytes.fromhex(evpn))


def test_host_bits_are_ignored_on_receipt() -> None:
    # 198.51.101.0/23 on the wire: the set host bit is masked off.
    (reach,) = unpack("800e0d00010104c00002010017c63365").attributes
    assert isinstance(reach, attributes.MpReachNlri)
    assert reach.nlri == (ip_network("198.51.100.0/23"),)


class TestCommunities:
    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("65000:100", 65000 << 16 | 100),
            ("0:0", 0),
            ("65535:65535", 0xFFFFFFFF),
            ("no-export", 0xFFFFFF01),
            ("NO-ADVERTISE", 0xFFFFFF02),
            ("no-export-subconfed", 0xFFFFFF03),
            ("no-peer", 0xFFFFFF04),
            ("graceful-shutdown", 0xFFFF0000),
            ("blackhole", 0xFFFF029A),
        ],
    )
    def test_parse_and_print(self, text: str, value: int) -> None:
        community = attributes.Community.parse(text)
        assert community == attributes.Community(value)
        assert attributes.Community.parse(str(community)) == community
        assert attributes.Community.from_wire(community.pack()) == community

    @pytest.mark.parametrize(
        "text", ["65536:1", "1:65536", "1", "a:b", "1:2:3", ":1", "-1:1", "\uff11:2"]
    )
    def test_parse_rejects_with_a_clear_message(self, text: str) -> None:
        with pytest.raises(ValueError, match="invalid community"):
            attributes.Community.parse(text)

    def test_large(self) -> None:
        large = attributes.LargeCommunity.parse("large:4200000000:1:2")
        assert large == attributes.LargeCommunity(4200000000, 1, 2)
        assert str(large) == "large:4200000000:1:2"
        assert attributes.LargeCommunity.from_wire(large.pack()) == large
        for bad in ["1:2:3", "large:1:2", "large:4294967296:0:0", "big:1:2:3"]:
            with pytest.raises(ValueError, match="invalid large community"):
                attributes.LargeCommunity.parse(bad)

    def test_parse_community_dispatches_like_a_bgp_advertisement(self) -> None:
        assert attributes.parse_community("large:1:2:3") == attributes.LargeCommunity(1, 2, 3)
        assert attributes.parse_community("65000:1") == attributes.Community(65000 << 16 | 1)


@given(st.binary(max_size=300), st.booleans())
def test_unpack_all_raises_nothing_but_bgp_errors(data: bytes, four_octet: bool) -> None:
    with contextlib.suppress(errors.BgpError):
        attributes.unpack_all(data, attributes.Context(four_octet))
