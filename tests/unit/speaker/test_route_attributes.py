"""A planned route's communities reach the BGP speaker as they were configured, each kind in
its own path attribute (one community type from configuration to wire: no conversion)."""

import ipaddress

from ironlb.bgp import attributes
from ironlb.core import announce, config
from ironlb.speaker import bgp


def test_standard_and_large_communities_go_to_their_own_attributes() -> None:
    route = announce.Route(
        ipaddress.ip_network("198.18.0.240/32"),
        local_pref=150,
        communities=frozenset(
            config.parse_community(text) for text in ("65000:100", "large:65000:1:2", "0:7")
        ),
    )
    attrs = bgp.route_attributes(route)
    assert attrs.local_pref == 150
    assert attrs.communities == frozenset(
        {attributes.Community(65000 << 16 | 100), attributes.Community(7)}
    )
    assert attrs.large_communities == frozenset({attributes.LargeCommunity(65000, 1, 2)})
    assert b"".join(c.pack() for c in sorted(attrs.communities)) == bytes.fromhex(
        "00000007fde80064"
    )
