"""What each speaker announces: at layer 2 (one owner per address), and over BGP (every eligible
node, for the router to spread traffic by ECMP).

Layer 2, decided alike by every speaker:

Per address (not per Service: Services sharing an address stay together):
1. The Services showing it (type LoadBalancer, handled class) that want it announced: at least
   one endpoint that can serve (ready, readiness unknown, or serving while terminating), and an
   L2Advertisement that selects the address's pool and the Service.
2. Each such Service's candidate nodes: a Node object exists; not `NetworkUnavailable=True`;
   no `node.kubernetes.io/exclude-from-external-load-balancers` label (unless the speakers run
   with --ignore-exclude-lb); selected by a matching advertisement's nodeSelectors; for
   externalTrafficPolicy Local, a local serving endpoint. The address's candidates are those
   all its Services agree on.
3. Of those, the live ones (membership, or Node readiness without it) that are not draining
   and, by the health they publish (`Health`), can announce the address.
4. The owner: the best rendezvous hash of (node, address) (`core.election`).

Every input is shared cluster state, or published by the nodes themselves through membership,
so every speaker reaches the same answer without talking about it.

BGP, decided by each node for itself (`bgp`): a node advertises a Service address to a peer
when a BGPAdvertisement selects the address's pool, the Service and the node, and names that
peer (or none); when the node is not excluded; and when the Service has a serving endpoint
(anywhere for Cluster, on this node for Local). The prefix is the address widened to the
advertisement's aggregation length; communities (aliases resolved) and local preference are
merged over every advertisement that yields the same prefix for the same peer. Pure.

PodCIDRs (native pod routing, `PodCidrAdvertisement`): each of the node's `spec.podCIDRs`, IPv4
and IPv6, goes to every peer of the node, or to the configured ones among them, with the
configured communities. Neither the exclude-from-external-load-balancers label nor
`NetworkUnavailable` stops them: they are about reaching the node's pods, not about load
balancing, and announcing them is what makes the pod network available. Without a Node object
there is no PodCIDR (and no peer) to advertise: everything is withdrawn, and advertised again
when the Node and its `podCIDRs` (the controller-manager assigns them after the Node registers)
appear. A PodCIDR that does not parse is reported in the plan's problems and skipped.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ironlb.core import addresses, alloc, community, config, election, interfaces, model, selectors

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


@dataclass(frozen=True, slots=True)
class Health:
    """What a speaker publishes about itself (membership meta): enough for its peers to know
    which addresses it can announce."""

    draining: bool = False
    """Shutting down: hand everything over."""
    blind: bool = False
    """No interface can announce anything."""
    blocked: tuple[interfaces.Network, ...] = ()
    """Subnets none of its usable interfaces serve (`core.interfaces.blocked_subnets`)."""

    _VERSION = 1
    _DRAINING, _BLIND = 1, 2
    LIMIT = 64

    def encode(self) -> bytes:
        """At most `LIMIT` bytes. Subnets that do not fit make the node blind: wrongly staying a
        candidate would leave addresses unanswered, wrongly leaving is only a failover."""
        flags = (self._DRAINING if self.draining else 0) | (self._BLIND if self.blind else 0)
        body = b""
        for net in self.blocked:
            packed = net.network_address.packed[: (net.prefixlen + 7) // 8]
            entry = struct.pack("!BB", net.version, net.prefixlen) + packed
            if 2 + len(body) + len(entry) > self.LIMIT:
                return struct.pack("!BB", self._VERSION, flags | self._BLIND)
            body += entry
        return struct.pack("!BB", self._VERSION, flags) + body

    @classmethod
    def decode(cls, data: bytes) -> Health:
        """Never raises: unreadable meta (another version) counts as a healthy peer."""
        if len(data) < 2 or data[0] != cls._VERSION:
            return cls()
        flags, body, blocked = data[1], data[2:], []
        while len(body) >= 2:
            version, prefixlen = body[0], body[1]
            size = (prefixlen + 7) // 8
            full = 4 if version == 4 else 16
            if version not in (4, 6) or prefixlen > full * 8 or len(body) < 2 + size:
                break
            raw = body[2 : 2 + size] + bytes(full - size)
            net = ipaddress.ip_network((raw, prefixlen), strict=False)
            blocked.append(net)
            body = body[2 + size :]
        return cls(bool(flags & cls._DRAINING), bool(flags & cls._BLIND), tuple(blocked))

    def can_announce(self, address: addresses.IP) -> bool:
        return not self.draining and interfaces.can_announce(address, self.blocked, self.blind)


@dataclass(frozen=True, slots=True)
class View:
    """The cluster as one speaker sees it."""

    services: Mapping[str, model.Service]
    endpoints: Mapping[model.ServiceKey, tuple[model.EndpointSlice, ...]]
    nodes: Mapping[str, model.Node]
    config: config.Config
    live: Mapping[election.NodeName, Health]
    """Nodes whose speaker is alive, with what each publishes."""
    lb_class: str | None = None
    ignore_exclude_lb: bool = False


@dataclass(frozen=True, slots=True)
class Announcement:
    address: addresses.IP
    services: tuple[model.ServiceKey, ...]
    owner: election.NodeName | None
    """None: no live candidate (see `reason`)."""
    candidates: tuple[election.NodeName, ...] = ()
    """Eligible nodes, live or not, sorted."""
    interfaces: frozenset[str] = frozenset()
    """Interface names the advertisements allow on the owner (empty: any)."""
    refresh: float | None = None
    """Seconds between periodic gratuitous announcements (None: only on takeover)."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class _Wanted:
    service: model.Service
    pool: config.IPAddressPool
    advertisements: tuple[config.L2Advertisement, ...] = field(default=())


