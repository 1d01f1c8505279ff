"""Incremental planning: after any sequence of Service, EndpointSlice and liveness changes, the
planners hold exactly what a full plan gives, and an event re-decides only the addresses it
touches."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from ironlb.core import announce, config, election, model

from .test_announce import HEALTHY, NODES, bgp_adv, l2, peer, pool, slice_, svc

ADDRS = ["198.18.0.241", "198.18.0.242", "198.18.0.243", "2001:db8::f1"]
NAMES = ["a", "b", "c", "d"]
OBJECTS = [
    pool(),
    l2(),
    peer("p1"),
    peer("p2", peerAddress="198.18.0.2"),
    bgp_adv("agg", aggregationLength=30, localPref=100, peers=["p1"]),
    bgp_adv("host", communities=["65000:1"]),
]
CONFIG = config.Config.from_objects(OBJECTS)
CHANGES = st.lists(
    st.one_of(
        # A Service (re)appears with some addresses (shared ones too), or goes.
        st.tuples(
            st.just("service"),
            st.sampled_from(NAMES),
            st.lists(st.sampled_from(ADDRS), max_size=2, unique=True),
            st.sampled_from(["Cluster", "Local"]),
        ),
        st.tuples(st.just("delete"), st.sampled_from(NAMES)),
        # Its endpoints change (ready or not, on some node), or go.
        st.tuples(
            st.just("slice"),
            st.sampled_from(NAMES),
            st.sampled_from(list(NODES)),
            st.sampled_from([True, False, None]),
        ),
        st.tuples(st.just("noslice"), st.sampled_from(NAMES)),
        # A node's speaker dies or comes back, drains, or loses the interface of a subnet.
        st.tuples(
            st.just("live"),
            st.lists(st.sampled_from(list(NODES)), min_size=1, max_size=2, unique=True),
            st.sampled_from(["healthy", "dead", "draining", "blind", "no-v6"]),
        ),
    ),
    max_size=25,
)
HEALTH = {
    "healthy": announce.Health(),
    "draining": announce.Health(draining=True),
    "blind": announce.Health(blind=True),
    "no-v6": announce.Health(blocked=(ip_network("2001:db8::/64"),)),
}


def _view(
    services: dict[str, model.Service],
    slices: dict[str, model.EndpointSlice],
    live: dict[election.NodeName, announce.Health] | None = None,
) -> announce.View:
    endpoints = {model.ServiceKey(f"default/{n}"): (s,) for n, s in slices.items()}
    return announce.View(
        services=dict(services),
        endpoints=endpoints,
        nodes=NODES,
        config=CONFIG,
        live=HEALTHY if live is None else dict(live),
    )


@settings(max_examples=100, deadline=None)
@given(CHANGES)
def test_incremental_plans_equal_full_plans(changes: list[tuple[object, ...]]) -> None:
    services: dict[str, model.Service] = {}
    slices: dict[str, model.EndpointSlice] = {}
    live = dict(HEALTHY)
    l2_planner = announce.Layer2Planner()
    bgp_planner = announce.BgpPlanner("node-1")
    l2_planner.full(_view(services, slices, live))
    bgp_planner.full(_view(services, slices, live))
    for change in changes:
        kind, name = change[0], str(change[1])
        key = model.ServiceKey(f"default/{name}")
        if kind == "live":
            assert isinstance(change[1], list)
            _liveness_step(l2_planner, services, slices, live, change[1], str(change[2]))
            continue
        if kind == "service":
            ips, etp = change[2], change[3]
            assert isinstance(ips, list)
            services[key] = svc(name, *ips, etp=str(etp))
        elif kind == "delete":
            services.pop(key, None)
        elif kind == "slice":
            ready = change[3]
            assert ready is None or isinstance(ready, bool)
            slices[name] = slice_(name, (str(change[2]), ready, None))
        else:
            slices.pop(name, None)
        v = _view(services, slices, live)
        l2_planner.services(v, [key])
        bgp_planner.services(v, [key])
        assert l2_planner.plan == announce.layer2(v)
        full_bgp = announce.bgp(v, "node-1")
        assert bgp_planner.plan.peers == full_bgp.peers
        assert bgp_planner.plan.routes == full_bgp.routes


def _liveness_step(
    planner: announce.Layer2Planner,
    services: dict[str, model.Service],
    slices: dict[str, model.EndpointSlice],
    live: dict[election.NodeName, announce.Health],
    nodes: list[str],
    state: str,
) -> None:
    """`nodes` die (`state` "dead") or publish the health `HEALTH[state]`: the planner's plan is
    then the full plan's, and it reports exactly the addresses whose decision changed."""
    for n in nodes:
        if state == "dead":
            live.pop(election.NodeName(n), None)
        else:
            live[election.NodeName(n)] = HEALTH[state]
    v = _view(services, slices, live)
    before = dict(planner.plan)
    touched = planner.liveness(v, [election.NodeName(n) for n in nodes])
    assert planner.plan == announce.layer2(v)
    assert touched == {ip for ip, a in planner.plan.items() if before.get(ip) != a}


