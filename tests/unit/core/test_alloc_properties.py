"""Properties of the allocator over random sequences of assign / release / config changes.

(a) no address is held by two Services unless the sharing rules allow it, and the indexes
    (holders, pool statistics) always agree with the assignments;
(b) the order of pools in the configuration never changes an answer;
(c) an Allocator rebuilt by `reserve`-ing a snapshot (a controller restart) holds exactly the same
    assignments and answers every later request exactly as the original.

Pools are tiny so that exhaustion, sharing and conflicts happen often.
"""

import ipaddress
import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ironlb.core import addresses, alloc, config, model


def pool(name: str, *addrs: str, **spec: Any) -> config.IPAddressPool:
    raw = {"metadata": {"name": name}, "spec": {"addresses": list(addrs), **spec}}
    return config.parse_as(raw, config.IPAddressPool)


CONFIGS: list[list[config.IPAddressPool]] = [
    [
        pool("p", "192.0.2.0/30", "2001:db8::/126"),
        pool("q", "192.0.2.8/31", autoAssign=False),
        pool("r", "192.0.2.16-192.0.2.18", serviceAllocation={"namespaces": ["a"], "priority": 1}),
    ],
    [
        pool("p", "192.0.2.0/29", avoidBuggyIPs=True),
        pool("q", "192.0.2.8/31", "2001:db8::/127", autoAssign=False),
    ],
    [
        pool("p", "192.0.2.2/31", "2001:db8::/127"),
        pool("q", "192.0.2.8/30"),
        pool(
            "r",
            "192.0.2.16/30",
            "2001:db8::10/126",
            serviceAllocation={"serviceSelectors": [{"matchLabels": {"app": "web"}}]},
        ),
    ],
]
REQUESTABLE = ["192.0.2.1", "192.0.2.8", "192.0.2.17", "2001:db8::1", "203.0.113.1"]
NAMESPACE_LABELS = {"a": {"team": "a"}, "b": {}}


@st.composite
def services(draw: st.DrawFn, name: str, namespace: str) -> model.Service:
    family = draw(st.sampled_from(["v4", "v6", "prefer", "require"]))
    cluster_ips = {"v4": ["10.96.0.1"], "v6": ["fd00::1"]}.get(family, ["10.96.0.1", "fd00::1"])
    policy = {"prefer": "PreferDualStack", "require": "RequireDualStack"}.get(family, "SingleStack")
    annotations = {}
    sharing = draw(st.sampled_from([None, "k1", "k1", "k2"]))
    if sharing:
        annotations["metallb.io/allow-shared-ip"] = sharing
    request = draw(st.sampled_from(["none", "none", "none", "none", "pool", "ip"]))
    if request == "pool":
        annotations["metallb.io/address-pool"] = draw(st.sampled_from(["p", "q", "r", "ghost"]))
    if request == "ip":
        annotations["metallb.io/loadBalancerIPs"] = draw(st.sampled_from(REQUESTABLE))
    ports = draw(
        st.lists(
            st.sampled_from([("TCP", 80), ("TCP", 443), ("UDP", 53), ("TCP", 53)]),
            min_size=1,
            max_size=2,
            unique=True,
        )
    )
    return model.parse_service(
        {
            "metadata": {
                "name": name,
                "namespace": namespace,
                "annotations": annotations,
                "labels": {"app": draw(st.sampled_from(["web", "db"]))},
            },
            "spec": {
                "type": "LoadBalancer",
                "clusterIPs": cluster_ips,
                "ipFamilyPolicy": policy,
                "ports": [{"protocol": proto, "port": port} for proto, port in ports],
                "externalTrafficPolicy": draw(st.sampled_from(["Cluster", "Cluster", "Local"])),
                "selector": {"app": draw(st.sampled_from(["x", "y"]))},
            },
        }
    )


# A universe of Services, each in two versions (an edit between reconciles), and operations.
Versions = tuple[model.Service, model.Service]
universes = st.lists(
    st.tuples(st.integers(0, 999), st.sampled_from(["a", "b"])).flatmap(
        lambda named: st.tuples(
            services(f"s{named[0]}", named[1]), services(f"s{named[0]}", named[1])
        )
    ),
    min_size=2,
    max_size=7,
    unique_by=lambda versions: versions[0].key,
)
Op = tuple[str, int, int]
operations = st.lists(
    st.tuples(
        st.sampled_from(["assign"] * 6 + ["release", "release", "reserve", "config"]),
        st.integers(0, 6),
        st.integers(0, len(REQUESTABLE) - 1),
    ),
    min_size=4,
    max_size=40,
)


@dataclass
class World:
    """An allocator plus what the test knows: the config in force and each holder's version."""

    allocator: alloc.Allocator
    universe: Sequence[Versions]
    config_index: int = 0
    pool_order: Sequence[int] = (0, 1, 2)
    held_as: dict[model.ServiceKey, model.Service] = field(default_factory=dict)

    def config(self, index: int) -> config.Config:
        pools = CONFIGS[index]
        ordered = [pools[i] for i in self.pool_order if i < len(pools)]
        return config.Config(pools={p.pool_name: p for p in ordered})

    def apply(self, op: Op) -> object:
        kind, i, variant = op
        versions = self.universe[i % len(self.universe)]
        svc = versions[variant % 2]
        if kind == "config":
            self.config_index = variant % len(CONFIGS)
            dropped = self.allocator.update_config(self.config(self.config_index))
            for key in dropped:
                del self.held_as[key]
            return dropped
        if kind == "release":
            self.held_as.pop(svc.key, None)
            return self.allocator.release(svc.key)
        if kind == "reserve":
            # A restart finding an address in the Service's status, perhaps a stale one.
            result = self.allocator.reserve(svc, [ipaddress.ip_address(REQUESTABLE[variant])])
        else:
            result = self.allocator.assign(svc, NAMESPACE_LABELS[svc.namespace])
        if isinstance(result, alloc.Assigned):
            self.held_as[svc.key] = svc
        else:
            self.held_as.pop(svc.key, None)
        return result