def _serving(endpoint: model.Endpoint) -> bool:
    conditions = endpoint.conditions
    return conditions.ready is not False or conditions.serving is True


def serving_nodes(slices: Iterable[model.EndpointSlice]) -> tuple[bool, frozenset[str]]:
    """Whether any endpoint can serve, and the nodes that host one."""
    any_serving, nodes = False, set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.endpoints:
            if _serving(endpoint):
                any_serving = True
                if endpoint.node_name:
                    nodes.add(endpoint.node_name)
    return any_serving, frozenset(nodes)


def selects(
    adv: config.L2Advertisement | config.BGPAdvertisement,
    pool: config.IPAddressPool,
    service: model.Service,
) -> bool:
    """Whether an advertisement covers this pool (`config.selects_pool`) and this Service
    (serviceSelectors)."""
    spec = adv.spec
    if not config.selects_pool(spec.ip_address_pools, spec.ip_address_pool_selectors, pool):
        return False
    return selectors.any_matches(spec.service_selectors, service.metadata.labels)


def _node_ok(node: model.Node, view: View) -> bool:
    if node.network_unavailable:
        return False
    return view.ignore_exclude_lb or EXCLUDE_LB_LABEL not in node.metadata.labels


def _candidates(wanted: _Wanted, view: View, local: frozenset[str] | None) -> set[str]:
    out = set()
    for name, node in view.nodes.items():
        if not _node_ok(node, view):
            continue
        if local is not None and name not in local:
            continue
        if any(
            selectors.any_matches(a.spec.node_selectors, node.metadata.labels)
            for a in wanted.advertisements
        ):
            out.add(name)
    return out


def _wanted_l2(
    service: model.Service,
    view: View,
    index: config.PoolIndex,
    advertisements: list[config.L2Advertisement],
) -> dict[addresses.IP, _Wanted]:
    """The addresses `service` wants announced at layer 2, with what selects them."""
    out: dict[addresses.IP, _Wanted] = {}
    if not alloc.is_handled(service, view.lb_class):
        return out
    for ip in service.ingress_ips:
        pool_name = index.pool_of(ip)
        if pool_name is None:
            continue
        pool = view.config.pools[pool_name]
        matching = tuple(a for a in advertisements if selects(a, pool, service))
        if matching:
            out[ip] = _Wanted(service, pool, matching)
    return out


def _l2_advertisements(cfg: config.Config) -> list[config.L2Advertisement]:
    return sorted(cfg.l2_advertisements.values(), key=lambda a: a.name)


def layer2(view: View) -> dict[addresses.IP, Announcement]:
    """Every address some Service wants announced at layer 2, with its owner."""
    index = view.config.pool_index()
    by_address: dict[addresses.IP, list[_Wanted]] = {}
    advertisements = _l2_advertisements(view.config)
    for service in view.services.values():
        for ip, one in _wanted_l2(service, view, index, advertisements).items():
            by_address.setdefault(ip, []).append(one)
    out: dict[addresses.IP, Announcement] = {}
    for ip, wanted in sorted(by_address.items(), key=lambda kv: (kv[0].version, kv[0])):
        out[ip] = _decide(ip, wanted, view)
    return out


