from typing import Any

import pytest
import yaml

from ironlb.core import config, validation

ERROR = validation.Severity.ERROR
TRANSIENT = validation.Severity.TRANSIENT
WARNING = validation.Severity.WARNING


def cfg(manifests: str) -> config.Config:
    objects: list[config.ConfigKind] = []
    for document in yaml.safe_load_all(manifests):
        document.setdefault("metadata", {}).setdefault("namespace", "metallb")
        parsed = config.parse(document)
        assert not isinstance(parsed, config.ServiceL2Status | config.ServiceBGPStatus)
        objects.append(parsed)
    return config.Config.from_objects(objects)


def problems(manifests: str, **kwargs: Any) -> list[tuple[validation.Severity, str]]:
    return [(p.severity, str(p)) for p in validation.validate(cfg(manifests), **kwargs)]


POOLS = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a}
spec:
  addresses: [192.0.2.0/24, 2001:db8::/64]
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b}
spec:
  addresses: [198.51.100.10-198.51.100.20]
"""

PEERS = """
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: ebgp}
spec: {myASN: 64500, peerASN: 64501, peerAddress: 192.0.2.254}
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: ibgp}
spec: {myASN: 64500, peerASN: 64500, peerAddress: 192.0.2.253}
"""


def test_a_sound_configuration_has_no_problems() -> None:
    assert problems(POOLS + "---" + PEERS) == []


def test_overlap_within_a_pool() -> None:
    found = problems(
        """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a}
spec: {addresses: [192.0.2.0/24, 192.0.2.128-192.0.2.130]}
"""
    )
    assert found == [
        (
            ERROR,
            "IPAddressPool metallb/a: spec.addresses[1]: '192.0.2.128-192.0.2.130' overlaps "
            "'192.0.2.0/24' (spec.addresses[0]): pools must not overlap, within a pool or "
            "across pools",
        )
    ]


def test_overlap_across_pools_names_both() -> None:
    found = problems(
        POOLS
        + """---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: c}
spec: {addresses: ["2001:db8::ff/128"]}
"""
    )
    assert found == [
        (
            ERROR,
            "IPAddressPool metallb/c: spec.addresses[0]: '2001:db8::ff/128' overlaps "
            "'2001:db8::/64' (spec.addresses[1] of IPAddressPool metallb/a): pools must not "
            "overlap, within a pool or across pools",
        )
    ]


def test_pool_rules() -> None:
    found = problems(
        """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: empty}
spec:
  addresses: []
  serviceAllocation:
    namespaces: [a, a]
    serviceSelectors:
    - matchLabels: {app: web}
    - matchLabels: {app: web}
"""
    )
    assert found == [
        (ERROR, "IPAddressPool metallb/empty: spec.addresses: the pool has no addresses"),
        (
            ERROR,
            "IPAddressPool metallb/empty: spec.serviceAllocation.namespaces[1]: "
            "'a' is listed twice",
        ),
        (
            ERROR,
            "IPAddressPool metallb/empty: spec.serviceAllocation.serviceSelectors[1]: "
            "duplicate of spec.serviceAllocation.serviceSelectors[0]",
        ),
    ]


def test_seed_004_wildcard_node_selector_is_explained() -> None:
    # From seed 004: the user meant "every node"; Kubernetes (and MetalLB) reject the value.
    found = problems(
        """
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: primary
  namespace: metallb
spec:
  ipAddressPools:
  - primary
  nodeSelectors:
  - matchLabels:
      kubernetes.io/hostname: "*"
  interfaces:
  - eth0
"""
    )
    assert [severity for severity, _ in found] == [WARNING, ERROR]
    assert found[0][1] == (
        "L2Advertisement metallb/primary: spec.ipAddressPools[0]: IPAddressPool 'primary' does "
        "not exist: nothing is advertised for it"
    )
    assert found[1][1].startswith(
        "L2Advertisement metallb/primary: spec.nodeSelectors[0]."
        "matchLabels['kubernetes.io/hostname']: '*' is not a valid label value"
    )
    assert "'*' is not a wildcard" in found[1][1]


def test_l2_refresh_interval_floor() -> None:
    found = problems(
        """
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: l2}
spec: {gratuitousRefreshInterval: 200ms}
"""
    )
    assert found == [
        (
            ERROR,
            "L2Advertisement metallb/l2: spec.gratuitousRefreshInterval: 0.2s is too short: at "
            "least 1s (Linux ignores faster updates, and the LAN pays for every one)",
        )
    ]


def bgp_adv(spec: str, name: str = "adv") -> str:
    return f"""---
