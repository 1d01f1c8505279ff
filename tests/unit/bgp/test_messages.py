import contextlib
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ironlb.bgp import attributes, capabilities, errors, families, messages

FOUR = attributes.Context(four_octet_as=True)
TWO = attributes.Context(four_octet_as=False)


def frame(body_hex: str, kind: int) -> bytes:
    body = bytes.fromhex(body_hex)
    return messages.MARKER + struct.pack("!HB", 19 + len(body), kind) + body


def raises(data: bytes, ctx: attributes.Context = FOUR) -> errors.BgpError:
    with pytest.raises(errors.BgpError) as caught:
        messages.decode(data, ctx)
    return caught.value


# An FRR 8.4 OPEN as seen on the wire (AS 65001, hold 180, router id 192.0.2.254): every
# capability in its own optional parameter: MP IPv4 and IPv6 unicast, route refresh (old 128 and
# new 2), enhanced route refresh, 4-octet AS, ADD-PATH receive, FQDN "router", graceful restart
# helper (N bit, 120 s, no families).
FRR_OPEN = (
    "ffffffffffffffffffffffffffffffff"
    "005b"
    "01"
    "04"
    "fde9"
    "00b4"
    "c00002fe"
    "3e"
    "0206"
    "0104"
    "0001"
    "00"
    "01"
    "0206"
    "0104"
    "0002"
    "00"
    "01"
    "0202"
    "8000"
    "0202"
    "0200"
    "0202"
    "4600"
    "0206"
    "4104"
    "0000fde9"
    "0206"
    "4504"
    "0001"
    "01"
    "01"
    "020a"
    "4908"
    "06"
    "726f75746572"
    "00"
    "0204"
    "4002"
    "4078"
)


def test_frr_open_vector() -> None:
    data = bytes.fromhex(FRR_OPEN)
    message = messages.decode(data)
    assert message == messages.Open(
        my_as=65001,
        hold_time=180,
        router_id=IPv4Address("192.0.2.254"),
        capabilities=(
            capabilities.Multiprotocol(1, 1),
            capabilities.Multiprotocol(2, 1),
            capabilities.UnknownCapability(128, b""),
            capabilities.RouteRefresh(),
            capabilities.UnknownCapability(70, b""),
            capabilities.FourOctetAs(65001),
            capabilities.UnknownCapability(69, bytes.fromhex("00010101")),
            capabilities.UnknownCapability(73, b"\x06router\x00"),
            capabilities.GracefulRestart(120, restarting=False, notification=True),
        ),
    )
    assert messages.encode(message) == data


def test_open_with_four_octet_as_and_all_our_capabilities() -> None:
    message = messages.Open(
        my_as=capabilities.AS_TRANS,
        hold_time=90,
        router_id=IPv4Address("192.0.2.1"),
        capabilities=(
            capabilities.Multiprotocol(2, 1),
            capabilities.RouteRefresh(),
            capabilities.FourOctetAs(4200000000),
            capabilities.GracefulRestart(
                300,
                restarting=True,
                families=(
                    capabilities.GracefulRestartFamily(1, 1, forwarding_preserved=True),
                    capabilities.GracefulRestartFamily(2, 1, forwarding_preserved=False),
                ),
            ),
        ),
    )
    data = messages.encode(message)
    assert data.hex() == (
        "ffffffffffffffffffffffffffffffff"
        "003f"
        "01"
        "04"
        "5ba0"
        "005a"
        "c0000201"
        "22"
        "0206"
        "0104"
        "0002"
        "00"
        "01"
        "0202"
        "0200"
        "0206"
        "4104"
        "fa56ea00"
        "020c"
        "400a"
        "812c"
        "0001"
        "01"
        "80"
        "0002"
        "01"
        "00"
    )
    decoded = messages.decode(data)
    assert decoded == message
    assert isinstance(decoded, messages.Open)
    assert decoded.asn == 4200000000


def test_open_without_four_octet_capability_uses_my_as() -> None:
    message = messages.Open(65001, 90, IPv4Address("192.0.2.1"))
    assert message.asn == 65001
    assert message.capability(capabilities.FourOctetAs) is None


def test_open_with_many_capabilities_uses_rfc9072_extended_parameters() -> None:
    many = tuple(capabilities.UnknownCapability(200, bytes(40)) for _ in range(8))
    message = messages.Open(65001, 90, IPv4Address("192.0.2.1"), many)
    data = messages.encode(message)
    assert data[28:30] == b"\xff\xff"
    assert messages.decode(data) == message


