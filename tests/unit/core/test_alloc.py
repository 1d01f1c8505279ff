"""Allocation rules, one table or case per rule of REFERENCE.md "Allocation (controller)"."""

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest

from ironlb.core import alloc, config, model

IPS = "metallb.io/loadBalancerIPs"
POOL = "metallb.io/address-pool"
SHARED = "metallb.io/allow-shared-ip"
V4_ONLY = ("10.96.0.10",)
V6_ONLY = ("fd00::10",)
DUAL = ("10.96.0.10", "fd00::10")


def pool(
    name: str,
    *addresses: str,
    auto_assign: bool = True,
    avoid_buggy: bool = False,
    allocation: Mapping[str, Any] | None = None,
) -> config.IPAddressPool:
    spec: dict[str, Any] = {
        "addresses": list(addresses),
        "autoAssign": auto_assign,
        "avoidBuggyIPs": avoid_buggy,
    }
    if allocation is not None:
        spec["serviceAllocation"] = dict(allocation)
    raw = {"metadata": {"name": name, "namespace": "metallb"}, "spec": spec}
    return config.parse_as(raw, config.IPAddressPool)


def service(
    name: str,
    namespace: str = "default",
    *,
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    ports: Sequence[tuple[str, int]] = (("TCP", 80),),
    cluster_ips: Sequence[str] = V4_ONLY,
    policy: str = "SingleStack",
    families: Sequence[str] | None = None,
    etp: str = "Cluster",
    selector: Mapping[str, str] | None = None,
    load_balancer_ip: str = "",
    lb_class: str | None = None,
    kind: str = "LoadBalancer",
) -> model.Service:
    spec: dict[str, Any] = {
        "type": kind,
        "clusterIP": cluster_ips[0] if cluster_ips else "",
        "clusterIPs": list(cluster_ips),
        "ipFamilyPolicy": policy,
        "ipFamilies": list(families)
        if families is not None
        else ["IPv6" if ":" in ip else "IPv4" for ip in cluster_ips],
        "ports": [{"protocol": proto, "port": port} for proto, port in ports],
        "externalTrafficPolicy": etp,
        "selector": dict(selector or {"app": name}),
        "loadBalancerIP": load_balancer_ip,
    }
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    metadata = {
        "name": name,
        "namespace": namespace,
        "annotations": dict(annotations or {}),
        "labels": dict(labels or {}),
    }
    return model.parse_service({"metadata": metadata, "spec": spec})


def allocator(*pools: config.IPAddressPool) -> alloc.Allocator:
    return alloc.Allocator(config.Config.from_objects(pools))


def ips_of(result: alloc.Result) -> list[str]:
    assert isinstance(result, alloc.Assigned), result
    return [str(ip) for ip in result.allocation.ips]


def pool_of(result: alloc.Result) -> str:
    assert isinstance(result, alloc.Assigned), result
    return result.allocation.pool


def reason_of(result: alloc.Result) -> str:
    assert isinstance(result, alloc.Failed), result
    return result.reason


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# Which Services are handled.


@pytest.mark.parametrize(
    ("kind", "service_class", "controller_class", "handled"),
    [
        ("LoadBalancer", None, None, True),
        ("NodePort", None, None, False),
        ("LoadBalancer", "other.io/lb", None, False),
        ("LoadBalancer", None, "ironlb.io/lb", False),
        ("LoadBalancer", "ironlb.io/lb", "ironlb.io/lb", True),
    ],
)
def test_is_handled(
    kind: str, service_class: str | None, controller_class: str | None, handled: bool
) -> None:
    svc = service("s", kind=kind, lb_class=service_class)
    assert alloc.is_handled(svc, controller_class) is handled


# Within a pool.


def test_lowest_free_address_in_the_order_entries_are_written() -> None:
    a = allocator(pool("p", "192.0.2.128/30", "192.0.2.0/30"))
    assert ips_of(a.assign(service("s1"), {})) == ["192.0.2.128"]
    assert ips_of(a.assign(service("s2"), {})) == ["192.0.2.129"]
    a.release(model.ServiceKey("default/s1"))
    assert ips_of(a.assign(service("s3"), {})) == ["192.0.2.128"]
    for n in (4, 5, 6):
        a.assign(service(f"s{n}"), {})
    assert ips_of(a.assign(service("s7"), {})) == ["192.0.2.1"]


