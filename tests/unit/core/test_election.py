import random
from collections import Counter
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import election

NodeName = election.NodeName

nodes = st.lists(
    st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True).map(NodeName),
    min_size=1,
    max_size=8,
    unique=True,
)
addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


def test_known_answers_are_pinned() -> None:
    # Speakers of different versions must elect the same owner: this pins the weight function.
    candidates = [NodeName("node-a"), NodeName("node-b"), NodeName("node-c")]
    assert election.ranking(ip_address("198.18.0.1"), candidates) == ("node-a", "node-c", "node-b")
    assert election.ranking(ip_address("198.18.0.2"), candidates) == ("node-b", "node-c", "node-a")
    assert election.ranking(ip_address("2001:db8::1"), candidates) == ("node-a", "node-b", "node-c")


def test_no_candidates_no_announcer() -> None:
    assert election.announcer_for(IPv4Address("192.0.2.1"), []) is None
    assert election.ranking(IPv4Address("192.0.2.1"), []) == ()


def test_ties_go_to_the_smallest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(election, "_weight", lambda node, address: 7)
    candidates = [NodeName("c"), NodeName("a"), NodeName("b")]
    assert election.announcer_for(IPv4Address("192.0.2.1"), candidates) == "a"
    assert election.ranking(IPv4Address("192.0.2.1"), candidates) == ("a", "b", "c")


@given(addresses, nodes, st.randoms(use_true_random=False))
def test_independent_of_order_and_duplicates(
    address: IPv4Address | IPv6Address, candidates: list[NodeName], rnd: random.Random
) -> None:
    shuffled = list(candidates) * 2
    rnd.shuffle(shuffled)
    assert election.announcer_for(address, shuffled) == election.announcer_for(address, candidates)
    assert election.ranking(address, shuffled) == election.ranking(address, candidates)


@given(addresses, nodes)
def test_ranking_head_is_the_announcer_and_next_is_the_successor(
    address: IPv4Address | IPv6Address, candidates: list[NodeName]
) -> None:
    ranked = election.ranking(address, candidates)
    assert sorted(ranked) == sorted(candidates)
    assert ranked[0] == election.announcer_for(address, candidates)
    assert election.announcer_for(address, ranked[1:]) == (ranked[1] if len(ranked) > 1 else None)


@given(st.lists(addresses, min_size=1, max_size=50), nodes, st.data())
def test_removing_a_node_moves_only_its_addresses(
    many: list[IPv4Address | IPv6Address], candidates: list[NodeName], data: st.DataObject
) -> None:
    gone = data.draw(st.sampled_from(candidates))
    rest = [n for n in candidates if n != gone]
    for address in many:
        before = election.announcer_for(address, candidates)
        if before != gone:
            assert election.announcer_for(address, rest) == before


@given(st.lists(addresses, min_size=1, max_size=50), nodes, st.data())
def test_adding_a_node_takes_addresses_only_onto_itself(
    many: list[IPv4Address | IPv6Address], candidates: list[NodeName], data: st.DataObject
) -> None:
    new = data.draw(nodes.map(lambda names: names[0]).filter(lambda n: n not in candidates))
    for address in many:
        after = election.announcer_for(address, [*candidates, new])
        assert after in (new, election.announcer_for(address, candidates))


@pytest.mark.parametrize(
    "first", [IPv4Address("198.18.0.0"), IPv6Address("2001:db8::")], ids=["ipv4", "ipv6"]
)
def test_distribution_is_roughly_even(first: IPv4Address | IPv6Address) -> None:
    candidates = [NodeName("node-1"), NodeName("node-2"), NodeName("node-3")]
    owners = Counter(election.announcer_for(first + i, candidates) for i in range(3000))
    for node in candidates:
        assert 1000 * 0.85 <= owners[node] <= 1000 * 1.15
