from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import announce, config, election, model

NS = "metallb-system"
N = election.NodeName
A1 = IPv4Address("198.18.0.241")


def pool(name: str = "lan", *addrs: str, labels: dict[str, str] | None = None) -> Any:
    return config.parse(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": {"addresses": list(addrs or ("198.18.0.240/28", "2001:db8::f0/124"))},
        }
    )


def l2(name: str = "lan", **spec: Any) -> Any:
    return config.parse(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    )


def svc(
    name: str,
    *ips: str,
    ns: str = "default",
    etp: str = "Cluster",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> model.Service:
    return model.parse_service(
        {
            "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": etp,
                "ports": [{"port": 80}],
                **spec,
            },
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
        }
    )


def slice_(
    service: str, *endpoints: tuple[str, bool | None, bool | None], ns: str = "default"
) -> model.EndpointSlice:
    return model.parse_endpoint_slice(
        {
            "metadata": {
                "name": f"{service}-x",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["198.19.1.5"],
                    "nodeName": node,
                    "conditions": {
                        k: v for k, v in (("ready", ready), ("serving", serving)) if v is not None
                    },
                }
                for node, ready, serving in endpoints
            ],
        }
    )


def node(
    name: str, *, labels: dict[str, str] | None = None, network_unavailable: bool = False
) -> model.Node:
    return model.parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {
                        "type": "NetworkUnavailable",
                        "status": "True" if network_unavailable else "False",
                    },
                ]
            },
        }
    )


NODES = {n: node(n) for n in ("node-1", "node-2", "node-3")}
HEALTHY = {N(n): announce.Health() for n in NODES}


def view(
    services: list[model.Service],
    slices: list[model.EndpointSlice],
    objects: list[Any] | None = None,
    nodes: dict[str, model.Node] | None = None,
    live: dict[election.NodeName, announce.Health] | None = None,
    **flags: Any,
) -> announce.View:
    by_service: dict[model.ServiceKey, tuple[model.EndpointSlice, ...]] = {}
    for s in slices:
        key = s.service_key
        assert key is not None
        by_service[key] = (*by_service.get(key, ()), s)
    return announce.View(
        services={s.key: s for s in services},
        endpoints=by_service,
        nodes=nodes if nodes is not None else NODES,
        config=config.Config.from_objects(objects if objects is not None else [pool(), l2()]),
        live=live if live is not None else HEALTHY,
        **flags,
    )


def owner(v: announce.View, ip: str = "198.18.0.241") -> str | None:
    return announce.layer2(v)[ip_address(ip)].owner


def test_owner_is_the_rendezvous_winner_among_live_eligible_nodes() -> None:
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-2", True, None))])
    plan = announce.layer2(v)
    assert plan[A1].owner == election.announcer_for(A1, list(HEALTHY))
    assert plan[A1].candidates == ("node-1", "node-2", "node-3")
    assert plan[A1].services == ("default/web",)


def test_no_serving_endpoint_means_no_announcement() -> None:
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", False, False))])
    plan = announce.layer2(v)
    assert plan[A1].owner is None
    assert "no Service at this address has a serving endpoint" in plan[A1].reason
    assert owner(view([svc("web", "198.18.0.241")], [])) is None


@pytest.mark.parametrize(("ready", "serving"), [(True, None), (None, None), (False, True)])
def test_ready_unknown_or_serving_endpoints_count(ready: bool | None, serving: bool | None) -> None:
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", ready, serving))])
    assert owner(v) is not None


def test_local_policy_announces_only_from_nodes_with_a_local_endpoint() -> None:
    v = view([svc("web", "198.18.0.241", etp="Local")], [slice_("web", ("node-3", True, None))])
    assert owner(v) == "node-3"
    assert announce.layer2(v)[A1].candidates == ("node-3",)