def test_avoid_buggy_ips_skips_every_dot_0_and_dot_255() -> None:
    a = allocator(pool("p", "192.0.2.255-192.0.3.1", avoid_buggy=True))
    assert ips_of(a.assign(service("s1"), {})) == ["192.0.3.1"]
    assert isinstance(a.assign(service("s2"), {}), alloc.Failed)
    assert a.pool_stats(config.PoolName("p")) == (1, 0, 0, 0)
    # An explicit request for a buggy address is refused the way MetalLB does.
    buggy = a.assign(service("s3", annotations={IPS: "192.0.3.0"}), {})
    assert reason_of(buggy) == (
        "cannot use 192.0.3.0: 192.0.3.0 is in IPAddressPool p, whose avoidBuggyIPs excludes "
        "addresses ending in .0 and .255"
    )


def test_pool_stats_count_without_enumerating() -> None:
    a = allocator(
        pool("big", "198.18.0.0/16", "2001:db8::/64", avoid_buggy=True),
        pool("tiny", "192.0.2.8/30"),
    )
    a.assign(service("v4"), {})
    a.assign(service("v6", cluster_ips=V6_ONLY), {})
    assert a.pool_stats(config.PoolName("big")) == alloc.PoolStats(1, 1, 65536 - 512 - 1, 2**64 - 1)
    assert a.pool_stats(config.PoolName("tiny")) == alloc.PoolStats(0, 0, 4, 0)


# autoAssign and explicit requests.


def test_auto_assign_false_pools_only_on_explicit_request() -> None:
    a = allocator(pool("manual", "192.0.2.0/30", auto_assign=False))
    assert reason_of(a.assign(service("s1"), {})) == (
        "every IPAddressPool has autoAssign: false: request one with metallb.io/address-pool "
        "or an address with metallb.io/loadBalancerIPs"
    )
    assert ips_of(a.assign(service("s2", annotations={POOL: "manual"}), {})) == ["192.0.2.0"]
    assert ips_of(a.assign(service("s3", annotations={IPS: "192.0.2.3"}), {})) == ["192.0.2.3"]


def test_requested_addresses_single_and_dual_stack() -> None:
    a = allocator(pool("p", "192.0.2.0/24", "2001:db8::/64"))
    assert ips_of(a.assign(service("ann", annotations={IPS: "192.0.2.77"}), {})) == ["192.0.2.77"]
    assert ips_of(a.assign(service("spec", load_balancer_ip="192.0.2.78"), {})) == ["192.0.2.78"]
    dual = service(
        "dual",
        annotations={IPS: "192.0.2.79, 2001:db8::79"},
        cluster_ips=DUAL,
        policy="RequireDualStack",
    )
    assert ips_of(a.assign(dual, {})) == ["192.0.2.79", "2001:db8::79"]
    old = service("old", annotations={"metallb.universe.tf/loadBalancerIPs": "192.0.2.80"})
    assert ips_of(a.assign(old, {})) == ["192.0.2.80"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        (
            {"annotations": {IPS: "192.0.2.5"}, "load_balancer_ip": "192.0.2.6"},
            "the Service sets both metallb.io/loadBalancerIPs and spec.loadBalancerIP: keep one",
        ),
        (
            {"annotations": {IPS: "192.0.2.500"}},
            "invalid metallb.io/loadBalancerIPs: '192.0.2.500' is not an IP address",
        ),
        (
            {"annotations": {IPS: "192.0.2.5,192.0.2.6"}},
            "invalid metallb.io/loadBalancerIPs: metallb.io/loadBalancerIPs must be one address, "
            "or one IPv4 and one IPv6 address (got 192.0.2.5, 192.0.2.6)",
        ),
        (
            {"annotations": {IPS: "203.0.113.5"}},
            "cannot use 203.0.113.5: 203.0.113.5 is not in any IPAddressPool",
        ),
        (
            {"annotations": {IPS: "2001:db8::5"}},
            "requested 2001:db8::5 (IPv6) does not match the Service's IP family (IPv4, from its "
            "clusterIPs)",
        ),
        (
            {"annotations": {IPS: "192.0.2.5", POOL: "other"}},
            "requested 192.0.2.5 is in IPAddressPool p, not in IPAddressPool other named by "
            "metallb.io/address-pool",
        ),
        (
            {"annotations": {POOL: "ghost"}},
            "metallb.io/address-pool names IPAddressPool ghost, which does not exist "
            "(pools: other, p)",
        ),
        (
            {"cluster_ips": ()},
            "the Service has no ClusterIP yet, so its IP family is not known",
        ),
    ],
)
def test_request_failures_are_explained(kwargs: dict[str, Any], reason: str) -> None:
    a = allocator(pool("p", "192.0.2.0/24"), pool("other", "198.51.100.0/24"))
    assert reason_of(a.assign(service("s", **kwargs), {})) == reason


