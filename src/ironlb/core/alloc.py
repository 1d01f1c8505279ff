"""Address allocation for LoadBalancer Services: pure, incremental, and MetalLB's rules.

Job: decide which addresses each Service holds. The controller re-reserves every existing
`status.loadBalancer.ingress` with `reserve` before serving anything (so a restart never moves or
duplicates an address), then calls `assign` for every Service whenever it, its namespace or the
configuration changes, and `release` when it goes away. `assign` keeps a still-valid address
(no churn), clears an invalid one (the `cleared` reason becomes a ClearAssignment Event) and
otherwise allocates, in MetalLB's order:

1. the addresses requested by `metallb.io/loadBalancerIPs` or `spec.loadBalancerIP` (not both);
2. else the pool named by `metallb.io/address-pool` (even with `autoAssign: false`);
3. else the pools whose `serviceAllocation` selects the Service (`autoAssign: true` only),
   lowest `priority` first, 0 after all others;
4. else the `autoAssign: true` pools without `serviceAllocation`.

Within a pool: for each needed family, the first acceptable address of the first `spec.addresses`
entry (in the order written) that has one, lowest first; acceptable means free (and not ending in
.0/.255 with `avoidBuggyIPs`) or already used by Services it may share with. Every annotation is
also read with the deprecated `metallb.universe.tf/` prefix; the `metallb.io/` one wins.

Where ironlb deliberately differs from MetalLB:
- Where MetalLB picks at random (pools of equal priority, fallback pools), ironlb takes them by
  name, so the same state always gives the same answer.
- PreferDualStack adds the second family only to a Service that has both ClusterIP families
  (MetalLB also adds it to single-stack Services, then clears it on the next reconcile: a flap).
- `namespaceSelectors` are matched against the Service's namespace labels. MetalLB resolves them
  into a list of names and, when none matches, treats the pool as open to every namespace.

Invariants: two Services hold the same address only if both carry the same non-empty
`allow-shared-ip` key, their (protocol, port) sets are disjoint and, for externalTrafficPolicy
Local, their pod selectors are equal; every held address is covered by a pool of the current
configuration; the state is a function of (configuration, holdings), so an Allocator rebuilt by
`reserve`-ing a snapshot answers every later question exactly as the original.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ironlb.core import addresses, config, model, selectors

Port = tuple[str, int]
"""(protocol, port) of a Service port."""
Backend = tuple[tuple[str, str], ...]
"""Sorted pod selector of an externalTrafficPolicy Local Service; () for Cluster."""
Families = frozenset[addresses.Family]

V4 = addresses.Family.V4
V6 = addresses.Family.V6
DUAL: Families = frozenset({V4, V6})

LOAD_BALANCER_IPS = "loadBalancerIPs"
ADDRESS_POOL = "address-pool"
ALLOW_SHARED_IP = "allow-shared-ip"
_PREFIXES = ("metallb.io/", "metallb.universe.tf/")


def annotation(service: model.Service, name: str) -> str | None:
    """`metallb.io/<name>`, else the deprecated `metallb.universe.tf/<name>`, else None.

    As in MetalLB, a present `metallb.io/` annotation wins even when empty.
    """
    annotations = service.metadata.annotations
    for prefix in _PREFIXES:
        value = annotations.get(prefix + name)
        if value is not None:
            return value
    return None


def contended(service: model.Service) -> frozenset[str]:
    """What a Service may contend for with others: its sharing key, the addresses it asks for
    and the addresses its status shows. A Service refused an address may get it once another
    Service with any of these in common changes (its key, its policy, its ports, or itself).
    Tokens are opaque: `key:<sharing key>` and `ip:<address>`."""
    found = set()
    sharing = annotation(service, ALLOW_SHARED_IP)
    if sharing:
        found.add(f"key:{sharing}")
    requested = annotation(service, LOAD_BALANCER_IPS) or service.spec.load_balancer_ip or ""
    for text in requested.split(","):
        try:
            found.add(f"ip:{addresses.parse_ip(text.strip())}")
        except ValueError:
            continue  # refused with its reason by assign(); nothing to contend for
    found.update(f"ip:{ip}" for ip in service.ingress_ips)
    return frozenset(found)


def is_handled(service: model.Service, lb_class: str | None) -> bool:
    """Whether this controller serves the Service: type LoadBalancer and, with no class
    configured, no `spec.loadBalancerClass`; with a class, exactly that class."""
    return service.spec.type == "LoadBalancer" and service.spec.load_balancer_class == lb_class


@dataclass(frozen=True, slots=True)
class Allocation:
    pool: config.PoolName
    ips: tuple[addresses.IP, ...]

    def __str__(self) -> str:
        return f"{', '.join(map(str, self.ips))} from IPAddressPool {self.pool}"


@dataclass(frozen=True, slots=True)
class Assigned:
    service: model.ServiceKey
    allocation: Allocation
    changed: bool
    """The Service holds different addresses than before this call (an IPAllocated Event)."""
    cleared: str | None = None
    """Why the previous addresses were dropped (a ClearAssignment Event), if they were."""
    warning: str | None = None
    """A problem worth an Event although the Service keeps its addresses."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The Service holds no address; `reason` is written for the Service's owner."""

    service: model.ServiceKey
    reason: str
    cleared: str | None = None