def test_exclusion_label_and_network_unavailable_remove_candidates() -> None:
    nodes = {
        "node-1": node("node-1", labels={announce.EXCLUDE_LB_LABEL: ""}),
        "node-2": node("node-2", network_unavailable=True),
        "node-3": node("node-3"),
    }
    args = ([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))])
    assert announce.layer2(view(*args, nodes=nodes))[A1].candidates == ("node-3",)
    # Seed 000: a single kubeadm control plane carries the label; the flag lifts it.
    relaxed = announce.layer2(view(*args, nodes=nodes, ignore_exclude_lb=True))
    assert relaxed[A1].candidates == ("node-1", "node-3")


def test_node_selectors_of_the_advertisement_choose_candidates() -> None:
    objects = [pool(), l2(nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "node-2"}}])]
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))], objects)
    assert owner(v) == "node-2"


def test_pools_and_services_an_advertisement_does_not_select_are_not_announced() -> None:
    objects = [
        pool("lan"),
        pool("other", "192.0.2.0/28", labels={"tier": "x"}),
        l2(
            ipAddressPoolSelectors=[{"matchLabels": {"tier": "x"}}],
            serviceSelectors=[{"matchLabels": {"expose": "yes"}}],
        ),
    ]
    services = [
        svc("a", "198.18.0.241", labels={"expose": "yes"}),
        svc("b", "192.0.2.1", labels={"expose": "no"}),
        svc("c", "192.0.2.2", labels={"expose": "yes"}),
    ]
    slices = [slice_(n, ("node-1", True, None)) for n in "abc"]
    plan = announce.layer2(view(services, slices, objects))
    assert list(plan) == [IPv4Address("192.0.2.2")]


def test_dead_or_draining_owner_hands_over_to_the_next_in_rank() -> None:
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))])
    first, second, _ = election.ranking(A1, list(HEALTHY))
    assert owner(v) == first
    dead = {n: h for n, h in HEALTHY.items() if n != first}
    assert (
        owner(
            view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))], live=dead)
        )
        == second
    )
    draining = {**HEALTHY, first: announce.Health(draining=True)}
    assert (
        owner(
            view(
                [svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))], live=draining
            )
        )
        == second
    )


def test_a_node_that_cannot_reach_the_subnet_is_skipped() -> None:
    first, second, _ = election.ranking(A1, list(HEALTHY))
    live = {**HEALTHY, first: announce.Health(blocked=(IPv4Network("198.18.0.0/24"),))}
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))], live=live)
    assert owner(v) == second


def test_shared_address_lands_on_one_node_agreed_by_all_its_services() -> None:
    services = [
        svc("dns-tcp", "198.18.0.241", etp="Local"),
        svc("dns-udp", "198.18.0.241", etp="Local"),
    ]
    slices = [
        slice_("dns-tcp", ("node-2", True, None), ("node-3", True, None)),
        slice_("dns-udp", ("node-3", True, None)),
    ]
    plan = announce.layer2(view(services, slices))
    assert plan[A1].owner == "node-3"
    assert plan[A1].services == ("default/dns-tcp", "default/dns-udp")


def test_interfaces_and_refresh_come_from_the_advertisements_selecting_the_owner() -> None:
    objects = [
        pool(),
        l2("a", interfaces=["eth1"], gratuitousRefreshInterval="30s"),
        l2("b", interfaces=["eth2"], gratuitousRefreshInterval="10s"),
    ]
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))], objects)
    a = announce.layer2(v)[A1]
    assert a.interfaces == {"eth1", "eth2"}
    assert a.refresh == 10.0
    unrestricted = [pool(), l2("a", interfaces=["eth1"]), l2("b")]
    v = view([svc("web", "198.18.0.241")], [slice_("web", ("node-1", True, None))], unrestricted)
    assert announce.layer2(v)[A1].interfaces == frozenset()


def test_other_classes_and_unpooled_addresses_are_ignored() -> None:
    services = [
        svc("theirs", "198.18.0.241", loadBalancerClass="example.com/x"),
        svc("outside", "203.0.113.9"),
    ]
    slices = [slice_("theirs", ("node-1", True, None)), slice_("outside", ("node-1", True, None))]
    assert announce.layer2(view(services, slices)) == {}