apiVersion: metallb.io/v1beta1
kind: BGPAdvertisement
metadata: {{name: {name}}}
spec: {spec}
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{ipAddressPools: [b], aggregationLength: 30}", []),
        (
            "{ipAddressPools: [a], aggregationLength: 16}",
            [
                (
                    ERROR,
                    "BGPAdvertisement metallb/adv: spec.aggregationLength: /16 is wider than the "
                    "/24 prefix of '192.0.2.0/24' in IPAddressPool metallb/a: the aggregate would "
                    "announce addresses outside the pool (use 24 or more)",
                )
            ],
        ),
        (
            # 198.51.100.10-20 is .10/31 .12/30 .16/30 .20/32: its widest CIDR is a /30.
            "{ipAddressPools: [b], aggregationLength: 29}",
            [
                (
                    ERROR,
                    "BGPAdvertisement metallb/adv: spec.aggregationLength: /29 is wider than the "
                    "/30 prefix of '198.51.100.10-198.51.100.20' in IPAddressPool metallb/b: the "
                    "aggregate would announce addresses outside the pool (use 30 or more)",
                )
            ],
        ),
        (
            "{ipAddressPools: [a], aggregationLengthV6: 48}",
            [
                (
                    ERROR,
                    "BGPAdvertisement metallb/adv: spec.aggregationLengthV6: /48 is wider than "
                    "the /64 prefix of '2001:db8::/64' in IPAddressPool metallb/a: the aggregate "
                    "would announce addresses outside the pool (use 64 or more)",
                )
            ],
        ),
        (
            # No pool named or selected: it applies to every pool, so b is checked too.
            "{aggregationLength: 24}",
            [
                (
                    ERROR,
                    "BGPAdvertisement metallb/adv: spec.aggregationLength: /24 is wider than the "
                    "/30 prefix of '198.51.100.10-198.51.100.20' in IPAddressPool metallb/b: the "
                    "aggregate would announce addresses outside the pool (use 30 or more)",
                )
            ],
        ),
        (
            "{serviceSelectors: [{matchLabels: {app: web}}], aggregationLength: 30}",
            [
                (
                    ERROR,
                    "BGPAdvertisement metallb/adv: spec.aggregationLength: serviceSelectors and "
                    "aggregation are mutually exclusive",
                )
            ],
        ),
        (
            "{ipAddressPools: [a, a], peers: [ebgp, ebgp], communities: ['1:1', '1:1']}",
            [
                (
                    ERROR,
                    "BGPAdvertisement metallb/adv: spec.ipAddressPools[1]: 'a' is listed twice",
                ),
                (ERROR, "BGPAdvertisement metallb/adv: spec.communities[1]: '1:1' is listed twice"),
                (ERROR, "BGPAdvertisement metallb/adv: spec.peers[1]: 'ebgp' is listed twice"),
            ],
        ),
        (
            "{peers: [ghost]}",
            [
                (
                    WARNING,
                    "BGPAdvertisement metallb/adv: spec.peers[0]: BGPPeer 'ghost' does not exist: "
                    "nothing is advertised to it",
                )
            ],
        ),
    ],
)
def test_bgp_advertisement_rules(
    spec: str, expected: list[tuple[validation.Severity, str]]
) -> None:
    assert problems(POOLS + "---" + PEERS + bgp_adv(spec)) == expected


def test_local_pref_is_for_ibgp_only() -> None:
    assert problems(POOLS + "---" + PEERS + bgp_adv("{localPref: 100}")) == []
    assert problems(POOLS + "---" + PEERS + bgp_adv("{localPref: 100, peers: [ebgp]}")) == [
        (
            WARNING,
            "BGPAdvertisement metallb/adv: spec.localPref: LOCAL_PREF is only sent to iBGP peers, "
            "and every peer of this advertisement is eBGP (ebgp): it has no effect",
        )
    ]