Result = Assigned | Failed


class PoolStats(NamedTuple):
    """IPAddressPool status and metrics. Counts, never enumerations: a /64 is 2**64."""

    assigned_ipv4: int
    assigned_ipv6: int
    available_ipv4: int
    available_ipv6: int


@dataclass(frozen=True, slots=True)
class _Claim:
    """What decides whether a Service may share an address."""

    key: model.ServiceKey
    ports: frozenset[Port]
    sharing: str
    backend: Backend


def _claim_of(service: model.Service) -> _Claim:
    spec = service.spec
    backend: Backend = ()
    if spec.external_traffic_policy == "Local":
        backend = tuple(sorted(spec.selector.items()))
    return _Claim(
        service.key,
        frozenset((p.protocol, p.port) for p in spec.ports),
        annotation(service, ALLOW_SHARED_IP) or "",
        backend,
    )


def reservation_order(services: Iterable[model.Service]) -> list[model.Service]:
    """The order in which a restart re-reserves the addresses Services show.

    Shown addresses conflict when a Service's sharing changed (its `allow-shared-ip` key, its
    ports) while no controller ran: whichever reserves first keeps the address and the others
    move. Reserving first the Services of the largest group that may share each address keeps
    the most of them in place, so the Service that was edited moves, not the Services it used to
    share with (by name alone, one edited Service sorting first would move all its former
    sharers). A Service's group is the smallest among its addresses'; ties go by key.
    """
    claims = [(svc, _claim_of(svc)) for svc in services]
    groups: Counter[tuple[addresses.IP, str, Backend]] = Counter(
        (ip, claim.sharing, claim.backend)
        for svc, claim in claims
        if claim.sharing
        for ip in svc.ingress_ips
    )

    def group(svc: model.Service, claim: _Claim) -> int:
        if not claim.sharing:
            return 1
        return min(
            (groups[(ip, claim.sharing, claim.backend)] for ip in svc.ingress_ips), default=1
        )

    return [svc for svc, _ in sorted(claims, key=lambda sc: (-group(*sc), sc[0].key))]


class _Refused(Exception):
    """A Service whose request cannot be understood; the message is for its owner."""


@dataclass(frozen=True, slots=True)
class _Request:
    families: Families
    """The Service's families, from its ClusterIPs (as MetalLB)."""
    primary: addresses.Family
    prefer_dual: bool
    desired_ips: tuple[addresses.IP, ...]
    desired_error: str | None
    desired_pool: config.PoolName | None
    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str]