def test_ipv6_addresses_are_announced_too() -> None:
    v = view([svc("web", "2001:db8::f1")], [slice_("web", ("node-1", True, None))])
    assert announce.layer2(v)[IPv6Address("2001:db8::f1")].owner in NODES


nets = st.one_of(
    st.builds(
        lambda a, p: IPv4Network((a, p), strict=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 32),
    ),
    st.builds(
        lambda a, p: IPv6Network((a, p), strict=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 128),
    ),
)


@given(st.booleans(), st.booleans(), st.lists(nets, max_size=12))
def test_health_round_trips_or_degrades_to_blind(
    draining: bool, blind: bool, blocked: list[Any]
) -> None:
    health = announce.Health(draining, blind, tuple(blocked))
    data = health.encode()
    assert len(data) <= announce.Health.LIMIT
    back = announce.Health.decode(data)
    assert back.draining == draining
    if back.blocked == health.blocked:
        assert back.blind == blind
    else:
        assert back.blind  # did not fit: conservatively blind


@given(st.binary(max_size=80))
def test_health_decode_never_raises(data: bytes) -> None:
    announce.Health.decode(data)


# --- BGP ------------------------------------------------------------------------------------


def peer(name: str, **spec: Any) -> Any:
    return config.parse(
        {
            "apiVersion": "metallb.io/v1beta2",
            "kind": "BGPPeer",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"myASN": 64500, "peerASN": 64501, "peerAddress": "198.18.0.1", **spec},
        }
    )


def bgp_adv(name: str = "bgp", **spec: Any) -> Any:
    return config.parse(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "BGPAdvertisement",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    )


def community(**aliases: str) -> Any:
    return config.parse(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "Community",
            "metadata": {"name": "aliases", "namespace": NS},
            "spec": {"communities": [{"name": k, "value": v} for k, v in aliases.items()]},
        }
    )


ROUTED = pool("routed", "203.0.113.0/24", "2001:db8:100::/120")


def bgp_plan(
    objects: list[Any],
    services: list[model.Service],
    slices: list[model.EndpointSlice],
    node_name: str = "node-1",
    **flags: Any,
) -> announce.BgpPlan:
    v = view(services, slices, objects, **flags)
    return announce.bgp(v, node_name)


def test_every_eligible_node_advertises_a_cluster_service_to_its_peers() -> None:
    objects = [ROUTED, peer("r1"), bgp_adv()]
    services = [svc("web", "203.0.113.10", "2001:db8:100::10")]
    slices = [slice_("web", ("node-3", True, None))]
    for n in NODES:
        plan = bgp_plan(objects, services, slices, n)
        assert set(plan.routes["r1"]) == {
            IPv4Network("203.0.113.10/32"),
            IPv6Network("2001:db8:100::10/128"),
        }


def test_local_policy_advertises_only_from_nodes_with_a_local_endpoint() -> None:
    objects = [ROUTED, peer("r1"), bgp_adv()]
    services = [svc("web", "203.0.113.10", etp="Local")]
    slices = [slice_("web", ("node-2", True, None))]
    assert bgp_plan(objects, services, slices, "node-2").routes["r1"]
    assert not bgp_plan(objects, services, slices, "node-1").routes["r1"]


def test_no_serving_endpoint_means_no_route() -> None:
    objects = [ROUTED, peer("r1"), bgp_adv()]
    services = [svc("web", "203.0.113.10")]
    assert not bgp_plan(objects, services, []).routes["r1"]