def test_conflicting_local_prefs_for_the_same_route() -> None:
    manifests = (
        POOLS
        + "---"
        + PEERS
        + bgp_adv("{ipAddressPools: [b], localPref: 100}", "first")
        + bgp_adv("{ipAddressPools: [b], localPref: 200}", "second")
    )
    # MetalLB compares the nodes each advertisement selects: with no node, nothing collides.
    assert problems(manifests) == []
    nodes = {"n1": {"kubernetes.io/hostname": "n1"}}
    assert problems(manifests, nodes=nodes) == [
        (
            ERROR,
            "BGPAdvertisement metallb/second: spec.localPref: 200 conflicts with localPref 100 of "
            "BGPAdvertisement metallb/first: both advertise IPAddressPool metallb/b with the same "
            "aggregation to the same peers from the same nodes",
        )
    ]
    disjoint_peers = (
        POOLS
        + "---"
        + PEERS
        + bgp_adv("{ipAddressPools: [b], localPref: 100, peers: [ebgp]}", "first")
        + bgp_adv("{ipAddressPools: [b], localPref: 200, peers: [ibgp]}", "second")
    )
    assert [severity for severity, _ in problems(disjoint_peers, nodes=nodes)] == [WARNING]
    other_aggregation = (
        POOLS
        + "---"
        + PEERS
        + bgp_adv("{ipAddressPools: [b], localPref: 100}", "first")
        + bgp_adv("{ipAddressPools: [b], localPref: 200, aggregationLength: 31}", "second")
    )
    assert problems(other_aggregation, nodes=nodes) == []


def test_communities_literal_alias_or_unknown() -> None:
    community = """---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: aliases}
spec:
  communities:
  - {name: no-advertise, value: "65535:65282"}
"""
    spec = "{communities: [no-advertise, '64500:100', 'large:64500:1:2', no-export, '70000:1']}"
    found = problems(POOLS + community + bgp_adv(spec))
    assert found == [
        (
            TRANSIENT,
            "BGPAdvertisement metallb/adv: spec.communities[3]: 'no-export' is neither a community "
            "(<AS>:<value> or large:<A>:<B>:<C>) nor an alias defined in a Community object",
        ),
        (
            ERROR,
            "BGPAdvertisement metallb/adv: spec.communities[4]: '70000:1': '70000' is not a "
            "16-bit unsigned number",
        ),
    ]


def test_duplicate_community_aliases() -> None:
    found = problems(
        """
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: one}
spec:
  communities:
  - {name: x, value: "1:1"}
  - {name: x, value: "1:2"}
---
apiVersion: metallb.io/v1beta1
kind: Community
metadata: {name: two}
spec:
  communities:
  - {name: x, value: "1:3"}
"""
    )
    assert found == [
        (
            ERROR,
            "Community metallb/one: spec.communities[1].name: alias 'x' is already defined by "
            "Community metallb/one spec.communities[0]",
        ),
        (
            ERROR,
            "Community metallb/two: spec.communities[0].name: alias 'x' is already defined by "
            "Community metallb/one spec.communities[0]",
        ),
    ]


def peer(spec: str, name: str = "p") -> str:
    return f"""---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {{name: {name}}}
spec: {spec}
"""


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("{myASN: 0, peerASN: 1, peerAddress: 192.0.2.1}", "spec.myASN: missing local ASN"),
        ("{myASN: 1, peerAddress: 192.0.2.1}", "spec.peerASN: set peerASN, or dynamicASN"),
        (
            "{myASN: 1, peerASN: 2, dynamicASN: external, peerAddress: 192.0.2.1}",
            "spec.dynamicASN: peerASN and dynamicASN are mutually exclusive",
        ),
        (
            "{myASN: 1, peerASN: 1, ebgpMultiHop: true, peerAddress: 192.0.2.1}",
            "spec.ebgpMultiHop: only for eBGP peers, and this one is iBGP (peerASN equals myASN)",
        ),
        (
            "{myASN: 1, dynamicASN: internal, ebgpMultiHop: true, peerAddress: 192.0.2.1}",
            "spec.ebgpMultiHop: only for eBGP peers, and this one is iBGP (dynamicASN: internal)",
        ),
        ("{myASN: 1, peerASN: 2}", "spec.peerAddress: set peerAddress, or interface"),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, interface: eth0}",
            "spec.interface: peerAddress and interface are mutually exclusive",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, holdTime: 2s}",
            "spec.holdTime: hold time 2s must be 0 (no keepalives) or at least 3s",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, keepaliveTime: 900ms}",
            "spec.keepaliveTime: hold time 2.7s must be 0 (no keepalives) or at least 3s",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, holdTime: 9s, keepaliveTime: 10s}",
            "spec.keepaliveTime: 10s is longer than the hold time 9s",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, connectTime: 1500ms}",
            "spec.connectTime: 1.5s: must be a whole number of seconds from 1 to 65535",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, connectTime: 20h}",
            "spec.connectTime: 72000s: must be a whole number of seconds from 1 to 65535",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, password: x, "
            "passwordSecret: {name: s}}",
            "spec.passwordSecret: password and passwordSecret are mutually exclusive",
        ),
        (
            '{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, password: "a\\nb"}',
            "spec.password: contains a line break",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, vrf: red}",
            "spec.vrf: VRFs are not supported by ironlb",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, routerID: '2001:db8::1'}",
            "spec.routerID: a BGP router ID is 32 bits: use an IPv4 address",
        ),
        (
            "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, "
            "nodeSelectors: [{matchLabels: {rack: '*'}}]}",
            "spec.nodeSelectors[0].matchLabels['rack']: '*' is not a valid label value",
        ),
    ],
)
def test_peer_errors(spec: str, expected: str) -> None:
    found = problems(peer(spec))
    assert [severity for severity, _ in found] == [ERROR]
    assert found[0][1].startswith(f"BGPPeer metallb/p: {expected}")