def test_an_event_re_decides_only_the_addresses_of_its_service() -> None:
    services = {
        model.ServiceKey(f"default/{n}"): svc(n, ip)
        for n, ip in [("a", ADDRS[0]), ("b", ADDRS[1]), ("c", ADDRS[2])]
    }
    slices = {n: slice_(n, ("node-2", True, None)) for n in ("a", "b", "c")}
    planner = announce.Layer2Planner()
    planner.full(_view(services, slices))
    assert set(planner.plan) == {ip_address(a) for a in ADDRS[:3]}
    before = dict(planner.plan)
    # b's only endpoint turns unready: its address loses its owner, nothing else is decided.
    slices["b"] = slice_("b", ("node-2", False, None))
    touched = planner.services(_view(services, slices), [model.ServiceKey("default/b")])
    assert touched == {ip_address(ADDRS[1])}
    gone = planner.plan.get(ip_address(ADDRS[1]))
    assert gone is None or gone.owner is None
    for ip in (ip_address(ADDRS[0]), ip_address(ADDRS[2])):
        assert planner.plan[ip] is before[ip]  # the very same decision object: not redone
    # c moves to a's address: both addresses are decided again, together.
    services[model.ServiceKey("default/c")] = svc("c", ADDRS[0])
    touched = planner.services(_view(services, slices), [model.ServiceKey("default/c")])
    assert touched == {ip_address(ADDRS[0]), ip_address(ADDRS[2])}
    assert planner.plan[ip_address(ADDRS[0])].services == ("default/a", "default/c")
    assert ip_address(ADDRS[2]) not in planner.plan


LIVENESS = st.lists(
    st.tuples(
        st.lists(st.sampled_from(list(NODES)), min_size=1, max_size=2, unique=True),
        st.sampled_from(["healthy", "dead", "draining", "blind", "no-v6"]),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(list(NODES)), min_size=len(NAMES), max_size=len(NAMES)),
    st.lists(st.sampled_from(["Cluster", "Local"]), min_size=len(NAMES), max_size=len(NAMES)),
    LIVENESS,
)
def test_liveness_changes_equal_full_plans(
    hosts: list[str], policies: list[str], changes: list[tuple[list[str], str]]
) -> None:
    """Every address served (one shared), members dying, coming back, draining or losing
    interfaces: after each change the plan is the full plan's, and exactly the addresses whose
    decision changed are reported."""
    services, slices = {}, {}
    for i, (name, host, policy) in enumerate(zip(NAMES, hosts, policies, strict=True)):
        services[f"default/{name}"] = svc(name, ADDRS[i % 3], ADDRS[3], etp=policy)
        slices[name] = slice_(name, (host, True, None))
    live = dict(HEALTHY)
    planner = announce.Layer2Planner()
    planner.full(_view(services, slices, live))
    for nodes, state in changes:
        _liveness_step(planner, services, slices, live, nodes, state)