def test_aggregation_communities_aliases_and_local_pref() -> None:
    objects = [
        ROUTED,
        peer("r1"),
        community(gold="65000:300"),
        bgp_adv(
            "a",
            aggregationLength=24,
            communities=["65000:100", "gold", "large:65000:1:2"],
            localPref=200,
        ),
        bgp_adv("b", aggregationLength=24, communities=["65000:200"], localPref=150),
    ]
    services = [svc("web", "203.0.113.10"), svc("api", "203.0.113.20")]
    slices = [slice_("web", ("node-1", True, None)), slice_("api", ("node-1", True, None))]
    routes = bgp_plan(objects, services, slices).routes["r1"]
    (route,) = routes.values()
    assert route.prefix == IPv4Network("203.0.113.0/24")
    assert {str(c) for c in route.communities} == {
        "65000:100",
        "65000:300",
        "large:65000:1:2",
        "65000:200",
    }
    assert route.local_pref == 200
    assert route.services == ("default/api", "default/web")


def test_peers_and_node_selectors_choose_who_gets_what() -> None:
    objects = [
        ROUTED,
        peer("r1"),
        peer(
            "r2",
            peerAddress="198.18.0.5",
            nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "node-2"}}],
        ),
        bgp_adv("to-r2", peers=["r2"]),
        bgp_adv(
            "node3-only",
            aggregationLength=24,
            nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "node-3"}}],
        ),
    ]
    services = [svc("web", "203.0.113.10")]
    slices = [slice_("web", ("node-1", True, None))]
    one = bgp_plan(objects, services, slices, "node-1")
    assert set(one.peers) == {"r1"}
    assert not one.routes["r1"]  # to-r2 names r2; node3-only does not select node-1
    two = bgp_plan(objects, services, slices, "node-2")
    assert set(two.peers) == {"r1", "r2"}
    assert set(two.routes["r2"]) == {IPv4Network("203.0.113.10/32")}
    three = bgp_plan(objects, services, slices, "node-3")
    assert set(three.routes["r1"]) == {IPv4Network("203.0.113.0/24")}


def test_excluded_nodes_advertise_nothing_unless_told_to() -> None:
    nodes = {**NODES, "node-1": node("node-1", labels={announce.EXCLUDE_LB_LABEL: ""})}
    objects = [ROUTED, peer("r1"), bgp_adv()]
    services = [svc("web", "203.0.113.10")]
    slices = [slice_("web", ("node-1", True, None))]
    v = view(services, slices, objects, nodes=nodes)
    assert not announce.bgp(v, "node-1").routes["r1"]
    v = view(services, slices, objects, nodes=nodes, ignore_exclude_lb=True)
    assert announce.bgp(v, "node-1").routes["r1"]


def test_pod_cidrs_are_advertised_when_asked() -> None:
    nodes = {
        "node-1": model.parse_node(
            {
                "metadata": {"name": "node-1"},
                "spec": {"podCIDRs": ["198.19.1.0/24", "2001:db8:10:1::/64"]},
            }
        )
    }
    v = view([], [], [peer("r1")], nodes=nodes)
    assert not announce.bgp(v, "node-1").routes["r1"]
    routes = announce.bgp(v, "node-1", pod_cidrs=True).routes["r1"]
    assert set(routes) == {
        IPv4Network("198.19.1.0/24"),
        IPv6Network("2001:db8:10:1::/64"),
    }


def pod_node(
    *cidrs: str, labels: dict[str, str] | None = None, unavailable: bool = False
) -> dict[str, model.Node]:
    return {
        "node-1": model.parse_node(
            {
                "metadata": {"name": "node-1", "labels": labels or {}},
                "spec": {"podCIDRs": list(cidrs)},
                "status": {
                    "conditions": [
                        {"type": "NetworkUnavailable", "status": "True" if unavailable else "False"}
                    ]
                },
            }
        )
    }


POD_CIDRS = ("198.19.1.0/24", "2001:db8:10:1::/64")