def test_metallb_io_annotation_wins_even_when_empty() -> None:
    a = allocator(pool("p", "192.0.2.0/24"), pool("q", "198.51.100.0/24"))
    svc = service("s", annotations={POOL: "", "metallb.universe.tf/address-pool": "q"})
    assert pool_of(a.assign(svc, {})) == "p"
    deprecated = service("t", annotations={"metallb.universe.tf/address-pool": "q"})
    assert pool_of(a.assign(deprecated, {})) == "q"


def test_requested_address_held_by_another_service_names_the_holder() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("first"), {})
    second = service("second", annotations={IPS: "192.0.2.0"})
    assert reason_of(a.assign(second, {})) == (
        "cannot use 192.0.2.0: 192.0.2.0 is held by default/first, which does not allow "
        "sharing (no allow-shared-ip annotation)"
    )


def test_no_pools() -> None:
    a = allocator()
    assert reason_of(a.assign(service("s"), {})) == "no IPAddressPool is configured"


# serviceAllocation.


def test_service_allocation_priority_then_name_then_fallback() -> None:
    a = allocator(
        pool("fallback", "198.51.100.0/24"),
        pool("unset", "192.0.2.0/30", allocation={}),  # priority 0 matches all, tried last
        pool("second", "192.0.2.4/32", allocation={"priority": 20}),
        pool("first-b", "192.0.2.8/32", allocation={"priority": 10}),
        pool("first-a", "192.0.2.12/32", allocation={"priority": 10}),
    )
    order = [pool_of(a.assign(service(f"s{i}"), {})) for i in range(9)]
    assert order == [
        "first-a",  # equal priority: by name (MetalLB: random)
        "first-b",
        "second",
        "unset",
        "unset",
        "unset",
        "unset",
        "fallback",  # pinned pools exhausted
        "fallback",
    ]


def test_service_allocation_namespaces_selectors() -> None:
    a = allocator(
        pool("general", "198.51.100.0/24"),
        pool("team-a", "192.0.2.0/28", allocation={"namespaces": ["a"]}),
        pool(
            "gold",
            "192.0.2.16/28",
            allocation={"namespaceSelectors": [{"matchLabels": {"tier": "gold"}}]},
        ),
        pool(
            "web",
            "192.0.2.32/28",
            allocation={
                "priority": 1,
                "serviceSelectors": [{"matchLabels": {"app": "web"}}],
            },
        ),
    )
    assert pool_of(a.assign(service("s1", "a"), {})) == "team-a"
    assert pool_of(a.assign(service("s2", "b"), {"tier": "gold"})) == "gold"
    assert pool_of(a.assign(service("s3", "b"), {"tier": "silver"})) == "general"
    assert pool_of(a.assign(service("s4", "a", labels={"app": "web"}), {})) == "web"
    # A pool reserved by serviceAllocation is never a fallback for others, even by request.
    refused = a.assign(service("s5", "c", annotations={POOL: "team-a"}), {})
    assert reason_of(refused) == (
        "IPAddressPool team-a refuses the Service: its serviceAllocation does not select "
        "namespace 'c'"
    )


def test_service_allocation_can_be_explicitly_requested_with_auto_assign_false() -> None:
    a = allocator(pool("p", "192.0.2.0/30", auto_assign=False, allocation={"namespaces": ["a"]}))
    assert reason_of(a.assign(service("s", "a"), {})).startswith("every IPAddressPool has")
    assert pool_of(a.assign(service("s", "a", annotations={POOL: "p"}), {})) == "p"


def test_exhaustion_message_lists_each_pool() -> None:
    a = allocator(
        pool("a", "192.0.2.0/30"),
        pool("b", "198.51.100.0/30", auto_assign=False),
        pool("c", "203.0.113.0/30", allocation={"namespaces": ["other"]}),
        pool("d", "2001:db8::/64"),
    )
    for n in range(4):
        a.assign(service(f"s{n}"), {})
    assert reason_of(a.assign(service("late"), {})) == (
        "no IPAddressPool has a free IPv4 address (pools: a (0 of 4 IPv4 free), "
        "b (autoAssign: false), c (serviceAllocation does not select namespace 'default'), "
        "d (no IPv4 addresses))"
    )


