import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import addresses

V4 = addresses.Family.V4
V6 = addresses.Family.V6


def v4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


@pytest.mark.parametrize(
    ("text", "family", "first", "last"),
    [
        ("192.0.2.0/24", V4, "192.0.2.0", "192.0.2.255"),
        ("192.0.2.77/24", V4, "192.0.2.0", "192.0.2.255"),  # host bits masked, like Go
        ("192.0.2.5/32", V4, "192.0.2.5", "192.0.2.5"),
        ("192.0.2.10-192.0.2.20", V4, "192.0.2.10", "192.0.2.20"),
        ("192.0.2.10 - 192.0.2.20", V4, "192.0.2.10", "192.0.2.20"),
        ("192.0.2.30-192.0.2.30", V4, "192.0.2.30", "192.0.2.30"),
        ("2001:db8::/64", V6, "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"),
        ("2001:db8::1-2001:db8::ff", V6, "2001:db8::1", "2001:db8::ff"),
    ],
)
def test_parse_range_accepts_metallb_syntax(
    text: str, family: addresses.Family, first: str, last: str
) -> None:
    r = addresses.parse_range(text)
    assert (r.family, r.first, r.last, r.text) == (
        family,
        int(ipaddress.ip_address(first)),
        int(ipaddress.ip_address(last)),
        text,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.9-10.0.0.1", "'10.0.0.9-10.0.0.1' is not a valid range (start after end)"),
        ("10.0.0.1-2001:db8::1", "it mixes IPv4 and IPv6"),
        ("10.0.0.5", "'10.0.0.5' is a single address, not a CIDR: write '10.0.0.5/32'"),
        ("2001:db8::5", "write '2001:db8::5/128'"),
        ("10.0.0.0/33", "the prefix length must be 0 to 32"),
        ("10.0.0.0/-1", "not a valid range"),  # a '-' makes it a range, as in MetalLB
        ("2001:db8::/129", "the prefix length must be 0 to 128"),
        ("10.0.0.300/24", "not a valid CIDR"),
        ("10.0.0.1-10.0.0.x", "not a valid range"),
        ("fe80::1%eth0/64", "zones are not allowed"),
        ("pool", "neither a CIDR"),
        (" 10.0.0.0/24", "not a valid CIDR"),  # MetalLB does not trim CIDRs either
    ],
)
def test_parse_range_rejects_with_clear_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        addresses.parse_range(text)
    assert message in str(info.value)


def test_range_cidrs_and_widest_prefix() -> None:
    r = addresses.parse_range("192.0.2.1-192.0.2.3")
    assert [str(n) for n in r.cidrs()] == ["192.0.2.1/32", "192.0.2.2/31"]
    assert r.widest_prefix() == 31
    assert addresses.parse_range("2001:db8::/64").widest_prefix() == 64


def test_address_range_is_immutable_and_compares_by_value() -> None:
    r = addresses.parse_range("192.0.2.0/30")
    assert r == addresses.parse_range("192.0.2.0/30")
    assert hash(r) == hash(addresses.parse_range("192.0.2.0/30"))
    with pytest.raises(AttributeError):
        r.first = 0


def test_buggy_means_last_octet_zero_or_255_not_network_or_broadcast() -> None:
    # 10.0.1.0 and 10.0.0.255 are inside 10.0.0.0/16, neither its network nor broadcast address.
    assert addresses.is_buggy(V4, v4("10.0.1.0"))
    assert addresses.is_buggy(V4, v4("10.0.0.255"))
    assert not addresses.is_buggy(V4, v4("10.0.0.1"))
    assert not addresses.is_buggy(V6, int(ipaddress.IPv6Address("2001:db8::ff")))
    # A /30 that does not touch .0 or .255 loses nothing.
    assert addresses.count_buggy(V4, v4("192.0.2.4"), v4("192.0.2.7")) == 0
    assert addresses.count_buggy(V4, v4("10.0.0.0"), v4("10.0.255.255")) == 512


@given(st.integers(0, 2**32 - 1), st.integers(0, 2000))
def test_count_buggy_matches_enumeration(first: int, span: int) -> None:
    last = min(first + span, 2**32 - 1)
    expected = sum(1 for x in range(first, last + 1) if addresses.is_buggy(V4, x))
    assert addresses.count_buggy(V4, first, last) == expected


def test_find_overlaps_names_both_sides() -> None:
    items = [
        (addresses.parse_range("192.0.2.0/24"), "a"),
        (addresses.parse_range("192.0.2.128-192.0.2.130"), "b"),
        (addresses.parse_range("198.51.100.0/24"), "c"),
        (addresses.parse_range("198.51.101.0/24"), "d"),  # adjacent to c, not overlapping
        (addresses.parse_range("2001:db8::/64"), "e"),
        (addresses.parse_range("2001:db8::5/128"), "f"),
    ]
    pairs = addresses.find_overlaps(items)
    assert [(x[1], y[1]) for x, y in pairs] == [("a", "b"), ("e", "f")]