@pytest.mark.parametrize(
    ("body", "subcode"),
    [
        ("03fde900b4c00002fe00", errors.OpenSubcode.UNSUPPORTED_VERSION_NUMBER),
        ("04fde900b4c00002fe0401020000", errors.OpenSubcode.UNSUPPORTED_OPTIONAL_PARAMETER),
        ("04fde900b4c00002fe05020341", errors.OpenSubcode.UNSPECIFIC),  # overrun
        ("04fde900b4c00002fe0302034100"[:-2], errors.OpenSubcode.UNSPECIFIC),
        ("04fde900b4c00002fe0402024104", errors.OpenSubcode.UNSPECIFIC),  # capability overrun
        ("04fde900b4c00002fe06020441020000", errors.OpenSubcode.UNSPECIFIC),  # short 4-octet AS
        ("04fde900b4c00002fe0402020201", errors.OpenSubcode.UNSPECIFIC),  # RR with a value
        ("04fde900b4c00002fe0502034001", errors.OpenSubcode.UNSPECIFIC),  # short GR
        ("04fde900b4c00002fe05020301020001", errors.OpenSubcode.UNSPECIFIC),  # short MP
        ("04fde900b4c00002feffff", errors.OpenSubcode.UNSPECIFIC),  # truncated RFC 9072
    ],
)
def test_open_errors(body: str, subcode: errors.OpenSubcode) -> None:
    error = raises(frame(body, messages.MessageType.OPEN))
    assert (error.code, error.subcode) == (errors.ErrorCode.OPEN_MESSAGE, subcode)


def test_unsupported_version_tells_the_version_we_speak() -> None:
    assert raises(frame("03fde900b4c00002fe00", 1)).data == b"\x00\x04"


def test_ipv4_update_vector() -> None:
    data = bytes.fromhex(
        "ffffffffffffffffffffffffffffffff"
        "0034"
        "02"
        "0000"
        "0014"
        "40010100"
        "4002060201"
        "0000fde9"
        "400304c0000201"
        "18c63364"
        "20cb007107"
    )
    message = messages.decode(data)
    assert message == messages.Update(
        path_attributes=(
            attributes.Origin(),
            attributes.AsPath.sequence(65001),
            attributes.NextHop(IPv4Address("192.0.2.1")),
        ),
        nlri=(ip_network("198.51.100.0/24"), ip_network("203.0.113.7/32")),
    )
    assert messages.encode(message) == data


def test_ipv6_update_vector_with_link_local_next_hop() -> None:
    data = bytes.fromhex(
        "ffffffffffffffffffffffffffffffff"
        "0055"
        "02"
        "0000"
        "003e"
        "800e2e"
        "0002"
        "01"
        "20"
        "20010db8000000000000000000000001"
        "fe800000000000000000000000000001"
        "00"
        "40"
        "20010db800010000"
        "40010100"
        "4002060201"
        "0000fde9"
    )
    message = messages.decode(data)
    assert message == messages.Update(
        path_attributes=(
            attributes.MpReachNlri(
                families.Family.IPV6_UNICAST,
                (IPv6Address("2001:db8::1"), IPv6Address("fe80::1")),
                (ip_network("2001:db8:1::/64"),),
            ),
            attributes.Origin(),
            attributes.AsPath.sequence(65001),
        )
    )
    assert isinstance(message, messages.Update)
    assert message.malformed is None
    assert messages.encode(message) == data


def test_end_of_rib_markers() -> None:
    ipv4, ipv6 = (messages.end_of_rib(f) for f in families.Family)
    assert messages.encode(ipv4).hex() == "ff" * 16 + "00170200000000"
    assert messages.encode(ipv6).hex() == "ff" * 16 + "001d0200000006800f03000201"
    assert ipv4.end_of_rib() is families.Family.IPV4_UNICAST
    assert ipv6.end_of_rib() is families.Family.IPV6_UNICAST
    withdrawal = messages.Update(withdrawn=(ip_network("192.0.2.0/24"),))
    assert withdrawal.end_of_rib() is None
    with_origin = messages.Update(path_attributes=(attributes.Origin(),))
    assert with_origin.end_of_rib() is None


