from typing import Any

import pytest

from ironlb.core import addresses, config
from ironlb.core import community as community_values

META = {"name": "pool-a", "namespace": "metallb", "uid": "0f3c", "managedFields": [{"x": 1}]}


def obj(kind: str, spec: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    version = config.V1BETA2 if kind == "BGPPeer" else config.V1BETA1
    raw: dict[str, Any] = {"apiVersion": version, "kind": kind, "metadata": META, **top}
    if spec is not None:
        raw["spec"] = spec
    return raw


def error_of(raw: dict[str, Any]) -> str:
    with pytest.raises(config.ConfigError) as info:
        config.parse(raw)
    return str(info.value)


def test_ip_address_pool_defaults_and_field_names() -> None:
    pool = config.parse_as(
        obj("IPAddressPool", {"addresses": ["192.0.2.0/24", "2001:db8::1-2001:db8::9"]}),
        config.IPAddressPool,
    )
    assert pool.ref == "IPAddressPool metallb/pool-a"
    assert pool.pool_name == "pool-a"
    assert [r.text for r in pool.spec.addresses] == ["192.0.2.0/24", "2001:db8::1-2001:db8::9"]
    assert pool.spec.auto_assign is True
    assert pool.spec.avoid_buggy_ips is False
    assert pool.spec.service_allocation is None
    assert pool.status == config.IPAddressPoolStatus()


def test_ip_address_pool_with_every_field() -> None:
    raw = obj(
        "IPAddressPool",
        {
            "addresses": ["192.0.2.0/24"],
            "autoAssign": False,
            "avoidBuggyIPs": True,
            "serviceAllocation": {
                "priority": 50,
                "namespaces": ["a", "b"],
                "namespaceSelectors": [{"matchLabels": {"team": "x"}}],
                "serviceSelectors": [
                    {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}
                ],
            },
        },
        status={"assignedIPv4": 3, "assignedIPv6": 0, "availableIPv4": 251, "availableIPv6": 0},
    )
    pool = config.parse_as(raw, config.IPAddressPool)
    allocation = pool.spec.service_allocation
    assert allocation is not None
    assert allocation.priority == 50
    assert allocation.namespaces == ("a", "b")
    assert allocation.namespace_selectors[0].matches({"team": "x"})
    assert allocation.service_selectors[0].matches({"app": "web"})
    assert pool.status.available_ipv4 == 251


def test_brief_example_message() -> None:
    raw = obj("IPAddressPool", {"addresses": ["192.0.2.0/24", "10.0.0.9-10.0.0.1"]})
    assert error_of(raw) == (
        "IPAddressPool metallb/pool-a: spec.addresses[1]: "
        "'10.0.0.9-10.0.0.1' is not a valid range (start after end)"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            obj("IPAddressPool", {"addresses": ["192.0.2.0/24"], "avoidBuggyIps": True}),
            "spec.avoidBuggyIps: unknown field (did you mean 'avoidBuggyIPs'?)",
        ),
        (
            obj("IPAddressPool", {"addresses": ["192.0.2.0/24"], "colour": "red"}),
            "spec.colour: unknown field (known fields: addresses, autoAssign, avoidBuggyIPs, "
            "serviceAllocation)",
        ),
        (obj("IPAddressPool", {}), "spec.addresses: required field is missing"),
        (obj("IPAddressPool"), "spec: required field is missing"),
        (obj("IPAddressPool", {"addresses": "192.0.2.0/24"}), "spec.addresses: expected array"),
        (
            obj("IPAddressPool", {"addresses": ["192.0.2.0/24"], "autoAssign": "false"}),
            "spec.autoAssign: expected bool, got 'false'",
        ),
        (
            obj(
                "IPAddressPool",
                {"addresses": ["192.0.2.0/24"], "serviceAllocation": {"priority": -1}},
            ),
            "spec.serviceAllocation.priority: expected int >= 0, got -1",
        ),
        (
            obj(
                "IPAddressPool",
                {
                    "addresses": ["192.0.2.0/24"],
                    "serviceAllocation": {
                        "serviceSelectors": [
                            {"matchExpressions": [{"key": "a", "operator": "Contains"}]}
                        ]
                    },
                },
            ),
            "spec.serviceAllocation.serviceSelectors[0].matchExpressions[0].operator: "
            "'Contains' is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            obj("IPAddressPool", {"addresses": [42]}),
            "spec.addresses[0]: expected a string, got number",
        ),
        (obj("IPAddressPool", {"addresses": []}, sepc={}), "sepc: unknown field"),
        (
            {"apiVersion": config.V1BETA1, "kind": "IPAddressPool", "spec": {"addresses": []}},
            "IPAddressPool <unnamed>: metadata: required field is missing",
        ),
        (
            obj("BGPPeer", {"myASN": 64500, "peerASN": 64501, "dynamicASN": "inside"}),
            "spec.dynamicASN: 'inside' is not one of 'internal', 'external'",
        ),
        (
            obj("BGPPeer", {"myASN": 64500, "peerAddress": "192.0.2.300"}),
            "spec.peerAddress: '192.0.2.300' is not an IP address",
        ),
        (obj("BGPPeer", {"myASN": 2**32}), "spec.myASN: expected int <= 4294967295, got"),
        (obj("BGPPeer", {"myASN": 1, "peerPort": 0}), "spec.peerPort: expected int >= 1, got 0"),
        (
            obj("BGPPeer", {"myASN": 1, "holdTime": "90"}),
            "spec.holdTime: '90' is not a duration (examples: '90s', '1m30s', '500ms')",
        ),
        (obj("BGPPeer", {"myASN": 1, "keepaliveTime": "-1s"}), "'-1s' is negative"),
        (obj("BFDProfile", {"receiveInterval": 5}), "spec.receiveInterval: expected int >= 10"),
        (obj("BFDProfile", {"transmitInterval": 60001}), "expected int <= 60000"),
        (obj("BFDProfile", {"detectMultiplier": 1}), "spec.detectMultiplier: expected int >= 2"),
        (obj("BFDProfile", {"echoInterval": 9}), "spec.echoInterval: expected int >= 10"),
        (obj("BFDProfile", {"minimumTtl": 255}), "spec.minimumTtl: expected int <= 254"),
        (
            obj("BGPAdvertisement", {"aggregationLength": 33}),
            "spec.aggregationLength: expected int <= 32",
        ),
        (
            obj("BGPAdvertisement", {"aggregationLengthV6": 129}),
            "spec.aggregationLengthV6: expected int <= 128",
        ),
        (
            obj("Community", {"communities": [{"name": "x", "value": "65536:1"}]}),
            "spec.communities[0].value: '65536:1': '65536' is not a 16-bit unsigned number",
        ),
        (
            obj("Community", {"communities": [{"name": "x", "value": "big:1:2:3"}]}),
            "is not a large community",
        ),
        (obj("L2Advertisement", {"interfaces": "eth0"}), "spec.interfaces: expected array"),
        (obj("L2Advertisement", status={"phase": "x"}), "status.phase: unknown field"),
        (
            {"apiVersion": config.V1BETA1, "kind": "AddressPool", "metadata": META},
            "metallb.io/v1beta1/AddressPool is not a kind ironlb serves",
        ),
        (
            {"apiVersion": config.V1BETA1, "kind": "BGPPeer", "metadata": META},
            "metallb.io/v1beta1/BGPPeer is not a kind ironlb serves",
        ),
    ],
)
def test_rejections_name_object_and_field(raw: dict[str, Any], message: str) -> None:
    text = error_of(raw)
    assert message in text
    assert text.startswith(f"{raw['kind']} ")


