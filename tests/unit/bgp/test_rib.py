from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironlb.bgp import attributes, families, messages, rib

V4, V6 = families.Family.IPV4_UNICAST, families.Family.IPV6_UNICAST
NH4, NH6, LL = IPv4Address("192.0.2.1"), IPv6Address("2001:db8::1"), IPv6Address("fe80::1")
EBGP = rib.Peering(65001, ibgp=False, four_octet_as=True, next_hop_v4=NH4, next_hop_v6=NH6)
IBGP = rib.Peering(65001, ibgp=True, four_octet_as=True, next_hop_v4=NH4, next_hop_v6=NH6)
ROUTE = rib.RouteAttributes()


def hosts_v4(count: int) -> list[IPv4Network]:
    return [IPv4Network((0xC6120000 + i, 32)) for i in range(count)]  # 198.18.0.0/15


def hosts_v6(count: int) -> list[IPv6Network]:
    return [IPv6Network((0x20010DB8 << 96 | i, 128)) for i in range(count)]


def test_ebgp_path_prepends_our_as_and_has_no_local_pref() -> None:
    route = rib.RouteAttributes(
        local_pref=200,
        med=5,
        communities=frozenset({attributes.Community(2), attributes.Community(1)}),
        large_communities=frozenset({attributes.LargeCommunity(1, 2, 3)}),
    )
    assert rib.path_attributes(V4, route, EBGP) == (
        attributes.Origin(),
        attributes.AsPath.sequence(65001),
        attributes.NextHop(NH4),
        attributes.MultiExitDisc(5),
        attributes.Communities((attributes.Community(1), attributes.Community(2))),
        attributes.LargeCommunities((attributes.LargeCommunity(1, 2, 3),)),
    )


def test_ibgp_path_is_empty_and_carries_local_pref() -> None:
    assert rib.path_attributes(V4, ROUTE, IBGP) == (
        attributes.Origin(),
        attributes.AsPath(),
        attributes.NextHop(NH4),
        attributes.LocalPref(rib.DEFAULT_LOCAL_PREF),
    )
    zero = rib.path_attributes(V4, rib.RouteAttributes(local_pref=0), IBGP)
    assert zero is not None
    assert attributes.LocalPref(0) in zero


def test_ipv6_path_starts_with_mp_reach_and_may_carry_a_link_local_next_hop() -> None:
    peering = rib.Peering(4200000001, False, True, next_hop_v6=NH6, link_local_v6=LL)
    path = rib.path_attributes(V6, ROUTE, peering)
    assert path == (
        attributes.MpReachNlri(V6, (NH6, LL)),
        attributes.Origin(),
        attributes.AsPath.sequence(4200000001),
    )


def test_old_peers_get_as_trans_and_as4_path() -> None:
    peering = rib.Peering(4200000001, False, four_octet_as=False, next_hop_v4=NH4)
    path = rib.path_attributes(V4, ROUTE, peering)
    assert path is not None
    assert attributes.As4Path(attributes.AsPath.sequence(4200000001).segments) in path
    update = messages.Update(path_attributes=path, nlri=(ip_network("198.18.0.1/32"),))
    decoded = messages.decode(messages.encode(update, peering.context), peering.context)
    assert isinstance(decoded, messages.Update)
    assert decoded.attribute(attributes.AsPath) == attributes.AsPath.sequence(23456)


def test_route_next_hop_wins_and_a_missing_one_is_none() -> None:
    own = rib.RouteAttributes(next_hop=IPv4Address("192.0.2.77"))
    path = rib.path_attributes(V4, own, EBGP)
    assert path is not None
    assert attributes.NextHop(IPv4Address("192.0.2.77")) in path
    bare = rib.Peering(65001, False, True)
    assert rib.path_attributes(V4, ROUTE, bare) is None
    assert rib.path_attributes(V6, ROUTE, bare) is None
    # An IPv6 next hop for IPv4 NLRI would need RFC 8950: not announced.
    assert rib.path_attributes(V4, rib.RouteAttributes(next_hop=NH6), EBGP) is None


def test_route_attributes_validate_numbers() -> None:
    with pytest.raises(ValueError, match="local_pref"):
        rib.RouteAttributes(local_pref=-1)
    with pytest.raises(ValueError, match="med"):
        rib.RouteAttributes(med=2**32)


@pytest.mark.parametrize(
    ("family", "prefixes"), [(V4, hosts_v4(3000)), (V6, hosts_v6(3000))], ids=str
)
def test_many_prefixes_pack_into_full_messages(
    family: families.Family, prefixes: list[families.Prefix]
) -> None:
    table = rib.AdjRibOut()
    table.set_routes(family, dict.fromkeys(prefixes, ROUTE))
    changes = table.updates(family, EBGP)
    sizes = [len(messages.encode(u)) for u in changes.updates]
    assert max(sizes) <= messages.MAX_MESSAGE_SIZE
    assert min(sizes[:-1]) > messages.MAX_MESSAGE_SIZE - 20  # full but for the last
    announced = [p for u in changes.updates for p in _announced(u)]
    assert announced == sorted(prefixes)

    table.set_routes(family, {})
    withdrawals = table.updates(family, EBGP).updates
    assert max(len(messages.encode(u)) for u in withdrawals) <= messages.MAX_MESSAGE_SIZE
    assert sorted(p for u in withdrawals for p in _withdrawn(u)) == sorted(prefixes)