def test_missing_well_known_attribute_is_treat_as_withdraw() -> None:
    update = messages.Update(
        path_attributes=(attributes.Origin(), attributes.AsPath()),
        nlri=(ip_network("198.51.100.0/24"),),
    )
    decoded = messages.decode(messages.encode(update))
    assert isinstance(decoded, messages.Update)
    assert decoded.malformed is not None
    assert decoded.malformed.subcode == errors.UpdateSubcode.MISSING_WELL_KNOWN_ATTRIBUTE
    assert decoded.malformed.data == bytes((attributes.AttrType.NEXT_HOP,))
    # MP_REACH_NLRI alone needs ORIGIN and AS_PATH but no NEXT_HOP.
    reach = attributes.MpReachNlri(
        families.Family.IPV6_UNICAST, (IPv6Address("2001:db8::1"),), (ip_network("2001:db8::/32"),)
    )
    ok = messages.Update(path_attributes=(reach, attributes.Origin(), attributes.AsPath()))
    decoded = messages.decode(messages.encode(ok))
    assert isinstance(decoded, messages.Update)
    assert decoded.malformed is None


@pytest.mark.parametrize(
    ("body", "subcode"),
    [
        ("00050000", errors.UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),
        ("0000000940010100", errors.UpdateSubcode.MALFORMED_ATTRIBUTE_LIST),
        ("000221c00000", errors.UpdateSubcode.INVALID_NETWORK_FIELD),  # withdrawn /33
        ("0000000018c633", errors.UpdateSubcode.INVALID_NETWORK_FIELD),  # truncated NLRI
    ],
)
def test_update_errors(body: str, subcode: errors.UpdateSubcode) -> None:
    error = raises(frame(body, messages.MessageType.UPDATE))
    assert (error.code, error.subcode) == (errors.ErrorCode.UPDATE_MESSAGE, subcode)


def test_notification_and_shutdown_communication() -> None:
    plain = messages.Notification(errors.ErrorCode.HOLD_TIMER_EXPIRED, 0)
    assert messages.encode(plain).hex() == "ff" * 16 + "0015030400"
    assert str(plain) == "HOLD_TIMER_EXPIRED/0"
    shutdown = messages.Notification.cease(
        errors.CeaseSubcode.ADMINISTRATIVE_SHUTDOWN, "node drained ✓"
    )
    assert shutdown.data == bytes((len("node drained ✓".encode()),)) + "node drained ✓".encode()
    assert messages.decode(messages.encode(shutdown)) == shutdown
    assert shutdown.communication == "node drained ✓"
    assert str(shutdown) == "CEASE/ADMINISTRATIVE_SHUTDOWN (node drained ✓)"
    long = messages.Notification.cease(errors.CeaseSubcode.ADMINISTRATIVE_RESET, "é" * 200)
    assert long.data[0] == 254
    assert long.communication == "é" * 127
    collision = messages.Notification.cease(
        errors.CeaseSubcode.CONNECTION_COLLISION_RESOLUTION, "ignored"
    )
    assert collision.data == b""
    assert collision.communication is None
    assert messages.Notification(6, 2, b"\x05abc").communication is None
    assert str(messages.Notification(42, 7)) == "code 42/subcode 7"
    assert str(messages.Notification(6, 99)) == "CEASE/99"


def test_keepalive_and_route_refresh() -> None:
    assert messages.encode(messages.KEEPALIVE) == messages.MARKER + b"\x00\x13\x04"
    assert messages.decode(messages.MARKER + b"\x00\x13\x04") == messages.Keepalive()
    refresh = messages.RouteRefresh(afi=2, safi=1)
    assert messages.encode(refresh).hex() == "ff" * 16 + "00170500020001"
    assert messages.decode(messages.encode(refresh)) == refresh


def test_route_refresh_of_the_wrong_length_is_a_route_refresh_error() -> None:
    data = frame("0001000100", messages.MessageType.ROUTE_REFRESH)
    error = raises(data)
    assert (error.code, error.subcode) == (
        errors.ErrorCode.ROUTE_REFRESH_MESSAGE,
        errors.RouteRefreshSubcode.INVALID_MESSAGE_LENGTH,
    )
    assert error.data == data