def test_parse_as_checks_kind_and_api_version() -> None:
    with pytest.raises(config.ConfigError, match="kind: expected 'IPAddressPool'"):
        config.parse_as(obj("BFDProfile"), config.IPAddressPool)
    raw = obj("BGPPeer", {"myASN": 1})
    raw["apiVersion"] = config.V1BETA1
    with pytest.raises(config.ConfigError, match=r"apiVersion: expected 'metallb\.io/v1beta2'"):
        config.parse_as(raw, config.BGPPeer)
    # Without apiVersion/kind (a list item already typed by its list), the kind is the caller's.
    bare = {"metadata": META, "spec": {"addresses": ["192.0.2.0/24"]}}
    assert config.parse_as(bare, config.IPAddressPool).name == "pool-a"


def test_advertisements_defaults() -> None:
    l2 = config.parse_as(obj("L2Advertisement"), config.L2Advertisement)
    assert l2.spec == config.L2AdvertisementSpec()
    assert l2.spec.gratuitous_refresh_interval is None
    bgp = config.parse_as(obj("BGPAdvertisement"), config.BGPAdvertisement)
    assert (bgp.spec.aggregation_length, bgp.spec.aggregation_length_v6) == (32, 128)
    assert bgp.spec.local_pref == 0
    full = config.parse_as(
        obj(
            "L2Advertisement",
            {
                "ipAddressPools": ["a"],
                "ipAddressPoolSelectors": [{"matchLabels": {"k": "v"}}],
                "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "n1"}}],
                "serviceSelectors": [{"matchLabels": {"app": "web"}}],
                "interfaces": ["eth0"],
                "gratuitousRefreshInterval": "30s",
            },
        ),
        config.L2Advertisement,
    )
    assert full.spec.interfaces == ("eth0",)
    assert full.spec.gratuitous_refresh_interval == 30.0