def test_pod_cidrs_go_to_the_chosen_peers_with_their_communities() -> None:
    objects = [peer("r1"), peer("r2"), peer("r3"), community(pods="65000:100")]
    v = view([], [], objects, nodes=pod_node(*POD_CIDRS))
    chosen = announce.PodCidrAdvertisement(frozenset({"r1", "r2"}), ("pods", "large:64500:1:2"))
    plan = announce.bgp(v, "node-1", pod_cidrs=chosen)
    assert not plan.problems
    assert not plan.routes["r3"]
    for name in ("r1", "r2"):
        routes = plan.routes[name]
        assert set(routes) == {IPv4Network(POD_CIDRS[0]), IPv6Network(POD_CIDRS[1])}
        for route in routes.values():
            assert route.services == ()
            assert route.local_pref is None
            assert {c.parts for c in route.communities} == {(65000, 100), (64500, 1, 2)}
    everyone = announce.bgp(v, "node-1", pod_cidrs=announce.PodCidrAdvertisement())
    assert all(len(everyone.routes[p]) == 2 for p in ("r1", "r2", "r3"))
    assert announce.bgp(v, "node-1", pod_cidrs=None).routes == {"r1": {}, "r2": {}, "r3": {}}


def test_pod_cidrs_ignore_the_exclusion_label_and_network_unavailable() -> None:
    # Both only concern load balancing; pods on excluded nodes must stay reachable.
    objects = [ROUTED, peer("r1"), bgp_adv()]
    services = [svc("web", "203.0.113.10")]
    slices = [slice_("web", ("node-1", True, None))]
    for nodes in (
        pod_node(*POD_CIDRS, labels={announce.EXCLUDE_LB_LABEL: ""}),
        pod_node(*POD_CIDRS, unavailable=True),
    ):
        v = view(services, slices, objects, nodes=nodes)
        assert not announce.bgp(v, "node-1").routes["r1"]  # no Service route from it
        plan = announce.bgp(v, "node-1", pod_cidrs=True)
        assert set(plan.routes["r1"]) == {IPv4Network(POD_CIDRS[0]), IPv6Network(POD_CIDRS[1])}


def test_pod_cidrs_merge_with_a_service_route_of_the_same_prefix() -> None:
    objects = [ROUTED, peer("r1"), bgp_adv(aggregationLength=24, communities=["65000:1"])]
    services = [svc("web", "203.0.113.10")]
    slices = [slice_("web", ("node-1", True, None))]
    v = view(services, slices, objects, nodes=pod_node("203.0.113.0/24"))
    chosen = announce.PodCidrAdvertisement(communities=("65000:2",))
    route = announce.bgp(v, "node-1", pod_cidrs=chosen).routes["r1"][IPv4Network("203.0.113.0/24")]
    assert {c.parts for c in route.communities} == {(65000, 1), (65000, 2)}
    assert route.services == (model.ServiceKey("default/web"),)


def test_bad_pod_cidrs_unknown_peers_and_aliases_are_reported_not_fatal() -> None:
    v = view([], [], [peer("r1")], nodes=pod_node("198.19.1.0/24", "not-a-cidr", "10.0.0.0/33"))
    chosen = announce.PodCidrAdvertisement(frozenset({"r1", "gone"}), ("no-such-alias",))
    plan = announce.bgp(v, "node-1", pod_cidrs=chosen)
    assert set(plan.routes["r1"]) == {IPv4Network("198.19.1.0/24")}
    assert len(plan.problems) == 4, plan.problems
    for needle in ("'not-a-cidr'", "'10.0.0.0/33'", "'gone'", "no-such-alias"):
        assert sum(needle in p for p in plan.problems) == 1, (needle, plan.problems)


def test_no_node_object_means_no_pod_cidrs() -> None:
    v = view([], [], [peer("r1")], nodes={})
    plan = announce.bgp(v, "node-1", pod_cidrs=True)
    assert plan.peers == {}
    assert plan.routes == {}


def test_unknown_communities_are_reported_not_fatal() -> None:
    objects = [ROUTED, peer("r1"), bgp_adv(communities=["missing-alias"])]
    services = [svc("web", "203.0.113.10")]
    slices = [slice_("web", ("node-1", True, None))]
    plan = bgp_plan(objects, services, slices)
    assert plan.routes["r1"]
    assert "missing-alias" in plan.problems[0]