# Sharing.


def shared(name: str, key: str, *ports: tuple[str, int], **kwargs: Any) -> model.Service:
    return service(name, annotations={SHARED: key}, ports=ports, **kwargs)


def test_same_key_disjoint_ports_share_the_lowest_address() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    assert ips_of(a.assign(shared("dns-tcp", "dns", ("TCP", 53)), {})) == ["192.0.2.0"]
    assert ips_of(a.assign(shared("dns-udp", "dns", ("UDP", 53)), {})) == ["192.0.2.0"]
    assert ips_of(a.assign(shared("dns-tcp2", "dns", ("TCP", 53)), {})) == ["192.0.2.1"]
    assert ips_of(a.assign(shared("other", "web", ("TCP", 80)), {})) == ["192.0.2.2"]
    assert ips_of(a.assign(service("plain"), {})) == ["192.0.2.3"]
    assert a.holders(ip("192.0.2.0")) == {"default/dns-tcp", "default/dns-udp"}
    assert a.pool_stats(config.PoolName("p")).assigned_ipv4 == 4
    a.release(model.ServiceKey("default/dns-tcp"))
    assert a.holders(ip("192.0.2.0")) == {"default/dns-udp"}
    assert a.pool_stats(config.PoolName("p")).assigned_ipv4 == 4


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (
            shared("b", "k", ("TCP", 80)),
            "cannot use 192.0.2.0: 192.0.2.0 is held by default/a, which already uses port TCP/80",
        ),
        (
            shared("b", "other", ("TCP", 81)),
            "cannot use 192.0.2.0: 192.0.2.0 is held by default/a with allow-shared-ip 'k', "
            "not 'other'",
        ),
        (
            service("b", ports=[("TCP", 81)]),
            "cannot use 192.0.2.0: 192.0.2.0 is held by default/a; to share it, give this "
            "Service the annotation metallb.io/allow-shared-ip: 'k'",
        ),
        (
            shared("b", "k", ("TCP", 81), etp="Local", selector={"app": "a"}),
            "cannot use 192.0.2.0: 192.0.2.0 is held by default/a: Services sharing an address "
            "with externalTrafficPolicy Local must select the same pods (and all share it with "
            "the same policy)",
        ),
    ],
)
def test_sharing_refusals(second: model.Service, reason: str) -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(shared("a", "k", ("TCP", 80)), {})
    requested = model.Service(
        metadata=model.ObjectMeta(
            name=second.name,
            namespace=second.namespace,
            annotations={**second.metadata.annotations, IPS: "192.0.2.0"},
        ),
        spec=second.spec,
    )
    assert reason_of(a.assign(requested, {})) == reason
    # Without an explicit request, it simply gets the next address.
    assert ips_of(a.assign(second, {})) == ["192.0.2.1"]


def test_local_traffic_policy_shares_only_with_the_same_pods() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    local = {"etp": "Local", "selector": {"app": "dns"}}
    assert ips_of(a.assign(shared("tcp", "dns", ("TCP", 53), **local), {})) == ["192.0.2.0"]
    assert ips_of(a.assign(shared("udp", "dns", ("UDP", 53), **local), {})) == ["192.0.2.0"]
    other = shared("metrics", "dns", ("TCP", 9153), etp="Local", selector={"app": "exporter"})
    assert ips_of(a.assign(other, {})) == ["192.0.2.1"]


# Dual-stack.


def test_require_dual_stack_needs_one_pool_with_both_families() -> None:
    a = allocator(pool("a-v4", "192.0.2.0/24"), pool("b-v6", "2001:db8::/64"))
    svc = service("s", cluster_ips=DUAL, policy="RequireDualStack")
    assert reason_of(a.assign(svc, {})) == (
        "no IPAddressPool has free IPv4 and IPv6 addresses "
        "(pools: a-v4 (256 of 256 IPv4 free, no IPv6 addresses), "
        "b-v6 (no IPv4 addresses, 18446744073709551616 of 18446744073709551616 IPv6 free))"
    )
    b = allocator(pool("a-v4", "192.0.2.0/24"), pool("c-both", "198.51.100.0/24", "2001:db8::/64"))
    assert ips_of(b.assign(svc, {})) == ["198.51.100.0", "2001:db8::"]
    assert pool_of(b.assign(svc, {})) == "c-both"