def _request_of(service: model.Service, namespace_labels: Mapping[str, str]) -> _Request:
    spec = service.spec
    cluster_ips = spec.cluster_ips or ((spec.cluster_ip,) if spec.cluster_ip else ())
    if not cluster_ips or cluster_ips == ("None",):
        raise _Refused("the Service has no ClusterIP yet, so its IP family is not known")
    try:
        families = _families_of([addresses.parse_ip(ip) for ip in cluster_ips], "clusterIPs")
    except ValueError as e:
        raise _Refused(str(e)) from None
    desired: tuple[addresses.IP, ...] = ()
    desired_error = None
    requested = annotation(service, LOAD_BALANCER_IPS) or ""
    if requested and spec.load_balancer_ip:
        desired_error = (
            f"the Service sets both metallb.io/{LOAD_BALANCER_IPS} and spec.loadBalancerIP: "
            "keep one"
        )
    elif requested or spec.load_balancer_ip:
        source = f"metallb.io/{LOAD_BALANCER_IPS}" if requested else "spec.loadBalancerIP"
        try:
            desired = tuple(
                addresses.parse_ip(text.strip())
                for text in (requested or spec.load_balancer_ip).split(",")
            )
            _families_of(desired, source)
        except ValueError as e:
            desired, desired_error = (), f"invalid {source}: {e}"
    pool = annotation(service, ADDRESS_POOL)
    return _Request(
        families=families,
        primary=V6 if spec.ip_families[:1] == ("IPv6",) else V4,
        prefer_dual=spec.ip_family_policy == "PreferDualStack" and families == DUAL,
        desired_ips=desired,
        desired_error=desired_error,
        desired_pool=config.PoolName(pool) if pool else None,
        namespace=service.namespace,
        labels=service.metadata.labels,
        namespace_labels=namespace_labels,
    )


def _families_of(ips: Sequence[addresses.IP], source: str) -> Families:
    families = frozenset(addresses.family_of(ip) for ip in ips)
    if len(ips) > 2 or len(families) != len(ips):
        raise ValueError(
            f"{source} must be one address, or one IPv4 and one IPv6 address "
            f"(got {', '.join(map(str, ips))})"
        )
    return families


def _family_text(families: Families) -> str:
    return " and ".join(f.label for f in sorted(families))


def _compatibility(pool: config.IPAddressPool, request: _Request) -> str | None:
    """Why `pool.spec.serviceAllocation` excludes the Service, or None if it does not."""
    allocation = pool.spec.service_allocation
    if allocation is None:
        return None
    if (allocation.namespaces or allocation.namespace_selectors) and not (
        request.namespace in allocation.namespaces
        or any(s.matches(request.namespace_labels) for s in allocation.namespace_selectors)
    ):
        return f"its serviceAllocation does not select namespace {request.namespace!r}"
    if not selectors.any_matches(allocation.service_selectors, request.labels):
        return "its serviceAllocation.serviceSelectors do not match the Service's labels"
    return None


def _priority_order(pool: config.IPAddressPool) -> tuple[bool, int, str]:
    priority = pool.spec.service_allocation.priority if pool.spec.service_allocation else 0
    return (priority == 0, priority, pool.name)


class _Pool:
    """One IPAddressPool with its per-family ranges (in the order written) and used addresses."""

    __slots__ = ("avoid_buggy", "capacity", "name", "pool", "ranges", "used")

    def __init__(self, pool: config.IPAddressPool) -> None:
        self.pool = pool
        self.name = pool.pool_name
        self.avoid_buggy = pool.spec.avoid_buggy_ips
        entries = pool.spec.addresses
        self.ranges = {f: tuple(r for r in entries if r.family is f) for f in (V4, V6)}
        self.capacity = {
            f: addresses.IntervalSet.of(f, entries).count(avoid_buggy=self.avoid_buggy)
            for f in (V4, V6)
        }
        self.used = {f: addresses.UsedAddresses(f) for f in (V4, V6)}

    def describe_free(self, families: Iterable[addresses.Family]) -> str:
        parts = []
        for family in families:
            if not self.capacity[family]:
                parts.append(f"no {family.label} addresses")
            else:
                free = self.capacity[family] - len(self.used[family])
                parts.append(f"{free} of {self.capacity[family]} {family.label} free")
        return ", ".join(parts)


@dataclass(slots=True)
class _Address:
    """An address in use: by whom, with which sharing key, backend and ports."""

    sharing: str
    backend: Backend
    holders: set[model.ServiceKey]
    ports: dict[Port, model.ServiceKey]


@dataclass(frozen=True, slots=True)
class _Holding:
    claim: _Claim
    allocation: Allocation