class Layer2Planner:
    """`layer2(view)`, kept up to date incrementally: after `full(view)`, `services(view, keys)`
    re-decides only the addresses the changed Services (or their endpoints) had or have, and
    `liveness(view, nodes)` only those whose owner some nodes' liveness or health can change;
    both give the same plan as `layer2(view)` would. Anything else (configuration, Node
    objects) changes every address's decision: call `full`.

    A membership change is the one that must be cheap: it is what a node's death looks like,
    and the plan that follows is on the failover path. Each address keeps what its decision
    does not owe to liveness (`_Eligible`: its Services, candidates and their election ranking),
    so a node going or coming costs a walk of the addresses, not an election of each."""

    def __init__(self) -> None:
        self.plan: dict[addresses.IP, Announcement] = {}
        self._wanted: dict[model.ServiceKey, dict[addresses.IP, _Wanted]] = {}
        self._by_address: dict[addresses.IP, dict[model.ServiceKey, _Wanted]] = {}
        self._eligible: dict[addresses.IP, _Eligible] = {}
        self._index: config.PoolIndex | None = None
        self._advertisements: list[config.L2Advertisement] = []

    def full(self, view: View) -> dict[addresses.IP, Announcement]:
        self._index = view.config.pool_index()
        self._advertisements = _l2_advertisements(view.config)
        self._wanted, self._by_address, self._eligible = {}, {}, {}
        for key, service in view.services.items():
            self._add(model.ServiceKey(key), service, view)
        self.plan = {}
        for ip, wanted in sorted(self._by_address.items(), key=lambda kv: _order(kv[0])):
            self.plan[ip] = self._redecide(ip, wanted, view)
        return self.plan

    def _redecide(
        self, ip: addresses.IP, wanted: Mapping[model.ServiceKey, _Wanted], view: View
    ) -> Announcement:
        eligible = self._eligible[ip] = _eligible(ip, list(wanted.values()), view)
        return _elect(ip, eligible, view)

    def liveness(self, view: View, nodes: Iterable[election.NodeName]) -> set[addresses.IP]:
        """Re-plan after these nodes came, went, or changed the health they publish (`view.live`
        is the new liveness); returns the addresses whose decision changed. An address is
        elected again only if one of them owns it, or ranks above its owner, or it has none
        and one of them is a candidate: nothing else can change its owner."""
        if self._index is None:
            self.full(view)
            return set(self.plan)
        changed = frozenset(nodes)
        if not changed:
            return set()
        affected: set[addresses.IP] = set()
        for ip, eligible in self._eligible.items():
            before = self.plan[ip]
            owner = before.owner
            if owner is None:
                if changed.isdisjoint(eligible.ranking):
                    continue
            elif owner not in changed:
                above = eligible.ranking[: eligible.ranking.index(owner)]
                if changed.isdisjoint(above):
                    continue
            after = _elect(ip, eligible, view)
            if after != before:
                self.plan[ip] = after
                affected.add(ip)
        return affected

    def services(self, view: View, keys: Iterable[model.ServiceKey]) -> set[addresses.IP]:
        """Re-plan after these Services (or their EndpointSlices) changed; returns the
        addresses whose decision was made again."""
        if self._index is None:
            self.full(view)
            return set(self.plan)
        affected: set[addresses.IP] = set()
        for key in set(keys):
            for ip in self._wanted.pop(key, {}):
                affected.add(ip)
                sharing = self._by_address[ip]
                del sharing[key]
                if not sharing:
                    del self._by_address[ip]
            service = view.services.get(key)
            if service is not None:
                affected |= self._add(key, service, view)
        for ip in affected:
            wanted = self._by_address.get(ip)
            if wanted:
                self.plan[ip] = self._redecide(ip, wanted, view)
            else:
                self.plan.pop(ip, None)
                self._eligible.pop(ip, None)
        return affected

    def _add(self, key: model.ServiceKey, service: model.Service, view: View) -> set[addresses.IP]:
        assert self._index is not None
        found = _wanted_l2(service, view, self._index, self._advertisements)
        if found:
            self._wanted[key] = found
            for ip, wanted in found.items():
                self._by_address.setdefault(ip, {})[key] = wanted
        return set(found)


