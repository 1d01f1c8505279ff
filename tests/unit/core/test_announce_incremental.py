"""Incremental planning: after any sequence of Service and EndpointSlice changes, the planners
hold exactly what a full plan gives, and an event re-decides only the addresses it touches."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from ironlb.core import announce, config, model

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
    ),
    max_size=25,
)


def _view(
    services: dict[str, model.Service], slices: dict[str, model.EndpointSlice]
) -> announce.View:
    endpoints = {model.ServiceKey(f"default/{n}"): (s,) for n, s in slices.items()}
    return announce.View(
        services=dict(services),
        endpoints=endpoints,
        nodes=NODES,
        config=config.Config.from_objects(OBJECTS),
        live=HEALTHY,
    )


@settings(max_examples=100, deadline=None)
@given(CHANGES)
def test_incremental_plans_equal_full_plans(changes: list[tuple[object, ...]]) -> None:
    services: dict[str, model.Service] = {}
    slices: dict[str, model.EndpointSlice] = {}
    l2_planner = announce.Layer2Planner()
    bgp_planner = announce.BgpPlanner("node-1")
    l2_planner.full(_view(services, slices))
    bgp_planner.full(_view(services, slices))
    for change in changes:
        kind, name = change[0], str(change[1])
        key = model.ServiceKey(f"default/{name}")
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
        v = _view(services, slices)
        l2_planner.services(v, [key])
        bgp_planner.services(v, [key])
        assert l2_planner.plan == announce.layer2(v)
        full_bgp = announce.bgp(v, "node-1")
        assert bgp_planner.plan.peers == full_bgp.peers
        assert bgp_planner.plan.routes == full_bgp.routes


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