def test_bgp_peer_fields_defaults_and_secret_redaction() -> None:
    peer = config.parse_as(
        obj(
            "BGPPeer",
            {
                "myASN": 64500,
                "peerASN": 64501,
                "peerAddress": "192.0.2.1",
                "sourceAddress": "192.0.2.2",
                "routerID": "192.0.2.2",
                "holdTime": "1m30s",
                "connectTime": "5s",
                "password": "s3cret",
                "passwordSecret": {"name": "bgp-auth", "namespace": "metallb"},
                "bfdProfile": "fast",
                "ebgpMultiHop": True,
                "enableGracefulRestart": True,
                "disableMP": False,
                "dualStackAddressFamily": True,
                "nodeSelectors": [{"matchLabels": {"rack": "1"}}],
            },
        ),
        config.BGPPeer,
    )
    spec = peer.spec
    assert spec.peer_port == 179
    assert spec.hold_time == 90.0
    assert spec.timers() == (90.0, 30.0)
    assert spec.peer_address is not None
    assert str(spec.peer_address.ip) == "192.0.2.1"
    assert "s3cret" not in repr(peer)
    assert spec.password == "s3cret"
    assert spec.password_secret == config.SecretReference(name="bgp-auth", namespace="metallb")
    assert not spec.is_ibgp


@pytest.mark.parametrize(
    ("spec", "ibgp"),
    [
        ({"myASN": 1, "peerASN": 1}, True),
        ({"myASN": 1, "peerASN": 2}, False),
        ({"myASN": 1, "dynamicASN": "internal"}, True),
        ({"myASN": 1, "dynamicASN": "external"}, False),
    ],
)
def test_ibgp(spec: dict[str, Any], ibgp: bool) -> None:
    assert config.parse_as(obj("BGPPeer", spec), config.BGPPeer).spec.is_ibgp is ibgp


@pytest.mark.parametrize(
    ("hold", "keepalive", "timers"),
    [
        (None, None, None),
        ("90s", None, (90.0, 30.0)),
        (None, "10s", (30.0, 10.0)),
        ("9s", "1s", (9.0, 1.0)),
    ],
)
def test_timers_derive_like_metallb(
    hold: str | None, keepalive: str | None, timers: tuple[float, float] | None
) -> None:
    spec: dict[str, Any] = {"myASN": 1, "peerASN": 2}
    if hold:
        spec["holdTime"] = hold
    if keepalive:
        spec["keepaliveTime"] = keepalive
    assert config.parse_as(obj("BGPPeer", spec), config.BGPPeer).spec.timers() == timers


def test_bfd_profile_defaults() -> None:
    spec = config.parse_as(obj("BFDProfile"), config.BFDProfile).spec
    assert (spec.receive_interval, spec.transmit_interval, spec.detect_multiplier) == (300, 300, 3)
    assert (spec.echo_interval, spec.echo_mode, spec.passive_mode, spec.minimum_ttl) == (
        50,
        False,
        False,
        254,
    )