def _order(ip: addresses.IP) -> tuple[int, int]:
    return ip.version, int(ip)


@dataclass(frozen=True, slots=True)
class _Eligible:
    """What an address's decision owes to everything but liveness: steps 1 and 2."""

    services: tuple[model.ServiceKey, ...]
    """The Services showing it that have a serving endpoint (none: nothing to announce)."""
    chosen: tuple[_Wanted, ...]
    """Theirs, in the same order."""
    candidates: tuple[election.NodeName, ...]
    """The nodes they agree on, sorted by name."""
    ranking: tuple[election.NodeName, ...]
    """The same, best first (`election.ranking`): the owner is the first live one."""


def _eligible(ip: addresses.IP, wanted: list[_Wanted], view: View) -> _Eligible:
    agreed: set[str] | None = None
    keys: list[model.ServiceKey] = []
    chosen: list[_Wanted] = []
    for w in sorted(wanted, key=lambda w: w.service.key):
        any_serving, local_nodes = serving_nodes(view.endpoints.get(w.service.key, ()))
        if not any_serving:
            continue  # nothing would answer behind the address: do not attract traffic
        local = local_nodes if w.service.spec.external_traffic_policy == "Local" else None
        nodes = _candidates(w, view, local)
        agreed = nodes if agreed is None else agreed & nodes
        keys.append(w.service.key)
        chosen.append(w)
    if agreed is None:
        return _Eligible((), (), (), ())
    candidates = tuple(sorted(election.NodeName(n) for n in agreed))
    return _Eligible(tuple(keys), tuple(chosen), candidates, election.ranking(ip, candidates))


def _elect(ip: addresses.IP, eligible: _Eligible, view: View) -> Announcement:
    """Steps 3 and 4: the first candidate in the ranking that is live and can announce it."""
    if not eligible.services:
        return Announcement(
            ip, (), None, reason="no Service at this address has a serving endpoint"
        )
    live = view.live
    owner: election.NodeName | None = None
    for node in eligible.ranking:
        health = live.get(node)
        if health is not None and health.can_announce(ip):
            owner = node
            break
    candidates = eligible.candidates
    listed, refresh = _interfaces_and_refresh(eligible.chosen, view, owner)
    reason = ""
    if owner is None:
        reason = (
            "no node is eligible (node selectors, exclusion label, NetworkUnavailable, or "
            "no local endpoint)"
            if not candidates
            else f"no eligible node can announce it now (eligible: {', '.join(candidates)})"
        )
    return Announcement(ip, eligible.services, owner, candidates, listed, refresh, reason)


def _decide(ip: addresses.IP, wanted: list[_Wanted], view: View) -> Announcement:
    return _elect(ip, _eligible(ip, wanted, view), view)


def _interfaces_and_refresh(
    chosen: Iterable[_Wanted], view: View, owner: str | None
) -> tuple[frozenset[str], float | None]:
    if owner is None:
        return frozenset(), None
    labels = view.nodes[owner].metadata.labels
    names: set[str] = set()
    unrestricted = False
    refresh: float | None = None
    for w in chosen:
        for adv in w.advertisements:
            if not selectors.any_matches(adv.spec.node_selectors, labels):
                continue
            if adv.spec.interfaces:
                names |= set(adv.spec.interfaces)
            else:
                unrestricted = True
            interval = adv.spec.gratuitous_refresh_interval
            if interval is not None and (refresh is None or interval < refresh):
                refresh = float(interval)
    return (frozenset() if unrestricted else frozenset(names)), refresh


Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Route:
    """One prefix to advertise to one peer."""

    prefix: Prefix
    local_pref: int | None = None
    """Only iBGP peers receive it."""
    communities: frozenset[community.Value] = frozenset()
    services: tuple[model.ServiceKey, ...] = ()
    """The Services behind it (none for a PodCIDR)."""


@dataclass(frozen=True, slots=True)
class BgpPlan:
    peers: Mapping[str, config.BGPPeer]
    """The BGPPeers this node peers with (their nodeSelectors select it), by name."""
    routes: Mapping[str, Mapping[Prefix, Route]]
    """Peer name -> what to advertise to it."""
    problems: tuple[str, ...] = ()
    """Communities that could not be resolved, and the like: reported, never fatal."""