def test_prefer_dual_stack_takes_one_family_then_adds_the_other() -> None:
    a = allocator(pool("p", "192.0.2.0/31"))
    svc = service("s", cluster_ips=DUAL, policy="PreferDualStack")
    assert ips_of(a.assign(svc, {})) == ["192.0.2.0"]
    kept = a.assign(svc, {})
    assert isinstance(kept, alloc.Assigned)
    assert (kept.changed, kept.warning) == (False, None)  # a v4-only pool is no problem
    # The pool gains IPv6: the next reconcile adds it, keeping the IPv4 address.
    grown_pool = pool("p", "192.0.2.0/31", "2001:db8::/127")
    assert a.update_config(config.Config.from_objects([grown_pool])) == []
    a.assign(service("taker", cluster_ips=V6_ONLY), {})
    a.assign(service("taker2", cluster_ips=V6_ONLY), {})
    full = a.assign(svc, {})
    assert isinstance(full, alloc.Assigned)
    assert full.warning == (
        "PreferDualStack: IPAddressPool p has no free IPv6 address for the second family yet"
    )
    a.release(model.ServiceKey("default/taker"))
    grown = a.assign(svc, {})
    assert isinstance(grown, alloc.Assigned)
    assert grown.changed
    assert ips_of(grown) == ["192.0.2.0", "2001:db8::"]


def test_prefer_dual_stack_primary_family_first_when_no_pool_has_both() -> None:
    a = allocator(pool("a-v4", "192.0.2.0/24"), pool("b-v6", "2001:db8::/64"))
    v6_first = service(
        "s",
        cluster_ips=("fd00::10", "10.96.0.10"),
        families=["IPv6", "IPv4"],
        policy="PreferDualStack",
    )
    assert ips_of(a.assign(v6_first, {})) == ["2001:db8::"]
    v4_first = service("t", cluster_ips=DUAL, policy="PreferDualStack")
    assert ips_of(a.assign(v4_first, {})) == ["192.0.2.0"]


def test_prefer_dual_stack_on_a_single_stack_service_stays_single() -> None:
    # MetalLB would add IPv6 and clear it again on the next reconcile; ironlb does not flap.
    a = allocator(pool("p", "192.0.2.0/24", "2001:db8::/64"))
    svc = service("s", cluster_ips=V4_ONLY, policy="PreferDualStack")
    assert ips_of(a.assign(svc, {})) == ["192.0.2.0"]
    again = a.assign(svc, {})
    assert isinstance(again, alloc.Assigned)
    assert (ips_of(again), again.changed) == (["192.0.2.0"], False)


def test_single_stack_follows_the_cluster_ip_family() -> None:
    a = allocator(pool("p", "192.0.2.0/24", "2001:db8::/64"))
    assert ips_of(a.assign(service("v6", cluster_ips=V6_ONLY), {})) == ["2001:db8::"]
    assert ips_of(a.assign(service("v4"), {})) == ["192.0.2.0"]


# Keeping and clearing.


def test_no_churn_on_reconcile() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("s1"), {})
    assert ips_of(a.assign(service("s2"), {})) == ["192.0.2.1"]
    a.release(model.ServiceKey("default/s1"))
    again = a.assign(service("s2"), {})
    assert isinstance(again, alloc.Assigned)
    assert (ips_of(again), again.changed, again.cleared) == (["192.0.2.1"], False, None)


def test_changed_pool_annotation_moves_the_service() -> None:
    a = allocator(pool("p", "192.0.2.0/24"), pool("q", "198.51.100.0/24"))
    a.assign(service("s"), {})
    moved = a.assign(service("s", annotations={POOL: "q"}), {})
    assert isinstance(moved, alloc.Assigned)
    assert ips_of(moved) == ["198.51.100.0"]
    assert moved.cleared == (
        "192.0.2.0 from IPAddressPool p is no longer valid: metallb.io/address-pool now asks "
        "for IPAddressPool q"
    )


def test_changed_requested_address_moves_the_service() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("s", annotations={IPS: "192.0.2.10"}), {})
    moved = a.assign(service("s", annotations={IPS: "192.0.2.20"}), {})
    assert isinstance(moved, alloc.Assigned)
    assert ips_of(moved) == ["192.0.2.20"]
    assert moved.cleared is not None
    assert moved.cleared.endswith("the Service now asks for 192.0.2.20")