@pytest.mark.parametrize(
    ("data", "subcode", "error_data"),
    [
        (
            b"\xfe" + b"\xff" * 15 + b"\x00\x13\x04",
            errors.HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED,
            b"",
        ),
        (messages.MARKER + b"\x00\x12\x04", errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x12"),
        (messages.MARKER + b"\x10\x01\x04", errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x10\x01"),
        (messages.MARKER + b"\x00\x13\x09", errors.HeaderSubcode.BAD_MESSAGE_TYPE, b"\x09"),
        (
            messages.MARKER + b"\x00\x14\x04\x00",
            errors.HeaderSubcode.BAD_MESSAGE_LENGTH,
            b"\x00\x14",
        ),
        (frame("04", 1), errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x14"),  # OPEN < 29
        (frame("0000", 2), errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x15"),  # UPDATE < 23
        (frame("06", 3), errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x14"),  # NOTIFICATION < 21
        (messages.MARKER + b"\x00\x15\x04", errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b"\x00\x15"),
        (messages.MARKER[:10], errors.HeaderSubcode.BAD_MESSAGE_LENGTH, b""),
    ],
)
def test_header_errors(data: bytes, subcode: errors.HeaderSubcode, error_data: bytes) -> None:
    error = raises(data)
    assert (error.code, error.subcode, error.data) == (
        errors.ErrorCode.MESSAGE_HEADER,
        subcode,
        error_data,
    )


def test_encode_refuses_messages_over_4096_bytes() -> None:
    big = messages.Update(path_attributes=(attributes.UnknownAttribute(99, 0xC0, bytes(4100)),))
    with pytest.raises(ValueError, match="exceeds 4096"):
        messages.encode(big)


class TestFrameReader:
    STREAM = [
        messages.encode(messages.KEEPALIVE),
        bytes.fromhex(FRR_OPEN),
        messages.encode(messages.end_of_rib(families.Family.IPV6_UNICAST)),
    ]

    @given(st.lists(st.integers(min_value=1, max_value=40), max_size=20))
    def test_any_chunking_yields_the_same_frames(self, cuts: list[int]) -> None:
        stream = b"".join(self.STREAM)
        reader = messages.FrameReader()
        frames = []
        offset = 0
        for size in [*cuts, len(stream)]:
            reader.receive_data(stream[offset : offset + size])
            offset += size
            while (f := reader.next_frame()) is not None:
                frames.append(f)
        assert frames == self.STREAM
        assert reader.buffered == 0

    def test_bad_header_raises_as_soon_as_it_is_complete(self) -> None:
        reader = messages.FrameReader()
        reader.receive_data(b"\x00" * 18)
        assert reader.next_frame() is None
        reader.receive_data(b"\x00")
        with pytest.raises(errors.BgpError) as caught:
            reader.next_frame()
        assert caught.value.subcode == errors.HeaderSubcode.CONNECTION_NOT_SYNCHRONIZED

    def test_hard_cap_on_buffered_bytes(self) -> None:
        reader = messages.FrameReader(max_buffered=100)
        reader.receive_data(bytes(60))
        with pytest.raises(BufferError, match="100 bytes"):
            reader.receive_data(bytes(41))
        reader.clear()
        reader.receive_data(bytes(100))
        assert reader.buffered == 100


# -- property-based ----------------------------------------------------------------------------


@given(
    st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda length, kind, body: messages.MARKER + struct.pack("!HB", length, kind) + body,
            st.one_of(st.integers(0, 0xFFFF), st.just(-1)).map(lambda n: n & 0xFFFF),
            st.integers(0, 7),
            st.binary(max_size=200),
        ),
        st.builds(
            lambda kind, body: messages.MARKER + struct.pack("!HB", 19 + len(body), kind) + body,
            st.integers(1, 5),
            st.binary(max_size=300),
        ),
    ),
    st.booleans(),
)
def test_decode_raises_nothing_but_bgp_errors(data: bytes, four_octet: bool) -> None:
    with contextlib.suppress(errors.BgpError):
        messages.decode(data, attributes.Context(four_octet))


@given(st.data())
def test_decode_of_a_corrupted_message_raises_nothing_but_bgp_errors(data: st.DataObject) -> None:
    original = bytearray(bytes.fromhex(FRR_OPEN) if data.draw(st.booleans()) else UPDATE_SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        original[data.draw(st.integers(19, len(original) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(errors.BgpError):
        messages.decode(bytes(original))


def ipv4_prefixes() -> st.SearchStrategy[IPv4Network]:
    return st.builds(
        lambda address, length: IPv4Network((address >> (32 - length) << (32 - length), length)),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    )


def ipv6_prefixes() -> st.SearchStrategy[IPv6Network]:
    return st.builds(
        lambda address, length: IPv6Network((address >> (128 - length) << (128 - length), length)),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    )


def path_attribute_sets(four_octet: bool) -> st.SearchStrategy[list[attributes.Attribute]]:
    asn = st.integers(1, 2**32 - 1 if four_octet else 0xFFFF)
    u32 = st.integers(0, 2**32 - 1)
    v4 = st.builds(IPv4Address, u32)
    v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
    segment = st.builds(
        attributes.AsPathSegment,
        st.sampled_from(attributes.SegmentType),
        st.lists(asn, min_size=1, max_size=8).map(tuple),
    )
    segments = st.lists(segment, max_size=3).map(tuple)
    registered = {a.value for a in attributes.AttrType}
    unknown = st.builds(
        attributes.UnknownAttribute,
        st.integers(0, 255).filter(lambda c: c not in registered),
        st.sampled_from([0x80, 0xA0, 0xC0, 0xE0]),
        st.binary(max_size=300),
    )
    candidates = st.one_of(
        st.builds(attributes.Origin, st.sampled_from(attributes.OriginType)),
        st.builds(attributes.AsPath, segments),
        st.builds(attributes.As4Path, segments),
        st.builds(attributes.NextHop, v4),
        st.builds(attributes.MultiExitDisc, u32),
        st.builds(attributes.LocalPref, u32),
        st.just(attributes.AtomicAggregate()),
        st.builds(attributes.Aggregator, asn, v4),
        st.builds(attributes.As4Aggregator, u32, v4),
        st.builds(
            attributes.Communities,
            st.lists(st.builds(attributes.Community, u32), min_size=1, max_size=10).map(tuple),
        ),
        st.builds(
            attributes.LargeCommunities,
            st.lists(
                st.builds(attributes.LargeCommunity, u32, u32, u32), min_size=1, max_size=5
            ).map(tuple),
        ),
        st.builds(
            attributes.MpReachNlri,
            st.just(families.Family.IPV6_UNICAST),
            st.lists(v6, min_size=1, max_size=2).map(tuple),
            st.lists(ipv6_prefixes(), max_size=20).map(tuple),
        ),
        st.builds(
            attributes.MpReachNlri,
            st.just(families.Family.IPV4_UNICAST),
            st.tuples(v4),
            st.lists(ipv4_prefixes(), max_size=20).map(tuple),
        ),
        st.builds(
            attributes.MpUnreachNlri,
            st.just(families.Family.IPV6_UNICAST),
            st.lists(ipv6_prefixes(), max_size=20).map(tuple),
        ),
        st.builds(
            attributes.MpUnreachNlri,
            st.just(families.Family.IPV4_UNICAST),
            st.lists(ipv4_prefixes(), max_size=20).map(tuple),
        ),
        unknown,
    )
    return st.lists(candidates, max_size=8, unique_by=attributes.type_code)


@st.composite
def updates(draw: st.DrawFn, four_octet: bool) -> messages.Update:
    return messages.Update(
        withdrawn=tuple(draw(st.lists(ipv4_prefixes(), max_size=20))),
        path_attributes=tuple(draw(path_attribute_sets(four_octet))),
        nlri=tuple(draw(st.lists(ipv4_prefixes(), max_size=20))),
    )


@given(st.booleans().flatmap(lambda four: st.tuples(st.just(four), updates(four))))
def test_random_updates_round_trip(case: tuple[bool, messages.Update]) -> None:
    four_octet, update = case
    ctx = attributes.Context(four_octet)
    assume(messages.HEADER_SIZE + len(update.pack_body(ctx)) <= messages.MAX_MESSAGE_SIZE)
    assert messages.decode(messages.encode(update, ctx), ctx) == update


UPDATE_SAMPLE = messages.encode(
    messages.Update(
        path_attributes=(
            attributes.MpReachNlri(
                families.Family.IPV6_UNICAST,
                (IPv6Address("2001:db8::1"),),
                (ip_network("2001:db8:1::/48"),),
            ),
            attributes.Origin(),
            attributes.AsPath.sequence(65001),
            attributes.Communities((attributes.Community(1),)),
        ),
        withdrawn=(ip_network("192.0.2.0/24"),),
    )
)