def test_identical_attributes_share_updates_and_changes_are_diffs() -> None:
    table = rib.AdjRibOut()
    blue = rib.RouteAttributes(communities=frozenset({attributes.Community(1)}))
    a, b, c = hosts_v4(3)
    table.set_routes(V4, {a: ROUTE, b: blue, c: ROUTE})
    first = table.updates(V4, EBGP).updates
    assert [u.nlri for u in first] == [(a, c), (b,)]
    assert table.updates(V4, EBGP).updates == []

    table.set_routes(V4, {a: blue, b: blue})
    (gone, moved) = table.updates(V4, EBGP).updates
    assert gone.withdrawn == (c,)
    assert moved.nlri == (a,)
    assert table.advertised(V4) == {a: blue, b: blue}

    table.refresh(V4)
    assert [u.nlri for u in table.updates(V4, EBGP).updates] == [(a, b)]
    table.reset()
    assert table.advertised(V4) == {}


def test_unresolvable_routes_are_skipped_and_withdrawn_if_they_were_announced() -> None:
    table = rib.AdjRibOut()
    (a,) = hosts_v4(1)
    table.set_routes(V4, {a: ROUTE})
    table.updates(V4, EBGP)
    table.set_routes(V4, {a: rib.RouteAttributes(next_hop=NH6)})
    changes = table.updates(V4, EBGP)
    assert changes.skipped == [a]
    assert [u.withdrawn for u in changes.updates] == [(a,)]
    assert table.advertised(V4) == {}


@given(
    st.dictionaries(
        st.integers(0, 2**16 - 1).map(lambda i: IPv4Network((0xC6120000 + i, 32))),
        st.builds(rib.RouteAttributes, med=st.none() | st.integers(0, 3)),
        max_size=60,
    ),
    st.dictionaries(
        st.integers(0, 2**16 - 1).map(lambda i: IPv4Network((0xC6120000 + i, 32))),
        st.builds(rib.RouteAttributes, med=st.none() | st.integers(0, 3)),
        max_size=60,
    ),
)
def test_peer_view_follows_any_sequence_of_tables(
    before: dict[IPv4Network, rib.RouteAttributes], after: dict[IPv4Network, rib.RouteAttributes]
) -> None:
    table, peer = rib.AdjRibOut(), {}
    for desired in (before, after):
        table.set_routes(V4, desired)
        for update in table.updates(V4, EBGP).updates:
            decoded = messages.decode(messages.encode(update))
            assert isinstance(decoded, messages.Update)
            for prefix in decoded.withdrawn:
                del peer[prefix]
            med = decoded.attribute(attributes.MultiExitDisc)
            for prefix in decoded.nlri:
                peer[prefix] = None if med is None else med.value
        assert peer == {p: r.med for p, r in desired.items()}


def _announced(update: messages.Update) -> tuple[families.Prefix, ...]:
    reach = update.attribute(attributes.MpReachNlri)
    return reach.nlri if reach else update.nlri


def _withdrawn(update: messages.Update) -> tuple[families.Prefix, ...]:
    unreach = update.attribute(attributes.MpUnreachNlri)
    return unreach.withdrawn if unreach else update.withdrawn


# Incremental comparison: `update_routes` marks only its prefixes for the next `updates()`.
# Whatever the sequence, that must send exactly what comparing everything sends.

_PREFIXES = hosts_v4(6)
_ROUTES = [ROUTE, rib.RouteAttributes(med=7), rib.RouteAttributes(local_pref=300)]
_NO_V4_NEXT_HOP = rib.Peering(65001, ibgp=False, four_octet_as=True, next_hop_v6=NH6)
_PEERINGS = [EBGP, IBGP, _NO_V4_NEXT_HOP]

_update = st.tuples(
    st.just("update"),
    st.dictionaries(
        st.sampled_from(_PREFIXES), st.none() | st.sampled_from(_ROUTES), min_size=1, max_size=3
    ),
)
# Mostly updates and syncs under one peering (the incremental path); now and then what makes
# the next sync compare everything.
_operation = st.one_of(
    _update,
    _update,
    st.tuples(st.just("sync"), st.just(EBGP)),
    st.tuples(st.just("sync"), st.just(EBGP)),
    st.tuples(st.just("sync"), st.sampled_from(_PEERINGS)),
    st.tuples(
        st.just("set"),
        st.dictionaries(st.sampled_from(_PREFIXES), st.sampled_from(_ROUTES), max_size=6),
    ),
    st.tuples(st.just("reset"), st.none()),
    st.tuples(st.just("refresh"), st.none()),
)


@settings(max_examples=300)
@given(st.lists(_operation, max_size=40))
def test_update_routes_sends_what_comparing_everything_sends(
    operations: list[tuple[str, object]],
) -> None:
    incremental, everything = rib.AdjRibOut(), rib.AdjRibOut()
    desired: dict[families.Prefix, rib.RouteAttributes] = {}
    for kind, arg in operations:
        if kind == "update":
            assert isinstance(arg, dict)
            incremental.update_routes(V4, arg)
            for prefix, route in arg.items():
                if route is None:
                    desired.pop(prefix, None)
                else:
                    desired[prefix] = route
        elif kind == "set":
            assert isinstance(arg, dict)
            incremental.set_routes(V4, arg)
            desired = dict(arg)
        elif kind == "sync":
            assert isinstance(arg, rib.Peering)
            everything.set_routes(V4, desired)  # compares everything
            got, want = incremental.updates(V4, arg), everything.updates(V4, arg)
            assert got == want
            assert incremental.advertised(V4) == everything.advertised(V4)
        elif kind == "reset":
            incremental.reset()
            everything.reset()
        else:
            incremental.refresh(V4)
            everything.refresh(V4)