def test_find_overlaps_reports_every_range_inside_a_wide_one() -> None:
    items = [
        (addresses.parse_range("10.0.0.0/8"), 0),
        (addresses.parse_range("10.1.0.0/16"), 1),
        (addresses.parse_range("10.2.0.0/16"), 2),
    ]
    assert [(x[1], y[1]) for x, y in addresses.find_overlaps(items)] == [(0, 1), (0, 2)]


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), max_size=12))
def test_find_overlaps_finds_every_overlapping_range(spans: list[tuple[int, int]]) -> None:
    ranges = [addresses.AddressRange(V4, lo, lo + n, f"r{i}") for i, (lo, n) in enumerate(spans)]
    reported = {y[1] for _, y in addresses.find_overlaps((r, i) for i, r in enumerate(ranges))}
    for i, a in enumerate(ranges):
        for j, b in enumerate(ranges):
            if i < j and a.overlaps(b):
                assert i in reported or j in reported


def test_interval_set_merges_unions_and_counts_without_enumerating() -> None:
    s = addresses.IntervalSet.of(
        V4,
        [addresses.parse_range("192.0.2.0/25"), addresses.parse_range("192.0.2.128/25")],
    )
    assert list(s.intervals()) == [(v4("192.0.2.0"), v4("192.0.2.255"))]
    assert s.count() == 256
    assert s.count(avoid_buggy=True) == 254
    assert s.contains(v4("192.0.2.200"))
    assert not s.contains(v4("192.0.3.0"))
    other = addresses.IntervalSet(V4, [(v4("192.0.3.0"), v4("192.0.3.9"))])
    assert s.union(other).count() == 266
    huge = addresses.IntervalSet.of(V6, [addresses.parse_range("2001:db8::/64")])
    assert huge.count(avoid_buggy=True) == 2**64
    with pytest.raises(ValueError, match="IPv4 and IPv6"):
        s.union(huge)


def test_range_index_finds_owner_and_rejects_overlaps() -> None:
    index = addresses.RangeIndex(
        [
            (addresses.parse_range("192.0.2.0/24"), "a"),
            (addresses.parse_range("2001:db8::/64"), "b"),
            (addresses.parse_range("198.51.100.10-198.51.100.20"), "c"),
        ]
    )
    assert index.find(V4, v4("192.0.2.9")) == "a"
    assert index.find(V4, v4("198.51.100.20")) == "c"
    assert index.find(V4, v4("198.51.100.21")) is None
    assert index.find(V6, int(ipaddress.IPv6Address("2001:db8::1"))) == "b"
    # The same integer in the other family is not covered.
    assert index.find(V6, v4("192.0.2.9")) is None
    with pytest.raises(ValueError, match="overlap"):
        addresses.RangeIndex(
            [(addresses.parse_range("10.0.0.0/24"), 1), (addresses.parse_range("10.0.0.9/32"), 2)]
        )


def test_first_free_jumps_over_a_long_run_in_one_step() -> None:
    used = addresses.UsedAddresses(V4)
    base = v4("198.18.0.0")
    for i in range(10_000):
        used.add(base + i)
    assert len(used) == 10_000
    assert used.first_free(base, base + 20_000) == base + 10_000
    assert used.first_free(base, base + 9_999) is None


def test_first_free_skips_buggy_addresses_without_storing_them() -> None:
    used = addresses.UsedAddresses(V4)
    for i in range(1, 255):
        used.add(v4("192.0.2.0") + i)
    assert used.first_free(v4("192.0.2.0"), v4("192.0.3.255")) == v4("192.0.2.0")
    found = used.first_free(v4("192.0.2.0"), v4("192.0.3.255"), avoid_buggy=True)
    assert found == v4("192.0.3.1")
    assert used.first_free(v4("192.0.2.1"), v4("192.0.2.255"), avoid_buggy=True) is None


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 600)), max_size=80)


@given(ops, st.integers(0, 600), st.integers(0, 600), st.booleans())
def test_used_addresses_behaves_like_a_set(
    operations: list[tuple[bool, int]], lo: int, span: int, avoid_buggy: bool
) -> None:
    used = addresses.UsedAddresses(V4)
    model: set[int] = set()
    for add, value in operations:
        if add:
            used.add(value)
            model.add(value)
        else:
            used.discard(value)
            model.discard(value)
    assert len(used) == len(model)
    assert sorted(used) == sorted(model)
    assert all((x in used) == (x in model) for x in range(610))
    hi = lo + span
    expected = next(
        (
            x
            for x in range(lo, hi + 1)
            if x not in model and not (avoid_buggy and addresses.is_buggy(V4, x))
        ),
        None,
    )
    assert used.first_free(lo, hi, avoid_buggy=avoid_buggy) == expected


def test_parse_ip_is_strict() -> None:
    assert addresses.parse_ip("192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")
    for bad in ("192.0.2.01", "fe80::1%eth0", " 192.0.2.1", ""):
        with pytest.raises(ValueError, match="not an IP address"):
            addresses.parse_ip(bad)
