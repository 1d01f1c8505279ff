"""Converters of MetalLB's legacy ConfigMap and v1beta1 objects: every converted object parses
and validates as ironlb's model, and every field not converted is reported by its path."""

from pathlib import Path
from typing import Any

import pytest

from ironlb.core import config, migrate, validation

DATA = Path(__file__).resolve().parents[2] / "data" / "migrate"


def load(name: str) -> list[dict[str, Any]]:
    return migrate.load_all((DATA / name).read_text())


def convert_configmap(name: str) -> migrate.Result:
    (cm,) = load(name)
    text = migrate.configmap_data(cm)
    assert text is not None
    return migrate.from_configmap(text, cm["metadata"]["namespace"])


def by_kind(result: migrate.Result) -> dict[tuple[str, str], dict[str, Any]]:
    out = {(o["kind"], o["metadata"]["name"]): o for o in result.objects}
    assert len(out) == len(result.objects), "two objects of one kind with one name"
    return out


def assert_valid(result: migrate.Result) -> config.Config:
    """What ironlb's controller would do with the output: parse each object, then validate."""
    cfg = config.Config.from_objects(config.parse(o) for o in result.objects)  # type: ignore[misc]
    assert validation.blocking(validation.validate(cfg)) == []
    return cfg


def test_layer2_configmap() -> None:
    result = convert_configmap("configmap-layer2.yaml")
    assert result.problems == ()
    objs = by_kind(result)
    assert set(objs) == {
        ("IPAddressPool", "default"),
        ("IPAddressPool", "expensive"),
        ("L2Advertisement", "default"),
        ("L2Advertisement", "expensive"),
    }
    assert objs["IPAddressPool", "default"]["spec"] == {
        "addresses": ["198.18.10.240-198.18.10.250", "2001:db8:10::/120"]
    }
    assert objs["IPAddressPool", "expensive"]["spec"] == {
        "addresses": ["198.18.11.0/24"],
        "autoAssign": False,
        "avoidBuggyIPs": True,
    }
    assert objs["L2Advertisement", "expensive"]["spec"] == {"ipAddressPools": ["expensive"]}
    assert {o["metadata"]["namespace"] for o in result.objects} == {"metallb-system"}
    cfg = assert_valid(result)
    assert cfg.pools[config.PoolName("expensive")].spec.auto_assign is False


def test_bgp_configmap() -> None:
    result = convert_configmap("configmap-bgp.yaml")
    assert result.problems == ()
    objs = by_kind(result)
    assert objs["BGPPeer", "peer-1"] == {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "peer-1", "namespace": "metallb-system"},
        "spec": {
            "peerAddress": "198.18.0.1",
            "peerASN": 64501,
            "myASN": 64500,
            "peerPort": 1179,
            "holdTime": "120s",
            "routerID": "198.18.0.2",
            "sourceAddress": "198.18.0.3",
            "password": "yourPassword",
            "bfdProfile": "full1",
            "nodeSelectors": [
                {
                    "matchLabels": {"rack": "frontend"},
                    "matchExpressions": [
                        {"key": "network-speed", "operator": "NotIn", "values": ["slow"]}
                    ],
                },
                {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/hostname",
                            "operator": "In",
                            "values": ["hostA", "hostB"],
                        }
                    ]
                },
            ],
        },
    }
    assert objs["BGPPeer", "peer-2"]["spec"] == {
        "peerAddress": "2001:db8::1",
        "peerASN": 64502,
        "myASN": 64500,
        "holdTime": "60s",
        "keepaliveTime": "20s",
        "ebgpMultiHop": True,
    }
    assert objs["Community", "bgp-communities"]["spec"] == {
        "communities": [{"name": "no-advertise", "value": "65535:65282"}]
    }
    assert objs["BFDProfile", "full1"]["spec"] == {
        "receiveInterval": 179,
        "transmitInterval": 180,
        "detectMultiplier": 5,
        "echoInterval": 62,
        "echoMode": False,
        "passiveMode": False,
        "minimumTtl": 254,
    }
    # Two advertisements of one pool: one object each; none listed: MetalLB's default one.
    assert objs["BGPAdvertisement", "default-1"]["spec"] == {
        "ipAddressPools": ["default"],
        "aggregationLength": 32,
        "localPref": 100,
        "communities": ["no-advertise"],
    }
    assert objs["BGPAdvertisement", "default-2"]["spec"] == {
        "ipAddressPools": ["default"],
        "aggregationLength": 24,
    }
    assert objs["BGPAdvertisement", "expensive"]["spec"] == {"ipAddressPools": ["expensive"]}
    assert objs["BGPAdvertisement", "v6"]["spec"] == {
        "ipAddressPools": ["v6"],
        "aggregationLengthV6": 64,
        "communities": ["64512:1"],
    }
    assert not any(k == "L2Advertisement" for k, _ in objs)
    cfg = assert_valid(result)
    assert cfg.peers["peer-1"].spec.hold_time == 120


