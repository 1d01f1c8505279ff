from typing import Any

from ironlb.core import admission, config

NS = "metallb-system"


def pool(name: str, *addresses: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"addresses": list(addresses), **spec},
    }


def parsed(*raws: dict[str, Any]) -> list[config.ConfigKind]:
    out = []
    for raw in raws:
        obj = config.parse(raw)
        assert isinstance(obj, config.ConfigKind)
        out.append(obj)
    return out


def review(
    current: list[config.ConfigKind],
    raw: dict[str, Any] | None,
    operation: str = "CREATE",
    **where: str,
) -> admission.Verdict:
    meta = (raw or {}).get("metadata", {})
    args = {
        "kind": (raw or {}).get("kind", ""),
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", NS),
        **where,
    }
    return admission.review(current, operation, raw, expected_namespace=NS, **args)


def test_a_valid_pool_is_admitted() -> None:
    assert review([], pool("a", "192.0.2.0/28")).allowed


def test_an_overlapping_pool_is_refused_naming_both_pools_and_the_field() -> None:
    current = parsed(pool("a", "192.0.2.0/28"))
    verdict = review(current, pool("b", "192.0.2.8-192.0.2.20"))
    assert not verdict.allowed
    assert "IPAddressPool metallb-system/b" in verdict.message
    assert "spec.addresses" in verdict.message
    assert "metallb-system/a" in verdict.message


def test_updating_a_pool_does_not_overlap_with_its_own_old_version() -> None:
    current = parsed(pool("a", "192.0.2.0/28"))
    assert review(current, pool("a", "192.0.2.0/27"), "UPDATE").allowed


def test_unparseable_objects_are_refused_with_the_field() -> None:
    verdict = review([], pool("a", "192.0.2.9-192.0.2.1"))
    assert not verdict.allowed
    assert "spec.addresses[0]" in verdict.message


def test_objects_outside_the_configuration_namespace_are_refused() -> None:
    raw = pool("a", "192.0.2.0/28")
    raw["metadata"]["namespace"] = "default"
    verdict = review([], raw, namespace="default")
    assert not verdict.allowed
    assert "only from namespace 'metallb-system'" in verdict.message


def test_existing_problems_do_not_block_an_unrelated_fix() -> None:
    # Two overlapping pools got in while the webhook was down; removing the overlap must work.
    current = parsed(pool("a", "192.0.2.0/28"), pool("b", "192.0.2.8/29"))
    assert review(current, pool("b", "198.51.100.0/29"), "UPDATE").allowed
    assert not review(current, pool("c", "192.0.2.1/32")).allowed


def test_deleting_a_bfd_profile_in_use_is_refused() -> None:
    profile = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "BFDProfile",
        "metadata": {"name": "fast", "namespace": NS},
        "spec": {},
    }
    peer = {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "r1", "namespace": NS},
        "spec": {
            "myASN": 64500,
            "peerASN": 64501,
            "peerAddress": "198.18.0.1",
            "bfdProfile": "fast",
        },
    }
    current = parsed(profile, peer)
    verdict = review(current, None, "DELETE", kind="BFDProfile", name="fast")
    assert not verdict.allowed
    assert "r1" in verdict.message
    assert review(parsed(profile), None, "DELETE", kind="BFDProfile", name="fast").allowed
    assert review(current, None, "DELETE", kind="IPAddressPool", name="x").allowed