def test_invalid_new_request_keeps_the_address_and_warns() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("s"), {})
    kept = a.assign(service("s", annotations={IPS: "not-an-ip"}), {})
    assert isinstance(kept, alloc.Assigned)
    assert (ips_of(kept), kept.changed) == (["192.0.2.0"], False)
    assert kept.warning == "invalid metallb.io/loadBalancerIPs: 'not-an-ip' is not an IP address"


def test_namespace_no_longer_selected_moves_the_service() -> None:
    a = allocator(
        pool(
            "gold", "192.0.2.0/24", allocation={"namespaceSelectors": [{"matchLabels": {"t": "g"}}]}
        ),
        pool("general", "198.51.100.0/24"),
    )
    assert pool_of(a.assign(service("s"), {"t": "g"})) == "gold"
    moved = a.assign(service("s"), {"t": "x"})
    assert pool_of(moved) == "general"
    assert isinstance(moved, alloc.Assigned)
    assert moved.cleared == (
        "192.0.2.0 from IPAddressPool gold is no longer valid: IPAddressPool gold no longer "
        "accepts the Service: its serviceAllocation does not select namespace 'default'"
    )


def test_new_port_conflicting_with_a_sharer_moves_the_service() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(shared("a", "k", ("TCP", 80)), {})
    a.assign(shared("b", "k", ("TCP", 81)), {})
    moved = a.assign(shared("b", "k", ("TCP", 80)), {})
    assert ips_of(moved) == ["192.0.2.1"]
    assert a.holders(ip("192.0.2.0")) == {"default/a"}


def test_sole_holder_may_change_its_sharing_key_in_place() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(shared("a", "k", ("TCP", 80)), {})
    again = a.assign(shared("a", "other", ("TCP", 80)), {})
    assert isinstance(again, alloc.Assigned)
    assert (ips_of(again), again.changed) == (["192.0.2.0"], False)
    assert ips_of(a.assign(shared("b", "other", ("TCP", 81)), {})) == ["192.0.2.0"]


def test_update_config_drops_only_uncovered_addresses() -> None:
    a = allocator(pool("p", "192.0.2.0/24"), pool("q", "198.51.100.0/24"))
    a.assign(service("in-p"), {})
    a.assign(service("in-q", annotations={POOL: "q"}), {})
    a.assign(service("p-high", annotations={IPS: "192.0.2.200"}), {})
    renamed = config.Config.from_objects([pool("p2", "192.0.2.0/25"), pool("q", "198.51.100.0/24")])
    assert a.update_config(renamed) == ["default/p-high"]
    assert a.snapshot() == {
        "default/in-p": alloc.Allocation(config.PoolName("p2"), (ip("192.0.2.0"),)),
        "default/in-q": alloc.Allocation(config.PoolName("q"), (ip("198.51.100.0"),)),
    }
    # The survivor's pool was renamed, not its address: the next assign keeps it.
    kept = a.assign(service("in-p"), {})
    assert isinstance(kept, alloc.Assigned)
    assert not kept.changed


def test_update_config_reports_dropped_services_and_buggy_addresses() -> None:
    a = allocator(pool("p", "192.0.2.0/24"), pool("q", "198.51.100.0/24"))
    a.assign(service("zero"), {})  # 192.0.2.0
    a.assign(service("one"), {})
    a.assign(service("gone", annotations={POOL: "q"}), {})
    dropped = a.update_config(
        config.Config.from_objects([pool("p", "192.0.2.0/24", avoid_buggy=True)])
    )
    assert dropped == ["default/gone", "default/zero"]
    assert list(a.snapshot()) == ["default/one"]
    assert ips_of(a.assign(service("zero"), {})) == ["192.0.2.2"]


def test_update_config_refuses_overlapping_pools_and_changes_nothing() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("s"), {})
    before = a.snapshot()
    overlapping = config.Config.from_objects([pool("p", "192.0.2.0/24"), pool("q", "192.0.2.9/32")])
    with pytest.raises(ValueError, match="overlap"):
        a.update_config(overlapping)
    assert a.snapshot() == before
    assert ips_of(a.assign(service("t"), {})) == ["192.0.2.1"]


# Restart.