@pytest.mark.parametrize(
    "spec",
    [
        "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, holdTime: 0s}",
        "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, holdTime: 500ms}",  # rounds down to 0
        "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, holdTime: 3s}",
        "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, keepaliveTime: 1s}",
        "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, connectTime: 10s}",
        "{myASN: 1, dynamicASN: external, ebgpMultiHop: true, peerAddress: 192.0.2.1}",
        "{myASN: 1, peerASN: 2, interface: eth1}",
        "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, passwordSecret: {name: s}}",
    ],
)
def test_peer_accepted(spec: str) -> None:
    assert problems(peer(spec)) == []


def test_duplicate_peer_address() -> None:
    found = problems(
        peer("{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1}", "one")
        + peer("{myASN: 1, peerASN: 3, peerAddress: 192.0.2.1}", "two")
    )
    assert found == [
        (
            ERROR,
            "BGPPeer metallb/two: spec.peerAddress: BGPPeer metallb/one already peers with "
            "192.0.2.1",
        )
    ]


BFD = """---
apiVersion: metallb.io/v1beta1
kind: BFDProfile
metadata: {name: fast}
spec: {receiveInterval: 100, transmitInterval: 100, echoMode: true}
"""


def test_unknown_bfd_profile_is_transient_and_resolves() -> None:
    spec = "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, bfdProfile: fast}"
    assert problems(peer(spec)) == [
        (TRANSIENT, "BGPPeer metallb/p: spec.bfdProfile: BFDProfile 'fast' does not exist (yet)")
    ]
    assert problems(peer(spec) + BFD) == []


def test_bfd_echo_cannot_serve_ipv6_pools() -> None:
    spec = "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, bfdProfile: fast}"
    found = problems(POOLS + peer(spec) + BFD + bgp_adv("{ipAddressPools: [a]}"))
    assert found == [
        (
            ERROR,
            "BGPAdvertisement metallb/adv: spec: advertises IPv6 pool a to BGPPeer metallb/p, "
            "whose BFDProfile fast has echoMode: BFD echo does not work for IPv6",
        )
    ]
    assert problems(POOLS + peer(spec) + BFD + bgp_adv("{ipAddressPools: [b]}")) == []


def test_deleting_a_bfd_profile_in_use() -> None:
    spec = "{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, bfdProfile: fast}"
    config_in_force = cfg(peer(spec, "router") + BFD)
    assert [str(p) for p in validation.validate_delete(config_in_force, "BFDProfile", "fast")] == [
        "BFDProfile metallb/fast: metadata.name: in use by BGPPeer metallb/router "
        "(spec.bfdProfile): change the peer first"
    ]
    assert validation.validate_delete(config_in_force, "BGPPeer", "router") == []
    assert validation.validate_delete(cfg(BFD), "BFDProfile", "fast") == []


def test_severity_filters() -> None:
    found = validation.validate(
        cfg(
            peer("{myASN: 1, peerASN: 2, peerAddress: 192.0.2.1, bfdProfile: slow, vrf: red}")
            + bgp_adv("{peers: [ghost]}")
        )
    )
    assert {p.severity for p in found} == {ERROR, TRANSIENT, WARNING}
    assert {p.severity for p in validation.rejected(found)} == {ERROR}
    assert {p.severity for p in validation.blocking(found)} == {ERROR, TRANSIENT}