def test_status_kinds() -> None:
    l2 = config.parse(
        obj(
            "ServiceL2Status",
            status={
                "node": "n1",
                "serviceName": "web",
                "serviceNamespace": "default",
                "interfaces": [{"name": "eth0"}],
            },
        )
    )
    assert isinstance(l2, config.ServiceL2Status)
    assert l2.status.interfaces[0].name == "eth0"
    bgp = config.parse(
        obj("ServiceBGPStatus", status={"node": "n1", "serviceName": "web", "peers": ["r1"]})
    )
    assert isinstance(bgp, config.ServiceBGPStatus)
    assert bgp.status.peers == ("r1",)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h1m1s", 3661.0),
        ("100us", 0.0001),
        ("100µs", 0.0001),
        ("2ns", 2e-9),
        ("+3s", 3.0),
    ],
)
def test_durations_follow_go(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1d", "s", "1.s2", "1m 30s", "-5s", "1e3s"])
def test_durations_rejected(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|negative"):
        config.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "parts", "shown"),
    [
        ("65535:65281", (65535, 65281), "65535:65281"),
        ("0:0", (0, 0), "0:0"),
        ("large:4294967295:1:2", (4294967295, 1, 2), "large:4294967295:1:2"),
    ],
)
def test_communities(text: str, parts: tuple[int, ...], shown: str) -> None:
    value = config.parse_community(text)
    assert value.parts == parts
    assert str(value) == shown


def test_community_shapes() -> None:
    with pytest.raises(config.CommunityFormatError):
        config.parse_community("no-export")
    with pytest.raises(ValueError, match="16-bit") as info:
        config.parse_community("1:-1")
    assert not isinstance(info.value, config.CommunityFormatError)
    with pytest.raises(ValueError, match="32-bit"):
        config.parse_community("large:1:2:4294967296")


def pool(name: str, *addrs: str, **metadata: Any) -> config.IPAddressPool:
    raw = obj("IPAddressPool", {"addresses": list(addrs)})
    raw["metadata"] = {"name": name, "namespace": "metallb", **metadata}
    return config.parse_as(raw, config.IPAddressPool)


def test_config_snapshot_by_kind_and_name() -> None:
    community = config.parse_as(
        obj("Community", {"communities": [{"name": "no-advertise", "value": "65535:65282"}]}),
        config.Community,
    )
    cfg = config.Config.from_objects(
        [
            pool("b", "192.0.2.0/25"),
            pool("a", "192.0.2.128/25", labels={"zone": "x"}),
            community,
        ]
    )
    assert list(cfg.pools) == ["a", "b"]
    assert cfg.community_aliases() == {"no-advertise": community_values.Community(0xFFFF_FF02)}
    assert [p.name for p in cfg.selected_pools([], [])] == ["a", "b"]
    assert [p.name for p in cfg.selected_pools(["b", "ghost"], [])] == ["b"]
    zone_x = config.parse_as(
        obj("L2Advertisement", {"ipAddressPoolSelectors": [{"matchLabels": {"zone": "x"}}]}),
        config.L2Advertisement,
    )
    assert [p.name for p in cfg.selected_pools([], zone_x.spec.ip_address_pool_selectors)] == ["a"]
    updated = cfg.with_object(pool("a", "203.0.113.0/24"))
    assert [r.text for r in updated.pools[config.PoolName("a")].spec.addresses] == [
        "203.0.113.0/24"
    ]
    assert list(updated.pools) == ["a", "b"]
    assert updated.communities == cfg.communities
    assert list(cfg.with_object(pool("c", "198.51.100.0/24")).pools) == ["a", "b", "c"]
    with pytest.raises(config.ConfigError, match="IPAddressPool metallb/a has the same name"):
        config.Config.from_objects([pool("a", "192.0.2.0/25"), pool("a", "198.51.100.0/24")])


def test_address_ranges_keep_family() -> None:
    p = pool("mixed", "192.0.2.0/24", "2001:db8::/64")
    assert [r.family for r in p.spec.addresses] == [addresses.Family.V4, addresses.Family.V6]