def test_reserve_restores_what_assign_would_not_choose_today() -> None:
    a = allocator(
        pool("manual", "192.0.2.0/24", auto_assign=False),
        pool("team", "198.51.100.0/24", allocation={"namespaces": ["team"]}),
    )
    svc = service("s")
    assert ips_of(a.reserve(svc, [ip("192.0.2.200")])) == ["192.0.2.200"]
    # No pool it could be auto-assigned from, yet it keeps the address on reconcile.
    kept = a.assign(svc, {})
    assert isinstance(kept, alloc.Assigned)
    assert not kept.changed
    # A serviceAllocation that excludes it: reserved now, moved by the reconcile that follows.
    other = service("t")
    assert ips_of(a.reserve(other, [ip("198.51.100.7")])) == ["198.51.100.7"]
    moved = a.assign(other, {})
    assert isinstance(moved, alloc.Failed)
    assert moved.cleared == (
        "198.51.100.7 from IPAddressPool team is no longer valid: IPAddressPool team no longer "
        "accepts the Service: its serviceAllocation does not select namespace 'default'"
    )
    assert moved.reason == (
        "no IPAddressPool has a free IPv4 address (pools: manual (autoAssign: false), "
        "team (serviceAllocation does not select namespace 'default'))"
    )


def test_reserve_refuses_duplicates_and_strangers() -> None:
    a = allocator(pool("p", "192.0.2.0/24", "2001:db8::/64"), pool("q", "198.51.100.0/24"))
    a.reserve(service("first"), [ip("192.0.2.5")])
    assert reason_of(a.reserve(service("second"), [ip("192.0.2.5")])) == (
        "192.0.2.5 is held by default/first, which does not allow sharing "
        "(no allow-shared-ip annotation)"
    )
    assert reason_of(a.reserve(service("x"), [ip("203.0.113.1")])) == (
        "203.0.113.1 is not in any IPAddressPool"
    )
    assert reason_of(a.reserve(service("y"), [ip("192.0.2.6"), ip("198.51.100.6")])) == (
        "status.loadBalancer.ingress must be one address, or one IPv4 and one IPv6 address "
        "(got 192.0.2.6, 198.51.100.6)"
    )
    dual = service("z", cluster_ips=DUAL, policy="RequireDualStack")
    assert ips_of(a.reserve(dual, [ip("192.0.2.7"), ip("2001:db8::7")])) == [
        "192.0.2.7",
        "2001:db8::7",
    ]
    assert reason_of(a.reserve(service("w"), [])) == "no address to reserve"


def test_a_refused_reservation_leaves_nothing_held() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.reserve(service("s"), [ip("192.0.2.9")])
    refused = a.reserve(service("s"), [ip("203.0.113.9")])
    assert isinstance(refused, alloc.Failed)
    assert refused.cleared == (
        "192.0.2.9 from IPAddressPool p was released: 203.0.113.9 is not in any IPAddressPool"
    )
    assert a.snapshot() == {}


def test_requested_pool_exhausted() -> None:
    a = allocator(pool("p", "192.0.2.0/31"), pool("q", "198.51.100.0/24"))
    for name in ("s1", "s2"):
        a.assign(service(name, annotations={POOL: "p"}), {})
    assert reason_of(a.assign(service("s3", annotations={POOL: "p"}), {})) == (
        "IPAddressPool p does not have a free IPv4 address (0 of 2 IPv4 free)"
    )


def test_reserve_then_assign_never_moves_an_address() -> None:
    services = [service(f"s{i}") for i in range(6)]
    a = allocator(pool("p", "192.0.2.0/29"))
    for svc in services:
        a.assign(svc, {})
    a.release(model.ServiceKey("default/s2"))
    before = a.snapshot()
    restarted = allocator(pool("p", "192.0.2.0/29"))
    for key, allocation in reversed(list(before.items())):
        svc = next(s for s in services if s.key == key)
        assert isinstance(restarted.reserve(svc, allocation.ips), alloc.Assigned)
    # A pending Service arriving first after the restart cannot take a reserved address.
    assert ips_of(restarted.assign(service("pending"), {})) == ["192.0.2.2"]
    for svc in services:
        if svc.key in before:
            result = restarted.assign(svc, {})
            assert isinstance(result, alloc.Assigned)
            assert not result.changed
    assert {k: v for k, v in restarted.snapshot().items() if k in before} == before


def test_release_and_queries() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("s"), {})
    key = model.ServiceKey("default/s")
    assert a.assignment_of(key) == alloc.Allocation(config.PoolName("p"), (ip("192.0.2.0"),))
    assert str(a.assignment_of(key)) == "192.0.2.0 from IPAddressPool p"
    assert a.release(key) == alloc.Allocation(config.PoolName("p"), (ip("192.0.2.0"),))
    assert a.release(key) is None
    assert a.assignment_of(key) is None
    assert a.holders(ip("192.0.2.0")) == frozenset()
    assert a.pool_stats(config.PoolName("p")).assigned_ipv4 == 0