def test_unconvertible_fields_are_named_and_the_rest_converted() -> None:
    result = convert_configmap("configmap-unconvertible.yaml")
    assert sorted(str(p) for p in result.problems) == sorted(
        f"ConfigMap metallb-system/config: {p}"
        for p in (
            "extra-setting: unknown field, not converted",
            "peers[0].hold-tme: unknown field, not converted",
            "peers[1].peer-asn: missing: the peer cannot be converted",
            "address-pools[0].protocol: 'arp' is neither layer2 nor bgp",
            "address-pools[1].bgp-advertisements: a layer2 pool has no BGP advertisements",
            "address-pools[2].name: 'Upper_Case' is not a valid object name"
            " (lowercase DNS subdomain)",
            "address-pools[3].bgp-advertisements[0].local-pref: unknown field, not converted",
        )
    )
    objs = by_kind(result)
    assert set(objs) == {
        ("BGPPeer", "peer-1"),
        ("IPAddressPool", "l2"),
        ("L2Advertisement", "l2"),
        ("IPAddressPool", "good"),
        ("BGPAdvertisement", "good"),
    }
    assert objs["BGPAdvertisement", "good"]["spec"] == {
        "ipAddressPools": ["good"],
        "aggregationLength": 32,
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("address-pools: [", "config: not valid YAML"),
        ("- a\n- b\n", "config: expected a mapping, got list"),
        ("address-pools: {name: x}", "address-pools: expected a list, got dict"),
        (
            "address-pools:\n- name: p\n  protocol: layer2\n  auto-assign: 'no'\n  addresses: []",
            "address-pools[0].auto-assign: 'no' has the wrong type, not converted",
        ),
        (
            "peers:\n- {peer-address: 198.18.0.1, peer-asn: true, my-asn: 1}",
            "peers[0].peer-asn: True has the wrong type, not converted",
        ),
        ("bgp-communities: {a: 1}", "bgp-communities.a: 1 is not a community string"),
        ("bfd-profiles:\n- receive-interval: 10", "bfd-profiles[0].name: missing"),
    ],
)
def test_malformed_configmap(text: str, problem: str) -> None:
    result = migrate.from_configmap(text, "ns")
    assert any(str(p).startswith(f"ConfigMap ns/config: {problem}") for p in result.problems), (
        result.problems
    )


def test_empty_configmap_converts_to_nothing() -> None:
    assert migrate.from_configmap("", "ns") == migrate.Result()


def test_v1beta1_addresspools_and_peers() -> None:
    result = migrate.from_v1beta1(load("addresspools.yaml"))
    assert result.problems == ()
    objs = by_kind(result)
    assert set(objs) == {
        ("IPAddressPool", "first-pool"),
        ("L2Advertisement", "first-pool"),
        ("IPAddressPool", "bgp-pool"),
        ("BGPAdvertisement", "bgp-pool"),
        ("BGPPeer", "sample"),
    }
    assert objs["IPAddressPool", "bgp-pool"]["spec"] == {
        "addresses": ["198.51.100.0/24"],
        "autoAssign": False,
        "avoidBuggyIPs": True,
    }
    assert objs["BGPAdvertisement", "bgp-pool"]["spec"] == {
        "ipAddressPools": ["bgp-pool"],
        "aggregationLength": 32,
        "localPref": 100,
        "communities": ["65535:65282"],
    }
    peer = objs["BGPPeer", "sample"]
    assert peer["apiVersion"] == "metallb.io/v1beta2"
    assert peer["metadata"] == {
        "name": "sample",
        "namespace": "metallb-system",
        "labels": {"site": "lab"},
    }
    assert peer["spec"]["nodeSelectors"] == [{"matchLabels": {"rack": "frontend"}}]
    assert_valid(result)