def _communities(
    texts: Iterable[str], aliases: Mapping[str, community.Value], problems: list[str]
) -> frozenset[community.Value]:
    out = set()
    for text in texts:
        if text in aliases:
            out.add(aliases[text])
            continue
        try:
            out.add(config.parse_community(text))
        except ValueError as e:
            problems.append(f"community {text!r}: {e}")
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class PodCidrAdvertisement:
    """Advertise the node's own `spec.podCIDRs` (speaker flags --advertise-pod-cidrs,
    --pod-cidr-peers, --pod-cidr-communities)."""

    peers: frozenset[str] = frozenset()
    """BGPPeer names; empty: every peer of the node. A named peer that does not select the node
    gets nothing; one that does not exist is reported."""
    communities: tuple[str, ...] = ()
    """Community values (`65000:1`, `large:1:2:3`) or aliases of a Community object."""


def _pod_cidr_routes(
    node: model.Node,
    advertisement: PodCidrAdvertisement,
    cfg: config.Config,
    peers: Iterable[str],
    aliases: Mapping[str, community.Value],
    problems: list[str],
) -> dict[str, list[Route]]:
    """Peer name -> the node's PodCIDR routes for it."""
    for name in sorted(advertisement.peers - set(cfg.peers)):
        problems.append(f"pod CIDR peer {name!r}: no such BGPPeer")
    communities = _communities(advertisement.communities, aliases, problems)
    prefixes: list[Prefix] = []
    for cidr in node.spec.pod_cidrs:
        try:
            prefixes.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            problems.append(f"node {node.metadata.name}: podCIDR {cidr!r} is not a CIDR")
    chosen = [p for p in peers if not advertisement.peers or p in advertisement.peers]
    return {peer: [Route(prefix, None, communities) for prefix in prefixes] for peer in chosen}


def bgp(
    view: View,
    node_name: str,
    *,
    pod_cidrs: PodCidrAdvertisement | bool | None = None,
) -> BgpPlan:
    """What this node advertises to which of its peers. `pod_cidrs`: also the node's PodCIDRs
    (True: to every peer, without communities)."""
    return BgpPlanner(node_name, pod_cidrs=pod_cidrs).full(view)


def _merge(have: Route | None, route: Route) -> Route:
    """Two advertisements of one prefix to one peer: the best local preference, every
    community, every Service."""
    if have is None:
        return route
    prefs = [p for p in (have.local_pref, route.local_pref) if p is not None]
    return Route(
        route.prefix,
        max(prefs) if prefs else None,
        have.communities | route.communities,
        tuple(sorted(set(have.services) | set(route.services))),
    )


_RouteKey = tuple[str, Prefix]