def test_losing_the_cluster_ip_clears_the_assignment() -> None:
    a = allocator(pool("p", "192.0.2.0/24"))
    a.assign(service("s"), {})
    result = a.assign(service("s", cluster_ips=()), {})
    assert isinstance(result, alloc.Failed)
    assert result.cleared == (
        "192.0.2.0 from IPAddressPool p was released: the Service has no ClusterIP yet, so its "
        "IP family is not known"
    )
    assert a.snapshot() == {}


def test_what_a_service_contends_for() -> None:
    shared = service(
        "a",
        annotations={
            "metallb.io/allow-shared-ip": "k",
            "metallb.io/loadBalancerIPs": "198.51.100.1, 2001:db8::1",
        },
    )
    assert alloc.contended(shared) == {"key:k", "ip:198.51.100.1", "ip:2001:db8::1"}
    legacy = service("b", load_balancer_ip="198.51.100.2")
    assert alloc.contended(legacy) == {"ip:198.51.100.2"}
    garbled = service("c", annotations={"metallb.universe.tf/loadBalancerIPs": "nonsense"})
    assert alloc.contended(garbled) == frozenset()
    assert alloc.contended(service("d")) == frozenset()
    shown = model.parse_service(
        {
            "metadata": {"name": "e", "namespace": "default"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.3"}]}},
        }
    )
    assert alloc.contended(shown) == {"ip:198.51.100.3"}


def _shown(svc: model.Service, *ips: str) -> model.Service:
    """`svc` with `ips` in status.loadBalancer.ingress (what a restart finds)."""
    ingress = tuple(model.LoadBalancerIngress(ip=i) for i in ips)
    return msgspec.structs.replace(
        svc, status=model.ServiceStatus(model.LoadBalancerStatus(ingress))
    )


def test_a_restart_after_a_key_edit_moves_the_edited_service_not_its_old_sharers() -> None:
    # Five Services shared 192.0.2.1 under k1; "a-edited" (first by name) was re-keyed to k2
    # while no controller ran. Reserving by name alone would keep it and move the other four.
    sharers = [
        _shown(service(f"s{i}", annotations={SHARED: "k1"}, ports=(("TCP", 80 + i),)), "192.0.2.1")
        for i in range(4)
    ]
    edited = _shown(
        service("a-edited", annotations={SHARED: "k2"}, ports=(("TCP", 90),)), "192.0.2.1"
    )
    loner = _shown(service("b-unshared"), "192.0.2.2")
    order = alloc.reservation_order([loner, edited, *reversed(sharers)])
    assert [s.name for s in order] == ["s0", "s1", "s2", "s3", "a-edited", "b-unshared"]
    restarted = allocator(pool("p", "192.0.2.0/29"))
    refused = [
        s.name for s in order if isinstance(restarted.reserve(s, s.ingress_ips), alloc.Failed)
    ]
    assert refused == ["a-edited"]
    # The edited one moves; the four keep their address.
    assert ips_of(restarted.assign(edited, {})) == ["192.0.2.0"]
    for s in sharers:
        result = restarted.assign(s, {})
        assert isinstance(result, alloc.Assigned)
        assert not result.changed


def test_reservation_order_by_the_smallest_group_of_a_services_addresses() -> None:
    # A dual-stack Service keeps its addresses only if both are kept: its group is the smaller.
    dual = _shown(
        service("dual", annotations={SHARED: "k"}, cluster_ips=DUAL, policy="RequireDualStack"),
        "192.0.2.1",
        "2001:db8::1",
    )
    v4 = [
        _shown(service(f"v4-{i}", annotations={SHARED: "k"}, ports=(("TCP", 81 + i),)), "192.0.2.1")
        for i in range(2)
    ]
    other = [
        _shown(service(f"x{i}", annotations={SHARED: "j"}, ports=(("TCP", 81 + i),)), "2001:db8::1")
        for i in range(2)
    ]
    order = alloc.reservation_order([dual, *v4, *other])
    # v4-*: group of 3 on 192.0.2.1; x*: 2 on 2001:db8::1; dual: min(3, 1) = 1.
    assert [s.name for s in order] == ["v4-0", "v4-1", "x0", "x1", "dual"]