def new_world(universe: Sequence[Versions], pool_order: Sequence[int] = (0, 1, 2)) -> World:
    world = World(alloc.Allocator(config.Config()), universe, pool_order=pool_order)
    world.allocator.update_config(world.config(0))
    return world


def ports_of(svc: model.Service) -> set[tuple[str, int]]:
    return {(p.protocol, p.port) for p in svc.spec.ports}


def check_invariants(world: World) -> None:
    a = world.allocator
    snapshot = a.snapshot()
    assert set(snapshot) == set(world.held_as)
    pools = CONFIGS[world.config_index]
    by_name = {p.name: p for p in pools}
    users: dict[addresses.IP, list[model.ServiceKey]] = defaultdict(list)
    for key, allocation in snapshot.items():
        assert len({addresses.family_of(ip) for ip in allocation.ips}) == len(allocation.ips)
        owner = by_name[allocation.pool]
        for ip in allocation.ips:
            users[ip].append(key)
            family, value = addresses.family_of(ip), int(ip)
            assert any(r.family is family and r.contains(value) for r in owner.spec.addresses)
            assert not (owner.spec.avoid_buggy_ips and addresses.is_buggy(family, value))
    for ip, keys in users.items():
        assert a.holders(ip) == set(keys)
        if len(keys) == 1:
            continue
        holders = [world.held_as[k] for k in keys]
        sharing = {h.metadata.annotations.get("metallb.io/allow-shared-ip") for h in holders}
        assert len(sharing) == 1
        assert None not in sharing
        assert "" not in sharing
        backends = {
            tuple(sorted(h.spec.selector.items()))
            if h.spec.external_traffic_policy == "Local"
            else ()
            for h in holders
        }
        assert len(backends) == 1
        for x, y in itertools.combinations(holders, 2):
            assert not ports_of(x) & ports_of(y)
    for p in pools:
        for family, column in ((addresses.Family.V4, 0), (addresses.Family.V6, 1)):
            in_use = {
                ip
                for key, allocation in snapshot.items()
                if allocation.pool == p.name
                for ip in allocation.ips
                if addresses.family_of(ip) is family
            }
            assert a.pool_stats(p.pool_name)[column] == len(in_use)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(universes, operations)
def test_a_no_address_is_ever_shared_against_the_rules(
    universe: list[Versions], ops: list[Op]
) -> None:
    world = new_world(universe)
    check_invariants(world)
    for op in ops:
        result = world.apply(op)
        if isinstance(result, alloc.Assigned):
            assert world.allocator.assignment_of(result.service) == result.allocation
        if isinstance(result, alloc.Failed):
            assert world.allocator.assignment_of(result.service) is None
        check_invariants(world)


@SETTINGS
@given(universes, operations, st.permutations([0, 1, 2]))
def test_b_pool_order_never_changes_an_answer(
    universe: list[Versions], ops: list[Op], order: list[int]
) -> None:
    straight = new_world(universe)
    shuffled = new_world(universe, pool_order=order)
    for op in ops:
        assert straight.apply(op) == shuffled.apply(op)
    assert straight.allocator.snapshot() == shuffled.allocator.snapshot()


@SETTINGS
@given(universes, operations, operations, st.randoms(use_true_random=False))
def test_c_a_rebuilt_allocator_is_indistinguishable(
    universe: list[Versions],
    before: list[Op],
    after: list[Op],
    rnd: random.Random,
) -> None:
    original = new_world(universe)
    for op in before:
        original.apply(op)
    snapshot = original.allocator.snapshot()

    restarted = World(
        alloc.Allocator(original.config(original.config_index)),
        universe,
        config_index=original.config_index,
    )
    keys = list(snapshot)
    rnd.shuffle(keys)
    for key in keys:
        svc = original.held_as[key]
        assert isinstance(restarted.allocator.reserve(svc, snapshot[key].ips), alloc.Assigned)
        restarted.held_as[key] = svc
    assert restarted.allocator.snapshot() == snapshot
    check_invariants(restarted)
    for op in after:
        assert original.apply(op) == restarted.apply(op)
    assert original.allocator.snapshot() == restarted.allocator.snapshot()


def test_the_universe_covers_the_interesting_cases() -> None:
    # Guard against a strategy that silently stops producing what the properties rely on.
    requested = {ipaddress.ip_address(text) for text in REQUESTABLE}
    covered = {
        ip
        for pools in CONFIGS
        for p in pools
        for ip in requested
        if any(
            r.family is addresses.family_of(ip) and r.contains(int(ip)) for r in p.spec.addresses
        )
    }
    assert covered != requested  # at least one request is outside every pool
    assert any(p.spec.avoid_buggy_ips for pools in CONFIGS for p in pools)
    assert any(not p.spec.auto_assign for pools in CONFIGS for p in pools)
    assert any(p.spec.service_allocation for pools in CONFIGS for p in pools)