class BgpPlanner:
    """`bgp(view, node)`, kept up to date incrementally like `Layer2Planner`: after `full`,
    `services(view, keys)` recomputes only the routes of the changed Services."""

    def __init__(
        self, node_name: str, *, pod_cidrs: PodCidrAdvertisement | bool | None = None
    ) -> None:
        self.node_name = node_name
        self.pod_cidrs: PodCidrAdvertisement | None = (
            PodCidrAdvertisement() if pod_cidrs is True else pod_cidrs or None
        )
        self._fixed_problems: list[str] = []
        """Problems of no Service (PodCIDRs)."""
        self.plan = BgpPlan({}, {})
        self._node: model.Node | None = None
        self._contributions: dict[model.ServiceKey, dict[_RouteKey, Route]] = {}
        self._problems: dict[model.ServiceKey, list[str]] = {}
        self._by_route: dict[_RouteKey, dict[model.ServiceKey, Route]] = {}
        self._fixed: dict[_RouteKey, Route] = {}
        """Routes of no Service (PodCIDRs)."""
        self._index: config.PoolIndex | None = None
        self._advertisements: list[config.BGPAdvertisement] = []
        self._aliases: Mapping[str, community.Value] = {}
        self.changed: set[tuple[str, Prefix]] | None = None
        """(peer, prefix) of the routes the last call decided again; None: all (`full`)."""

    def full(self, view: View) -> BgpPlan:
        self.changed = None
        self._contributions, self._problems, self._by_route, self._fixed = {}, {}, {}, {}
        self._index = None
        node = self._node = view.nodes.get(self.node_name)
        if node is None:
            self.plan = BgpPlan({}, {})
            return self.plan
        cfg = view.config
        peers = {
            name: peer
            for name, peer in sorted(cfg.peers.items())
            if selectors.any_matches(peer.spec.node_selectors, node.metadata.labels)
        }
        routes: dict[str, dict[Prefix, Route]] = {name: {} for name in peers}
        self.plan = BgpPlan(peers, routes)
        self._aliases = cfg.community_aliases()
        self._fixed_problems = []
        if self.pod_cidrs is not None:
            # PodCIDRs go out even from a node excluded from load balancing: its pods must
            # stay reachable.
            pod_routes = _pod_cidr_routes(
                node, self.pod_cidrs, cfg, peers, self._aliases, self._fixed_problems
            )
            for peer, found in pod_routes.items():
                for route in found:
                    fixed = (peer, route.prefix)
                    self._fixed[fixed] = _merge(self._fixed.get(fixed), route)
        if _node_ok(node, view):
            self._index = cfg.pool_index()
            self._advertisements = sorted(cfg.bgp_advertisements.values(), key=lambda a: a.name)
            if peers:
                for key in view.services:
                    self._add(model.ServiceKey(key), view)
        for route_key in set(self._by_route) | set(self._fixed):
            self._settle(route_key)
        self._publish_problems()
        return self.plan

    def services(self, view: View, keys: Iterable[model.ServiceKey]) -> BgpPlan:
        self.changed = set()
        if self._index is None or not self.plan.peers:
            return self.plan  # nothing is advertised, whatever the Services
        affected: set[_RouteKey] = self.changed
        for key in set(keys):
            for route_key in self._contributions.pop(key, {}):
                affected.add(route_key)
                sharing = self._by_route[route_key]
                del sharing[key]
                if not sharing:
                    del self._by_route[route_key]
            self._problems.pop(key, None)
            affected |= self._add(key, view)
        for route_key in affected:
            self._settle(route_key)
        self._publish_problems()
        return self.plan

    def _settle(self, route_key: _RouteKey) -> None:
        peer, prefix = route_key
        merged = self._fixed.get(route_key)
        for route in self._by_route.get(route_key, {}).values():
            merged = _merge(merged, route)
        routes = self.plan.routes[peer]
        assert isinstance(routes, dict)
        if merged is None:
            routes.pop(prefix, None)
        else:
            routes[prefix] = merged

    def _publish_problems(self) -> None:
        found = [*self._fixed_problems, *(p for ps in self._problems.values() for p in ps)]
        self.plan = BgpPlan(self.plan.peers, self.plan.routes, tuple(dict.fromkeys(found)))

    def _add(self, key: model.ServiceKey, view: View) -> set[_RouteKey]:
        service, node, index = view.services.get(key), self._node, self._index
        if service is None or node is None or index is None:
            return set()
        if not alloc.is_handled(service, view.lb_class) or not service.ingress_ips:
            return set()
        any_serving, local = serving_nodes(view.endpoints.get(service.key, ()))
        if not any_serving:
            return set()
        if service.spec.external_traffic_policy == "Local" and self.node_name not in local:
            return set()
        peers = self.plan.peers
        mine: dict[_RouteKey, Route] = {}
        problems: list[str] = []
        for ip in service.ingress_ips:
            pool_name = index.pool_of(ip)
            if pool_name is None:
                continue
            pool = view.config.pools[pool_name]
            for adv in self._advertisements:
                if not (
                    selects(adv, pool, service)
                    and selectors.any_matches(adv.spec.node_selectors, node.metadata.labels)
                ):
                    continue
                length = (
                    adv.spec.aggregation_length
                    if ip.version == 4
                    else (adv.spec.aggregation_length_v6)
                )
                prefix = ipaddress.ip_network(f"{ip}/{length}", strict=False)
                route = Route(
                    prefix,
                    adv.spec.local_pref or None,
                    _communities(adv.spec.communities, self._aliases, problems),
                    (service.key,),
                )
                for peer in adv.spec.peers or tuple(peers):
                    if peer in peers:
                        mine[(peer, prefix)] = _merge(mine.get((peer, prefix)), route)
        if problems:
            self._problems[key] = problems
        if mine:
            self._contributions[key] = mine
            for route_key, route in mine.items():
                self._by_route.setdefault(route_key, {})[key] = route
        return set(mine)


def mine(plan: Mapping[addresses.IP, Announcement], node: str) -> dict[addresses.IP, Announcement]:
    """The part of the plan this node announces."""
    return {ip: a for ip, a in plan.items() if a.owner == node}