class Allocator:
    """Which Service holds which addresses, under one configuration. Not thread-safe."""

    def __init__(self, cfg: config.Config) -> None:
        self._pools, self._index = self._build(cfg)
        self._holdings: dict[model.ServiceKey, _Holding] = {}
        self._addresses: dict[addresses.IP, _Address] = {}
        # Sorted integers of the addresses carrying a sharing key, per (pool, family, key):
        # finding an address a Service may share costs a bisect, not a scan of the pool.
        self._shared: dict[tuple[config.PoolName, addresses.Family, str], list[int]] = {}

    @staticmethod
    def _build(
        cfg: config.Config,
    ) -> tuple[dict[config.PoolName, _Pool], config.PoolIndex]:
        pools = {name: _Pool(cfg.pools[name]) for name in sorted(cfg.pools)}
        return pools, cfg.pool_index()

    # Queries.

    def assignment_of(self, key: model.ServiceKey) -> Allocation | None:
        holding = self._holdings.get(key)
        return holding.allocation if holding else None

    def snapshot(self) -> dict[model.ServiceKey, Allocation]:
        return {key: h.allocation for key, h in sorted(self._holdings.items())}

    def holders(self, ip: addresses.IP) -> frozenset[model.ServiceKey]:
        use = self._addresses.get(ip)
        return frozenset(use.holders) if use else frozenset()

    def pool_stats(self, name: config.PoolName) -> PoolStats:
        pool = self._pools[name]
        v4, v6 = len(pool.used[V4]), len(pool.used[V6])
        return PoolStats(v4, v6, pool.capacity[V4] - v4, pool.capacity[V6] - v6)

    # Changes.

    def update_config(self, cfg: config.Config) -> list[model.ServiceKey]:
        """Apply a new configuration; return the Services whose addresses it no longer covers.

        Those lose their addresses now (a ClearAssignment each). Every other Service keeps its
        addresses, re-attributed to whichever pool now covers them; the caller must still
        `assign` every Service, since a serviceAllocation may now exclude it.
        Raises ValueError, changing nothing, if pools overlap (validate first).
        """
        pools, index = self._build(cfg)
        holdings = self._holdings
        self._pools, self._index = pools, index
        self._holdings, self._addresses, self._shared = {}, {}, {}
        dropped = []
        for key, holding in sorted(holdings.items()):
            pool, _ = self._covering(holding.allocation.ips)
            if pool is None:
                dropped.append(key)
            else:
                self._add(_Holding(holding.claim, Allocation(pool, holding.allocation.ips)))
        return dropped

    def release(self, key: model.ServiceKey) -> Allocation | None:
        holding = self._holdings.get(key)
        if holding is None:
            return None
        self._remove(key)
        return holding.allocation

    def reserve(self, service: model.Service, ips: Sequence[addresses.IP]) -> Result:
        """Hold `ips` for the Service (a restart re-reserving `status.loadBalancer.ingress`).

        Succeeds whenever one pool covers the addresses and sharing rules allow it, even if
        `assign` would choose differently today; `assign` later decides whether they stay.
        Like every Failed result, a refusal leaves the Service holding nothing.
        """
        claim = _claim_of(service)
        pool, refusal = self._reservable(claim, ips)
        if pool is not None:
            return self._take(claim, Allocation(pool, tuple(ips)), cleared=None)
        held = self._holdings.get(claim.key)
        self.release(claim.key)
        return Failed(claim.key, refusal, self._cleared(held, refusal))

    def _reservable(
        self, claim: _Claim, ips: Sequence[addresses.IP]
    ) -> tuple[config.PoolName | None, str]:
        """The pool that would hold `ips` for `claim`, or None and why not."""
        if not ips:
            return None, "no address to reserve"
        try:
            _families_of(ips, "status.loadBalancer.ingress")
        except ValueError as e:
            return None, str(e)
        pool, why = self._covering(ips)
        if pool is None:
            return None, why
        for ip in ips:
            if conflict := self._conflict(claim, ip):
                return None, conflict
        return pool, ""

    def assign(self, service: model.Service, namespace_labels: Mapping[str, str]) -> Result:
        """Give the Service addresses, keeping the ones it holds if they are still valid.

        `namespace_labels` are the labels of the Service's namespace (for namespaceSelectors).
        Call it only for Services `is_handled` accepts; `release` the others.
        """
        claim = _claim_of(service)
        key = claim.key
        held = self._holdings.get(key)
        if not self._pools:
            self.release(key)
            reason = "no IPAddressPool is configured"
            return Failed(key, reason, self._cleared(held, reason))
        try:
            request = _request_of(service, namespace_labels)
        except _Refused as e:
            self.release(key)
            return Failed(key, str(e), self._cleared(held, str(e)))
        cleared = None
        if held is not None:
            invalid = self._invalidity(held.allocation, claim, request)
            if invalid is None:
                return self._keep(claim, held, request)
            self._remove(key)
            cleared = f"{held.allocation} is no longer valid: {invalid}"
        return self._allocate(claim, request, cleared)

    # Keeping.

    def _invalidity(self, held: Allocation, claim: _Claim, request: _Request) -> str | None:
        """Why the held addresses may not stay (MetalLB's order of checks), or None."""
        families = frozenset(addresses.family_of(ip) for ip in held.ips)
        if families != request.families and not (request.prefer_dual and families < DUAL):
            return (
                f"the Service is {_family_text(request.families)} but holds "
                f"{_family_text(families)} addresses"
            )
        pool, why = self._covering(held.ips)
        if pool is None:
            return why
        if excluded := _compatibility(self._pools[pool].pool, request):
            return f"IPAddressPool {pool} no longer accepts the Service: {excluded}"
        for ip in held.ips:
            if conflict := self._conflict(claim, ip):
                return conflict
        if request.desired_pool is not None and request.desired_pool != pool:
            return f"metallb.io/{ADDRESS_POOL} now asks for IPAddressPool {request.desired_pool}"
        if request.desired_ips and set(request.desired_ips) != set(held.ips):
            return f"the Service now asks for {', '.join(map(str, request.desired_ips))}"
        return None

    def _keep(self, claim: _Claim, held: _Holding, request: _Request) -> Result:
        allocation = held.allocation
        warning = request.desired_error
        if request.prefer_dual and len(allocation.ips) == 1:
            pool = self._pools[allocation.pool]
            missing = V6 if addresses.family_of(allocation.ips[0]) is V4 else V4
            found = self._first_acceptable(pool, missing, claim)
            if found is None and pool.capacity[missing]:
                warning = warning or (
                    f"PreferDualStack: IPAddressPool {pool.name} has no free {missing.label} "
                    "address for the second family yet"
                )
            elif found is not None:
                extra = addresses.to_ip(missing, found)
                allocation = Allocation(allocation.pool, (*allocation.ips, extra))
        changed = self._take(claim, allocation, cleared=None).changed
        return Assigned(claim.key, allocation, changed, None, warning)

    def _cleared(self, held: _Holding | None, reason: str) -> str | None:
        return f"{held.allocation} was released: {reason}" if held else None

    # Allocating.

    def _allocate(self, claim: _Claim, request: _Request, cleared: str | None) -> Result:
        key = claim.key
        if request.desired_error:
            return Failed(key, request.desired_error, cleared)
        if request.desired_ips:
            return self._allocate_requested(claim, request, cleared)
        if request.desired_pool is not None:
            pool = self._pools.get(request.desired_pool)
            if pool is None:
                known = ", ".join(self._pools) or "none"
                return Failed(
                    key,
                    f"metallb.io/{ADDRESS_POOL} names IPAddressPool {request.desired_pool}, "
                    f"which does not exist (pools: {known})",
                    cleared,
                )
            if excluded := _compatibility(pool.pool, request):
                return Failed(
                    key, f"IPAddressPool {pool.name} refuses the Service: {excluded}", cleared
                )
            choice = self._choose([pool], claim, request)
            if choice is None:
                details = pool.describe_free(sorted(request.families))
                return Failed(
                    key,
                    f"IPAddressPool {pool.name} does not have {self._need_text(claim, request)} "
                    f"({details})",
                    cleared,
                )
            return self._take(claim, choice, cleared)
        pinned = sorted(
            (
                p
                for p in self._pools.values()
                if p.pool.spec.service_allocation is not None
                and p.pool.spec.auto_assign
                and _compatibility(p.pool, request) is None
            ),
            key=lambda p: _priority_order(p.pool),
        )
        fallback = [
            p
            for p in self._pools.values()
            if p.pool.spec.auto_assign and p.pool.spec.service_allocation is None
        ]
        choice = self._choose(pinned, claim, request) or self._choose(fallback, claim, request)
        if choice is None:
            return Failed(key, self._exhausted(claim, request), cleared)
        return self._take(claim, choice, cleared)

    def _allocate_requested(self, claim: _Claim, request: _Request, cleared: str | None) -> Result:
        key, ips = claim.key, request.desired_ips
        wanted = frozenset(addresses.family_of(ip) for ip in ips)
        shown = ", ".join(map(str, ips))
        if wanted != request.families:
            return Failed(
                key,
                f"requested {shown} ({_family_text(wanted)}) does not match the Service's "
                f"IP family ({_family_text(request.families)}, from its clusterIPs)",
                cleared,
            )
        pool, why = self._covering(ips)
        if pool is None:
            return Failed(key, f"cannot use {shown}: {why}", cleared)
        if excluded := _compatibility(self._pools[pool].pool, request):
            return Failed(key, f"IPAddressPool {pool} refuses the Service: {excluded}", cleared)
        for ip in ips:
            if conflict := self._conflict(claim, ip):
                return Failed(key, f"cannot use {shown}: {conflict}", cleared)
        if request.desired_pool is not None and request.desired_pool != pool:
            return Failed(
                key,
                f"requested {shown} is in IPAddressPool {pool}, not in IPAddressPool "
                f"{request.desired_pool} named by metallb.io/{ADDRESS_POOL}",
                cleared,
            )
        return self._take(claim, Allocation(pool, ips), cleared)

    def _choose(self, pools: list[_Pool], claim: _Claim, request: _Request) -> Allocation | None:
        """MetalLB's findBestPoolForService: the first pool that has every needed family;
        for PreferDualStack, failing that, the first pool with the primary family, then the
        first with the other one."""
        if len(request.families) == 1:
            (family,) = request.families
            for pool in pools:
                found = self._first_acceptable(pool, family, claim)
                if found is not None:
                    return Allocation(pool.name, (addresses.to_ip(family, found),))
            return None
        secondary = V4 if request.primary is V6 else V6
        fallbacks: dict[addresses.Family, Allocation] = {}
        for pool in pools:
            v4 = self._first_acceptable(pool, V4, claim)
            v6 = self._first_acceptable(pool, V6, claim)
            if v4 is not None and v6 is not None:
                return Allocation(pool.name, (addresses.to_ip(V4, v4), addresses.to_ip(V6, v6)))
            if not request.prefer_dual:
                continue
            for family, found in ((V4, v4), (V6, v6)):
                if found is not None and family not in fallbacks:
                    fallbacks[family] = Allocation(pool.name, (addresses.to_ip(family, found),))
        return fallbacks.get(request.primary) or fallbacks.get(secondary)

    def _first_acceptable(self, pool: _Pool, family: addresses.Family, claim: _Claim) -> int | None:
        """The first address of the pool's first entry (in written order) that has one, that
        is free or shareable by `claim`; None if the pool has none of this family."""
        used = pool.used[family]
        shared = self._shared.get((pool.name, family, claim.sharing)) if claim.sharing else None
        for entry in pool.ranges[family]:
            free = used.first_free(entry.first, entry.last, avoid_buggy=pool.avoid_buggy)
            if shared:
                bound = entry.last if free is None else free - 1
                i = bisect_left(shared, entry.first)
                while i < len(shared) and shared[i] <= bound:
                    if self._conflict(claim, addresses.to_ip(family, shared[i])) is None:
                        return shared[i]
                    i += 1
            if free is not None:
                return free
        return None

    def _need_text(self, claim: _Claim, request: _Request) -> str:
        if len(request.families) == 1:
            need = f"a free {_family_text(request.families)} address"
        elif request.prefer_dual:
            need = "a free IPv4 or IPv6 address"
        else:
            need = "free IPv4 and IPv6 addresses"
        if claim.sharing:
            need += f" (or one shareable with {ALLOW_SHARED_IP} {claim.sharing!r})"
        return need

    def _exhausted(self, claim: _Claim, request: _Request) -> str:
        if not any(p.pool.spec.auto_assign for p in self._pools.values()):
            return (
                f"every IPAddressPool has autoAssign: false: request one with "
                f"metallb.io/{ADDRESS_POOL} or an address with metallb.io/{LOAD_BALANCER_IPS}"
            )
        details = []
        for pool in self._pools.values():
            if not pool.pool.spec.auto_assign:
                state = "autoAssign: false"
            elif excluded := _compatibility(pool.pool, request):
                state = excluded.removeprefix("its ")
            else:
                state = pool.describe_free(sorted(request.families))
            details.append(f"{pool.name} ({state})")
        return (
            f"no IPAddressPool has {self._need_text(claim, request)} (pools: {', '.join(details)})"
        )

    # State.

    def _covering(self, ips: Sequence[addresses.IP]) -> tuple[config.PoolName | None, str]:
        """The one pool covering every address (MetalLB poolFor), or None and why not."""
        owners = set()
        for ip in ips:
            family = addresses.family_of(ip)
            owner = self._index.pool_of(ip)
            if owner is None:
                return None, f"{ip} is not in any IPAddressPool"
            if self._pools[owner].avoid_buggy and addresses.is_buggy(family, int(ip)):
                return None, (
                    f"{ip} is in IPAddressPool {owner}, whose avoidBuggyIPs excludes "
                    "addresses ending in .0 and .255"
                )
            owners.add(owner)
        if len(owners) > 1:
            return (
                None,
                f"{', '.join(map(str, ips))} are in different pools ({', '.join(sorted(owners))})",
            )
        return owners.pop(), ""

    def _conflict(self, claim: _Claim, ip: addresses.IP) -> str | None:
        """Why `claim` may not use `ip` alongside its other holders, or None."""
        use = self._addresses.get(ip)
        if use is None:
            return None
        others = use.holders - {claim.key}
        if not others:
            return None
        holders = ", ".join(sorted(others))
        if not use.sharing:
            return (
                f"{ip} is held by {holders}, which does not allow sharing "
                f"(no {ALLOW_SHARED_IP} annotation)"
            )
        if not claim.sharing:
            return (
                f"{ip} is held by {holders}; to share it, give this Service the annotation "
                f"metallb.io/{ALLOW_SHARED_IP}: {use.sharing!r}"
            )
        if claim.sharing != use.sharing:
            return (
                f"{ip} is held by {holders} with {ALLOW_SHARED_IP} {use.sharing!r}, "
                f"not {claim.sharing!r}"
            )
        if claim.backend != use.backend:
            return (
                f"{ip} is held by {holders}: Services sharing an address with "
                "externalTrafficPolicy Local must select the same pods (and all share it with "
                "the same policy)"
            )
        for port in sorted(claim.ports):
            owner = use.ports.get(port)
            if owner is not None and owner != claim.key:
                return f"{ip} is held by {owner}, which already uses port {port[0]}/{port[1]}"
        return None

    def _take(self, claim: _Claim, allocation: Allocation, cleared: str | None) -> Assigned:
        previous = self._holdings.get(claim.key)
        if previous is not None:
            self._remove(claim.key)
        self._add(_Holding(claim, allocation))
        changed = previous is None or previous.allocation != allocation
        return Assigned(claim.key, allocation, changed, cleared)

    def _add(self, holding: _Holding) -> None:
        claim, allocation = holding.claim, holding.allocation
        pool = self._pools[allocation.pool]
        for ip in allocation.ips:
            use = self._addresses.get(ip)
            if use is None:
                use = _Address(claim.sharing, claim.backend, set(), {})
                self._addresses[ip] = use
                family = addresses.family_of(ip)
                pool.used[family].add(int(ip))
                if claim.sharing:
                    insort(self._shared.setdefault((pool.name, family, claim.sharing), []), int(ip))
            use.holders.add(claim.key)
            for port in claim.ports:
                use.ports[port] = claim.key
        self._holdings[claim.key] = holding

    def _remove(self, key: model.ServiceKey) -> None:
        holding = self._holdings.pop(key)
        pool = self._pools[holding.allocation.pool]
        for ip in holding.allocation.ips:
            use = self._addresses[ip]
            use.holders.discard(key)
            for port in holding.claim.ports:
                if use.ports.get(port) == key:
                    del use.ports[port]
            if use.holders:
                continue
            del self._addresses[ip]
            family = addresses.family_of(ip)
            pool.used[family].discard(int(ip))
            if use.sharing:
                shared = self._shared[(pool.name, family, use.sharing)]
                del shared[bisect_left(shared, int(ip))]
                if not shared:
                    del self._shared[(pool.name, family, use.sharing)]