def test_v1beta1_problems_and_other_objects_passed_over() -> None:
    pool = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "AddressPool",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"protocol": "layer2", "addresses": ["198.18.1.0/24"], "colour": "red"},
    }
    other = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": {}}
    no_spec = {"apiVersion": "metallb.io/v1beta1", "kind": "BGPPeer", "metadata": {"name": "x"}}
    result = migrate.from_v1beta1([pool, other, no_spec])
    assert [str(p) for p in result.problems] == [
        "AddressPool ns/p: spec.colour: unknown field, not converted",
        "BGPPeer metallb-system/x: spec: missing",
    ]
    assert [(o["kind"], o["metadata"]["name"]) for o in result.objects] == [
        ("IPAddressPool", "p"),
        ("L2Advertisement", "p"),
    ]


def test_backup_keeps_what_can_be_applied() -> None:
    live = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {
            "name": "p",
            "namespace": "metallb-system",
            "uid": "u",
            "resourceVersion": "12",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [{}],
            "labels": {"a": "b"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "net",
            },
        },
        "spec": {"addresses": ["198.18.1.0/24"]},
        "status": {"assignedIPv4": 1},
    }
    assert migrate.for_backup(live) == {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {
            "name": "p",
            "namespace": "metallb-system",
            "labels": {"a": "b"},
            "annotations": {"team": "net"},
        },
        "spec": {"addresses": ["198.18.1.0/24"]},
    }
    text = migrate.to_yaml([migrate.for_backup(live), migrate.for_backup(live)])
    assert [d["metadata"]["name"] for d in migrate.load_all(text)] == ["p", "p"]


METALLB_OWNER = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "name": "controller",
    "uid": "1234",
    "controller": True,
}


def test_membership_secret_owned_by_metallb_is_released() -> None:
    secret = {"metadata": {"name": "memberlist", "ownerReferences": [METALLB_OWNER]}}
    assert migrate.foreign_owners(secret) == [METALLB_OWNER]
    assert migrate.membership_secret_patch(secret) == {
        "metadata": {
            "labels": {"app.kubernetes.io/part-of": "ironlb"},
            "ownerReferences": None,
        }
    }


def test_membership_secret_already_ironlbs_is_left_alone() -> None:
    ours = {"metadata": {"labels": {"app.kubernetes.io/part-of": "ironlb"}}}
    assert migrate.membership_secret_patch(ours) is None
    unlabelled = {"metadata": {"name": "memberlist"}}
    assert migrate.membership_secret_patch(unlabelled) == {
        "metadata": {"labels": {"app.kubernetes.io/part-of": "ironlb"}}
    }


def metallb_crd(stored: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "bgppeers.metallb.io", "resourceVersion": "77"},
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "service": {
                            "namespace": "metallb-system",
                            "name": "metallb-webhook-service",
                        }
                    }
                },
            },
            "versions": [
                {"name": "v1beta1", "served": True, "storage": False, "schema": {"s": 1}},
                {"name": "v1beta2", "served": True, "storage": True, "schema": {"s": 2}},
            ],
        },
        "status": {"storedVersions": stored},
    }


def test_crd_takeover_problem() -> None:
    assert migrate.crd_takeover_problem(metallb_crd(["v1beta2"])) == (
        "bgppeers.metallb.io is MetalLB's, with a conversion webhook to Service"
        " metallb-system/metallb-webhook-service"
    )
    plain = {"metadata": {"name": "ipaddresspools.metallb.io"}, "spec": {}}
    assert "not ironlb's" in (migrate.crd_takeover_problem(plain) or "")
    ours = {"metadata": {"name": "x", "labels": {"app.kubernetes.io/part-of": "ironlb"}}}
    assert migrate.crd_takeover_problem(ours) is None


def test_crd_replacement_keeps_stored_versions() -> None:
    ours = {
        "metadata": {
            "name": "bgppeers.metallb.io",
            "labels": {"app.kubernetes.io/part-of": "ironlb"},
        },
        "spec": {
            "conversion": {"strategy": "None"},
            "versions": [{"name": "v1beta2", "served": True, "storage": True, "schema": {"s": 3}}],
        },
    }
    only_v2 = migrate.crd_replacement(metallb_crd(["v1beta2"]), ours)
    assert only_v2["metadata"]["resourceVersion"] == "77"
    assert only_v2["spec"] == ours["spec"]
    both = migrate.crd_replacement(metallb_crd(["v1beta1", "v1beta2"]), ours)
    assert both["spec"]["versions"] == [
        {"name": "v1beta2", "served": True, "storage": True, "schema": {"s": 3}},
        {"name": "v1beta1", "served": True, "storage": False, "schema": {"s": 1}},
    ]
    assert "resourceVersion" not in ours["metadata"], "the input is not changed"
