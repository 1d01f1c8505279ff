"""Why a LoadBalancer Service has no address, or why its address does not answer: pure rules
over one snapshot of the cluster.

Job: `diagnose(snapshot)` returns one `Finding` per problem: what is wrong, why it matters, and
the command or change that fixes it, naming the objects involved (`kind/namespace/name`). The
snapshot holds what `ironlb doctor` reads from the API (Services, EndpointSlices, Nodes, the
metallb.io configuration, ConfigurationStates, the webhook, the controller Lease, kube-proxy's
ConfigMap) and what every speaker publishes about itself (`SpeakerReport`: membership view,
interfaces, BGP sessions, addresses it does not announce and why, ARP/NDP conflicts).

Invariants: no I/O and no clock (`Snapshot.now` is passed in); a healthy cluster gives no
finding; the same snapshot always gives the same findings, in the same order (cluster-wide ones
first, then by Service). Decisions are the ones the controller and speakers make: allocation is
replayed with `core.alloc`, eligibility with `core.announce`, so the doctor cannot disagree with
what ironlb does.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ironlb.core import addresses, alloc, announce, config, election, model, selectors

# What speakers publish.

ESTABLISHED = "Established"


@dataclass(frozen=True, slots=True)
class InterfaceReport:
    """An interface a speaker may announce through, with its addresses (`ip/prefixlen`)."""

    name: str
    addresses: tuple[str, ...] = ()
    usable: bool = True
    """Up, with carrier, and allowed by the configuration."""


@dataclass(frozen=True, slots=True)
class SessionReport:
    """One BGP session of one node."""

    peer: str
    """BGPPeer name."""
    address: str = ""
    state: str = "Idle"
    since: float | None = None
    """Unix time of the last state change."""
    prefixes_sent: int = 0
    advertised: tuple[str, ...] = ()
    """Prefixes advertised to this peer now."""
    bfd: str | None = None
    """BFD session state (None: no BFD)."""
    last_notification: str = ""


@dataclass(frozen=True, slots=True)
class SpeakerReport:
    """What the speaker of one node publishes (the `SpeakerReport` object of `ironlb.io`)."""

    node: str
    membership: bool = True
    """Membership runs (a key is configured)."""
    key_ok: bool = True
    key_id: str = ""
    """A short digest of the signing key: equal on every node when the keys agree."""
    live: tuple[str, ...] = ()
    """Nodes this speaker's membership sees alive (itself included)."""
    ignore_exclude_lb: bool = False
    interfaces: tuple[InterfaceReport, ...] = ()
    announced: Mapping[str, str] = field(default_factory=dict)
    """Address -> interface, for the addresses this node answers ARP/NDP for."""
    not_announced: Mapping[str, str] = field(default_factory=dict)
    """Address -> why this node does not announce it although it is a candidate."""
    conflicts: Mapping[str, str] = field(default_factory=dict)
    """Address -> MAC of another host that answers ARP/NDP for it."""
    sessions: tuple[SessionReport, ...] = ()
    problems: tuple[str, ...] = ()
    """Why this node announces nothing, or less than it could (blind, isolated, draining)."""
    peer_problems: Mapping[str, str] = field(default_factory=dict)
    """BGPPeer name -> why this node runs no session to it although the peer selects it (its
    configuration cannot be used here: a missing password Secret or BFDProfile, no router ID)."""


# The rest of the snapshot.


@dataclass(frozen=True, slots=True)
class ConfigState:
    """A ConfigurationState object."""

    name: str
    namespace: str
    valid: bool
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class KubeProxy:
    """kube-proxy's configuration, from the `kube-proxy` ConfigMap of kube-system."""

    mode: str = ""
    strict_arp: bool = False


@dataclass(frozen=True, slots=True)
class Webhook:
    """The admission webhook as the API server would call it."""

    name: str
    """ValidatingWebhookConfiguration name."""
    service: str
    """`namespace/name` of the webhook Service."""
    ca_bundle: bool
    """A CA bundle is published in the configuration."""
    ready_endpoints: int
    failure_policy: str = "Fail"


@dataclass(frozen=True, slots=True)
class Controller:
    """The controller's leader Lease."""

    lease: str
    """`namespace/name` of the Lease."""
    holder: str | None
    """The holder identity, or None when nobody holds it (or the Lease is absent)."""
    renewed: float | None = None
    """Unix time of the last renewal."""
    duration: float = 15.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    services: Sequence[model.Service] = ()
    endpoints: Mapping[model.ServiceKey, tuple[model.EndpointSlice, ...]] = field(
        default_factory=dict
    )
    nodes: Sequence[model.Node] = ()
    namespaces: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Namespace name -> labels."""
    config: config.Config = field(default_factory=config.Config)
    namespace: str = "metallb-system"
    """Where the configuration lives."""
    config_errors: tuple[str, ...] = ()
    """Configuration objects that do not parse (one line each, naming the object)."""
    config_states: tuple[ConfigState, ...] = ()
    speakers: Mapping[str, SpeakerReport] = field(default_factory=dict)
    """Node name -> its speaker's report. A node without one has no speaker running."""
    speakers_known: bool = True
    """False when the reports could not be read (SpeakerReport CRD not installed, no right to
    read it): then nothing is concluded from their absence."""
    kube_proxy: KubeProxy | None = None
    deprecated: tuple[str, ...] = ()
    """Deprecated objects present: `AddressPool/ns/name`, `ConfigMap/ns/config`."""
    webhook: Webhook | None = None
    controller: Controller | None = None
    lb_class: str | None = None
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Finding:
    cause: str
    """A stable code, e.g. `no-pool`, for scripts."""
    subject: str
    """The object the finding is about: `Service/ns/name`, or a cluster-wide object."""
    what: str
    why: str
    fix: str
    objects: tuple[str, ...] = ()
    """Every object involved, `kind/namespace/name`."""

    def line(self) -> str:
        return f"{self.subject}: {self.what}. {self.why}. Fix: {self.fix}"


# Cause codes.
CLASS_NOT_OURS = "class-not-ours"
NO_POOL = "no-pool"
NO_ADVERTISEMENT = "no-advertisement"
NO_NODE_SELECTED = "advertisement-selects-no-node"
NO_INTERFACE = "interfaces-select-nothing"
NO_ENDPOINT = "no-endpoint"
LOCAL_NO_ENDPOINT = "local-no-endpoint"
EXCLUDED = "nodes-excluded"
NO_SPEAKER = "no-speaker"
OFF_SUBNET = "address-off-subnet"
STRICT_ARP = "ipvs-without-strict-arp"
DEPRECATED = "deprecated-config"
CONFLICT = "address-conflict"
BGP_SESSION = "bgp-session-down"
BGP_WITHDRAWN = "bgp-route-withdrawn"
BFD_DOWN = "bfd-down"
NO_MEMBERSHIP = "no-membership"
KEY_MISMATCH = "membership-key-mismatch"
WEBHOOK = "webhook-unreachable"
CONTROLLER = "controller-not-leading"
CONFIG_INVALID = "config-invalid"
NOT_ANNOUNCED = "not-announced"

LEGACY_CONVERSION = (
    "rewrite it as an IPAddressPool (same addresses, autoAssign, avoidBuggyIPs) plus an "
    "L2Advertisement or BGPAdvertisement for its protocol (MetalLB's configmaptocrs tool does "
    "this for the ConfigMap), kubectl apply them, then delete the old object"
)


def _ref(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def _svc_ref(service: model.Service) -> str:
    return _ref("Service", service.namespace, service.name)


def _obj_ref(obj: config.ConfigKind) -> str:
    return _ref(obj.KIND, obj.metadata.namespace, obj.name)


def _node_ref(name: str) -> str:
    return _ref("Node", "", name)


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


# Entry points.


def diagnose(snapshot: Snapshot, only: model.ServiceKey | None = None) -> list[Finding]:
    """Every finding: the cluster-wide ones, then those of each LoadBalancer Service (only the
    one `only` names, if given)."""
    findings = cluster_findings(snapshot)
    context = Context(snapshot)
    for service in sorted(snapshot.services, key=lambda s: s.key):
        if only is not None and service.key != only:
            continue
        if service.spec.type != "LoadBalancer":
            continue
        findings.extend(service_findings(snapshot, service, context))
    return findings


class Context:
    """What every Service's diagnosis shares, computed once per snapshot (the allocator replay
    only if some Service has no address: it is the costly part)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        cfg = snapshot.config
        self.index = cfg.pool_index()
        self.l2 = sorted(cfg.l2_advertisements.values(), key=lambda a: a.name)
        self.bgp = sorted(cfg.bgp_advertisements.values(), key=lambda a: a.name)
        self._allocator: alloc.Allocator | None = None
        self.nodes = sorted(snapshot.nodes, key=lambda n: n.name)
        self.owner_of: dict[str, tuple[str, str]] = {}
        self.conflicts_of: dict[str, list[tuple[str, str]]] = {}
        for node, report in sorted(snapshot.speakers.items()):
            for address, interface in report.announced.items():
                self.owner_of.setdefault(address, (node, interface))
            for address, mac in report.conflicts.items():
                self.conflicts_of.setdefault(address, []).append((node, mac))
        self.memo: dict[tuple[object, ...], Any] = {}
        """Per set of advertisements (and nodes): which nodes they select. Services mostly
        share a few such sets, so this makes the rules O(Services + Nodes), not the product."""

    @property
    def allocator(self) -> alloc.Allocator:
        if self._allocator is None:
            self._allocator = replay(self.snapshot)
        return self._allocator


def cluster_findings(snapshot: Snapshot) -> list[Finding]:
    findings: list[Finding] = []
    findings += _config_invalid(snapshot)
    findings += _deprecated(snapshot)
    findings += _controller(snapshot)
    findings += _webhook(snapshot)
    findings += _membership(snapshot)
    findings += _strict_arp(snapshot)
    return findings


def service_findings(
    snapshot: Snapshot, service: model.Service, context: Context | None = None
) -> list[Finding]:
    if service.spec.type != "LoadBalancer":
        return []
    if not alloc.is_handled(service, snapshot.lb_class):
        return [_class_not_ours(snapshot, service)]
    context = context or Context(snapshot)
    ips = service.ingress_ips
    if not ips:
        return [_no_address(snapshot, service, context.allocator)]
    findings: list[Finding] = []
    slices = snapshot.endpoints.get(service.key, ())
    any_serving, local_nodes = announce.serving_nodes(slices)
    if not any_serving:
        findings.append(_no_endpoint(service, slices))
    for ip in ips:
        pool_name = context.index.pool_of(ip)
        if pool_name is None:
            continue  # the controller clears it (ClearAssignment); nothing to announce
        pool = snapshot.config.pools[pool_name]
        findings += _address_findings(
            snapshot, context, service, ip, pool, any_serving, local_nodes
        )
    return findings


# Allocation (cause 1).


def replay(snapshot: Snapshot) -> alloc.Allocator:
    """An allocator holding every address Services show now, as the controller's would."""
    allocator = alloc.Allocator(snapshot.config)
    for service in sorted(snapshot.services, key=lambda s: s.key):
        if alloc.is_handled(service, snapshot.lb_class) and service.ingress_ips:
            allocator.reserve(service, service.ingress_ips)
    return allocator


def _class_not_ours(snapshot: Snapshot, service: model.Service) -> Finding:
    ours = snapshot.lb_class or "none (Services without spec.loadBalancerClass)"
    return Finding(
        CLASS_NOT_OURS,
        _svc_ref(service),
        f"spec.loadBalancerClass is {service.spec.load_balancer_class or 'unset'!s}, but ironlb "
        f"serves class {ours}",
        "no ironlb controller will give it an address; another implementation must",
        (
            f"recreate the Service without spec.loadBalancerClass (the field is immutable), or "
            f"run the controller and speakers with --lb-class "
            f"{service.spec.load_balancer_class}"
            if service.spec.load_balancer_class
            else "start the controller and speakers without --lb-class, or set "
            f"spec.loadBalancerClass: {snapshot.lb_class} on a recreated Service"
        ),
        (_svc_ref(service),),
    )


def _no_address(snapshot: Snapshot, service: model.Service, allocator: alloc.Allocator) -> Finding:
    cfg = snapshot.config
    pools = sorted(cfg.pools.values(), key=lambda p: p.name)
    pool_refs = tuple(_obj_ref(p) for p in pools)
    ref = _svc_ref(service)
    why = "the Service stays <pending>: nothing on the LAN can reach it"
    if not pools:
        return Finding(
            NO_POOL,
            ref,
            f"there is no IPAddressPool in namespace {snapshot.namespace}",
            why,
            f"kubectl apply -n {snapshot.namespace} -f a manifest with an IPAddressPool "
            "(spec.addresses: a range of free addresses on the nodes' LAN) and an L2Advertisement",
            (ref,),
        )
    result = allocator.assign(service, snapshot.namespaces.get(service.namespace, {}))
    if isinstance(result, alloc.Assigned):
        # The controller would assign one now: it is not running, not leading, or behind.
        return Finding(
            NO_POOL,
            ref,
            f"no address yet, though {result.allocation} is free for it",
            "the controller has not served the Service",
            "check that the controller runs and leads (`ironlb status`), and its logs",
            (ref, _ref("IPAddressPool", snapshot.namespace, result.allocation.pool)),
        )
    reason = result.reason
    requested = alloc.annotation(service, alloc.LOAD_BALANCER_IPS) or service.spec.load_balancer_ip
    named_pool = alloc.annotation(service, alloc.ADDRESS_POOL)
    fix: str
    if "not in any IPAddressPool" in reason or "avoidBuggyIPs" in reason:
        fix = (
            f"add {requested} to the spec.addresses of an IPAddressPool, or change the "
            "Service's requested address to one inside a pool"
        )
    elif named_pool and named_pool not in cfg.pools:
        fix = (
            f"create IPAddressPool {snapshot.namespace}/{named_pool}, or set the annotation "
            f"metallb.io/address-pool to one of: {_names(p.name for p in pools)}"
        )
    elif "autoAssign: false" in reason and "every IPAddressPool" in reason:
        fix = (
            "set spec.autoAssign: true on one of "
            f"{_names(pool_refs)}, or annotate the Service with metallb.io/address-pool"
        )
    elif "serviceAllocation" in reason:
        fix = (
            "widen spec.serviceAllocation (namespaces, namespaceSelectors, serviceSelectors) of "
            "the pool meant for it, or label the Service/namespace to match"
        )
    elif "held by" in reason or "shar" in reason:
        fix = (
            "give both Services the same metallb.io/allow-shared-ip value with disjoint ports, "
            "or request another address"
        )
    elif "free" in reason:
        families = _pool_families(pools)
        wanted = _service_families(service)
        if wanted and not wanted <= families:
            missing = " and ".join(f.label for f in sorted(wanted - families))
            fix = (
                f"add {missing} ranges to an IPAddressPool, or make the Service single-stack "
                "(spec.ipFamilyPolicy: SingleStack)"
            )
        else:
            fix = "add addresses to a pool's spec.addresses, or delete unused LoadBalancer Services"
    else:
        fix = "correct the Service as the message says"
    return Finding(NO_POOL, ref, reason, why, fix, (ref, *pool_refs))


def _pool_families(pools: Iterable[config.IPAddressPool]) -> frozenset[addresses.Family]:
    return frozenset(r.family for p in pools for r in p.spec.addresses)


def _service_families(service: model.Service) -> frozenset[addresses.Family]:
    spec = service.spec
    found = set()
    for text in spec.cluster_ips or ((spec.cluster_ip,) if spec.cluster_ip else ()):
        try:
            found.add(addresses.family_of(addresses.parse_ip(text)))
        except ValueError:
            continue
    if spec.ip_family_policy != "RequireDualStack" and len(found) > 1:
        primary = addresses.Family.V6 if spec.ip_families[:1] == ("IPv6",) else None
        found = {primary or addresses.Family.V4}
    return frozenset(found)


# Endpoints (cause 3).


def _no_endpoint(service: model.Service, slices: Sequence[model.EndpointSlice]) -> Finding:
    ref = _svc_ref(service)
    total = sum(len(s.endpoints) for s in slices)
    what = (
        "no EndpointSlice lists an endpoint"
        if total == 0
        else f"none of its {total} endpoints is ready or serving"
    )
    selector = ",".join(f"{k}={v}" for k, v in sorted(service.spec.selector.items()))
    fix = (
        f"kubectl get pods -n {service.namespace} -l {selector} and make them Ready "
        "(readiness probe, image, crash loop)"
        if selector
        else "the Service has no selector: create its EndpointSlice, or add a selector"
    )
    return Finding(
        NO_ENDPOINT,
        ref,
        what,
        "ironlb announces an address only when something can answer behind it, so nobody "
        "answers ARP/NDP or BGP for it",
        fix,
        (ref, *(_ref("EndpointSlice", s.metadata.namespace, s.metadata.name) for s in slices)),
    )


# Announcement (causes 2, 4, 5, 6, 9, 10).


def _eligible(snapshot: Snapshot, node: model.Node) -> bool:
    if node.network_unavailable:
        return False
    if announce.EXCLUDE_LB_LABEL not in node.metadata.labels:
        return True
    report = snapshot.speakers.get(node.name)
    return report is not None and report.ignore_exclude_lb


def _address_findings(
    snapshot: Snapshot,
    context: Context,
    service: model.Service,
    ip: addresses.IP,
    pool: config.IPAddressPool,
    any_serving: bool,
    local_nodes: frozenset[str],
) -> list[Finding]:
    ref = _svc_ref(service)
    l2 = [a for a in context.l2 if announce.selects(a, pool, service)]
    bgp = [a for a in context.bgp if announce.selects(a, pool, service)]
    advs: list[config.L2Advertisement | config.BGPAdvertisement] = [*l2, *bgp]
    if not advs:
        return [
            Finding(
                NO_ADVERTISEMENT,
                ref,
                f"{ip} comes from {_obj_ref(pool)}, but no L2Advertisement or BGPAdvertisement "
                "selects that pool and this Service",
                "an assigned address nobody announces: the LAN never learns where it is",
                f"kubectl apply -n {snapshot.namespace} an L2Advertisement (or BGPAdvertisement) "
                f"with spec.ipAddressPools: [{pool.name}] (and serviceSelectors matching the "
                "Service, if any)",
                (ref, _obj_ref(pool)),
            )
        ]
    adv_refs = tuple(_obj_ref(a) for a in advs)
    memo_key = ("selected", *(id(a) for a in advs))
    if memo_key not in context.memo:
        chosen = [
            n
            for n in context.nodes
            if any(selectors.any_matches(a.spec.node_selectors, n.metadata.labels) for a in advs)
        ]
        context.memo[memo_key] = (chosen, [n for n in chosen if _eligible(snapshot, n)])
    selected, eligible = context.memo[memo_key]
    if not selected:
        return [
            Finding(
                NO_NODE_SELECTED,
                ref,
                f"the nodeSelectors of {_names(adv_refs)} select no Node",
                f"no node announces {ip}",
                "fix the advertisements' spec.nodeSelectors, or label the nodes meant to "
                "announce (kubectl label node NODE KEY=VALUE)",
                (ref, _obj_ref(pool), *adv_refs),
            )
        ]
    if not eligible:
        excluded = [n.name for n in selected if announce.EXCLUDE_LB_LABEL in n.metadata.labels]
        unavailable = [n.name for n in selected if n.network_unavailable]
        parts = []
        if excluded:
            parts.append(f"{_names(excluded)} carry the label {announce.EXCLUDE_LB_LABEL}")
        if unavailable:
            parts.append(f"{_names(unavailable)} report NetworkUnavailable=True")
        fix = (
            f"kubectl label node {excluded[0]} {announce.EXCLUDE_LB_LABEL}- (or run the "
            "speakers with --ignore-exclude-lb, e.g. on a single-node cluster)"
            if excluded
            else "repair the node network (the CNI clears NetworkUnavailable)"
        )
        return [
            Finding(
                EXCLUDED,
                ref,
                "every node the advertisements select is excluded: " + "; ".join(parts),
                f"no node may announce {ip}",
                fix,
                (ref, *adv_refs, *(_node_ref(n.name) for n in selected)),
            )
        ]
    findings: list[Finding] = []
    eligible_only = not snapshot.speakers_known
    if service.spec.external_traffic_policy == "Local" and any_serving:
        local = [n for n in eligible if n.name in local_nodes]
        if not local:
            findings.append(
                Finding(
                    LOCAL_NO_ENDPOINT,
                    ref,
                    f"externalTrafficPolicy: Local, and no eligible node "
                    f"({_names(n.name for n in eligible)}) has a ready endpoint of it "
                    f"(endpoints run on: {_names(sorted(local_nodes))})",
                    "with Local only nodes hosting a pod may take traffic, and none of those may "
                    "announce, so nobody answers",
                    "set spec.externalTrafficPolicy: Cluster, or schedule the pods onto "
                    "announcing nodes, or widen the advertisements' nodeSelectors to their nodes",
                    (ref, *adv_refs, *(_node_ref(n.name) for n in eligible)),
                )
            )
            return findings
        eligible = local
    if not any_serving or eligible_only:
        return findings  # without the speakers' reports, nothing more can be told
    running = [n for n in eligible if n.name in snapshot.speakers]
    if not running:
        findings.append(
            Finding(
                NO_SPEAKER,
                ref,
                "no ironlb speaker runs on the eligible nodes "
                f"({_names(n.name for n in eligible)})",
                f"only a speaker on one of them can announce {ip}",
                "kubectl -n " + snapshot.namespace + " describe daemonset ironlb-speaker: give it "
                "tolerations for the nodes' taints and a nodeSelector that includes them",
                (ref, *(_node_ref(n.name) for n in eligible)),
            )
        )
        return findings
    conflicts = _conflicts(context, service, ip)
    findings += conflicts
    if l2:
        findings += _layer2(snapshot, context, service, ip, l2, running, bool(conflicts))
    if bgp:
        findings += _bgp(snapshot, service, ip, running)
    return findings


def _interfaces_of(report: SpeakerReport, listed: frozenset[str]) -> list[InterfaceReport]:
    return [i for i in report.interfaces if i.usable and (not listed or i.name in listed)]


@functools.lru_cache(maxsize=4096)
def _interface_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface | None:
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        return None


def _on_subnet(ip: addresses.IP, interfaces: Iterable[InterfaceReport]) -> bool:
    for interface in interfaces:
        for text in interface.addresses:
            own = _interface_address(text)
            if own is None:
                continue
            if (
                own.version == ip.version
                and own.network.prefixlen < own.max_prefixlen
                and ip in own.network
            ):
                return True
    return False


def _layer2(
    snapshot: Snapshot,
    context: Context,
    service: model.Service,
    ip: addresses.IP,
    advs: Sequence[config.L2Advertisement],
    running: Sequence[model.Node],
    conflicted: bool = False,
) -> list[Finding]:
    ref = _svc_ref(service)
    adv_refs = tuple(_obj_ref(a) for a in advs)
    findings: list[Finding] = []
    memo_key = ("layer2", *(id(a) for a in advs), *(n.name for n in running))
    if memo_key not in context.memo:
        context.memo[memo_key] = _l2_nodes(snapshot, advs, running)
    l2_nodes, listed, with_interface = context.memo[memo_key]
    if l2_nodes and not with_interface:
        wanted = sorted({i for n in l2_nodes for i in listed[n.name]})
        return [
            Finding(
                NO_INTERFACE,
                ref,
                f"no usable interface on the selected nodes ({_names(n.name for n in l2_nodes)}) "
                + (f"matches spec.interfaces {wanted}" if wanted else "can announce"),
                f"nobody answers ARP/NDP for {ip}",
                "fix spec.interfaces of the L2Advertisement to the nodes' LAN interface names "
                "(ip -br link on a node), or bring the interface up",
                (ref, *adv_refs, *(_node_ref(n.name) for n in l2_nodes)),
            )
        ]
    owner = context.owner_of.get(str(ip))
    if owner is None and conflicted:
        return findings  # the conflict is why: said once
    if owner is None:
        reasons = sorted(
            f"{node}: {why}"
            for node, report in sorted(snapshot.speakers.items())
            for addr, why in report.not_announced.items()
            if addr == str(ip)
        ) + [
            f"{n.name}: {problem}"
            for n in with_interface
            for problem in snapshot.speakers[n.name].problems
        ]
        findings.append(
            Finding(
                NOT_ANNOUNCED,
                ref,
                f"no speaker announces {ip} at layer 2"
                + (f" ({'; '.join(reasons)})" if reasons else ""),
                "nobody answers ARP/NDP for it, so the LAN cannot reach it",
                "see the reason each node gives (`ironlb status`); check the speakers' logs",
                (ref, *adv_refs, *(_node_ref(n.name) for n in with_interface)),
            )
        )
        return findings
    node_name, interface = owner
    report = snapshot.speakers[node_name]
    usable = [i for i in report.interfaces if i.usable]
    if report.interfaces and not _on_subnet(ip, usable):
        owner_node = next((n for n in snapshot.nodes if n.name == node_name), None)
        hops = [a for a in (owner_node.host_ips() if owner_node else ()) if _same_family(a, ip)]
        via = hops[0] if hops else f"<{node_name}'s address>"
        subnets = sorted(
            a for i in usable for a in i.addresses if _same_family(a.split("/")[0], ip)
        )
        length = 32 if ip.version == 4 else 128
        findings.append(
            Finding(
                OFF_SUBNET,
                ref,
                f"{ip} is announced by {node_name} on {interface or 'its interface'}, but lies "
                f"in none of that node's subnets ({_names(subnets)})",
                "clients on the node's segment may ignore ARP/NDP for an off-subnet address, "
                "and clients on other segments have no route to it",
                f"take the pool from the nodes' subnet, or add a route on the router: "
                f"ip route add {ip}/{length} via {via} (better, announce it with BGP)",
                (ref, _node_ref(node_name)),
            )
        )
    return findings


def _same_family(text: str, ip: addresses.IP) -> bool:
    try:
        return ipaddress.ip_address(text).version == ip.version
    except ValueError:
        return False


def _l2_nodes(
    snapshot: Snapshot, advs: Sequence[config.L2Advertisement], running: Sequence[model.Node]
) -> tuple[list[model.Node], dict[str, frozenset[str]], list[model.Node]]:
    """The running nodes the advertisements select, the interfaces they allow on each (empty:
    any), and those of the nodes that have such an interface usable."""
    l2_nodes = [
        n
        for n in running
        if any(selectors.any_matches(a.spec.node_selectors, n.metadata.labels) for a in advs)
    ]
    listed: dict[str, frozenset[str]] = {}
    for node in l2_nodes:
        names: set[str] = set()
        for adv in advs:
            if selectors.any_matches(adv.spec.node_selectors, node.metadata.labels):
                if not adv.spec.interfaces:
                    names = set()
                    break
                names |= set(adv.spec.interfaces)
        listed[node.name] = frozenset(names)
    with_interface = [
        n
        for n in l2_nodes
        if _interfaces_of(snapshot.speakers[n.name], listed[n.name])
        or not snapshot.speakers[n.name].interfaces
    ]
    return l2_nodes, listed, with_interface


def _conflicts(context: Context, service: model.Service, ip: addresses.IP) -> list[Finding]:
    seen = sorted(context.conflicts_of.get(str(ip), ()))
    if not seen:
        return []
    ref = _svc_ref(service)
    macs = sorted({mac for _, mac in seen})
    return [
        Finding(
            CONFLICT,
            ref,
            f"another host ({_names(macs)}) also answers ARP/NDP for {ip} "
            f"(seen by {_names(sorted({n for n, _ in seen}))})",
            "clients send part or all of the traffic to that host: the address flaps between "
            "owners",
            "find the host with that MAC (another cluster on this LAN, a static address) and "
            "give each cluster its own, non-overlapping IPAddressPool range",
            (ref, *(_node_ref(n) for n, _ in seen)),
        )
    ]


def _bgp(
    snapshot: Snapshot, service: model.Service, ip: addresses.IP, running: Sequence[model.Node]
) -> list[Finding]:
    ref = _svc_ref(service)
    findings: list[Finding] = []
    view = announce.View(
        services={service.key: service},
        endpoints={service.key: snapshot.endpoints.get(service.key, ())},
        nodes={n.name: n for n in snapshot.nodes},
        config=snapshot.config,
        live={election.NodeName(n.name): announce.Health() for n in running},
        lb_class=snapshot.lb_class,
        ignore_exclude_lb=False,
    )
    any_peer = False
    for node in running:
        report = snapshot.speakers[node.name]
        view_node = (
            view
            if not report.ignore_exclude_lb
            else announce.View(
                view.services,
                view.endpoints,
                view.nodes,
                view.config,
                view.live,
                view.lb_class,
                True,
            )
        )
        plan = announce.bgp(view_node, node.name)
        sessions = {s.peer: s for s in report.sessions}
        for peer, routes in sorted(plan.routes.items()):
            prefixes = [p for p, r in routes.items() if ip in p]
            if not prefixes:
                continue
            any_peer = True
            prefix = str(prefixes[0])
            peer_ref = _ref("BGPPeer", snapshot.namespace, peer)
            session = sessions.get(peer)
            unusable = report.peer_problems.get(peer) if session is None else None
            if unusable is not None:
                findings.append(
                    Finding(
                        BGP_SESSION,
                        ref,
                        f"{node.name} runs no BGP session to {peer_ref}: {unusable}",
                        f"the router does not learn {prefix} from {node.name}",
                        f"fix {peer_ref} (or what it names) so that {node.name} can use it; "
                        "the speaker's log says the same",
                        (ref, peer_ref, _node_ref(node.name)),
                    )
                )
                continue
            if session is None or session.state != ESTABLISHED:
                state = session.state if session else "no session"
                since = (
                    f" for {_age(snapshot.now - session.since)}"
                    if session and session.since is not None
                    else ""
                )
                notification = (
                    f"; last NOTIFICATION: {session.last_notification}"
                    if session and session.last_notification
                    else ""
                )
                findings.append(
                    Finding(
                        BGP_SESSION,
                        ref,
                        f"{node.name}'s BGP session to {peer_ref} "
                        f"({session.address if session else 'peer'}) is {state}{since}"
                        f"{notification}",
                        f"the router does not learn {prefix} from {node.name}",
                        "check the peer address, ASNs, password and that the router has "
                        f"{node.name} as a neighbor; TCP port 179 must be reachable",
                        (ref, peer_ref, _node_ref(node.name)),
                    )
                )
                continue
            if session.bfd is not None and session.bfd.lower() != "up":
                findings.append(
                    Finding(
                        BFD_DOWN,
                        ref,
                        f"BFD to {peer_ref} from {node.name} is {session.bfd}",
                        "a BFD session that is not Up takes the BGP session down on failure "
                        "detection; the router may not use this next hop",
                        "check the BFDProfile matches the router's BFD settings, and that UDP "
                        "3784/3785 (4784 multihop) passes",
                        (ref, peer_ref, _node_ref(node.name)),
                    )
                )
            listed_all = len(session.advertised) >= session.prefixes_sent  # else truncated
            if listed_all and prefix not in session.advertised:
                findings.append(
                    Finding(
                        BGP_WITHDRAWN,
                        ref,
                        f"{node.name} does not advertise {prefix} to {peer_ref}, though its "
                        "plan says it should",
                        "the route is withdrawn: the router sends no traffic through this node",
                        "look at the speaker's log on that node for refused UPDATEs",
                        (ref, peer_ref, _node_ref(node.name)),
                    )
                )
    if not any_peer:
        findings.append(
            Finding(
                BGP_SESSION,
                ref,
                f"a BGPAdvertisement selects {ip}, but no BGPPeer of the eligible nodes "
                f"({_names(n.name for n in running)}) gets it",
                "no router learns the address",
                "create a BGPPeer whose nodeSelectors select these nodes, or fix "
                "BGPAdvertisement spec.peers",
                (ref, *(_node_ref(n.name) for n in running)),
            )
        )
    return findings


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


# Cluster-wide (causes 7, 8, 11, 12, 13).


def _config_invalid(snapshot: Snapshot) -> list[Finding]:
    findings = []
    for state in sorted(snapshot.config_states, key=lambda s: (s.namespace, s.name)):
        if state.valid:
            continue
        ref = _ref("ConfigurationState", state.namespace, state.name)
        findings.append(
            Finding(
                CONFIG_INVALID,
                ref,
                f"the configuration is rejected: {state.last_error or 'no reason given'}",
                "the last valid configuration stays in force: changes since then are ignored",
                "correct the object the message names and kubectl apply it again",
                (ref,),
            )
        )
    for error in snapshot.config_errors:
        findings.append(
            Finding(
                CONFIG_INVALID,
                _ref("Namespace", "", snapshot.namespace),
                f"a configuration object cannot be read: {error}",
                "the last valid configuration stays in force",
                "correct the object the message names and kubectl apply it again",
                (_ref("Namespace", "", snapshot.namespace),),
            )
        )
    return findings


def _deprecated(snapshot: Snapshot) -> list[Finding]:
    findings = []
    for ref in snapshot.deprecated:
        kind = ref.split("/", 1)[0]
        what = (
            "a metallb.io/v1beta1 AddressPool is present (deprecated, ignored by ironlb)"
            if kind == "AddressPool"
            else "MetalLB's legacy `config` ConfigMap is present (ignored by ironlb)"
        )
        findings.append(
            Finding(
                DEPRECATED,
                ref,
                what,
                "the addresses it lists are not served: only IPAddressPool and advertisement "
                "objects count",
                LEGACY_CONVERSION,
                (ref,),
            )
        )
    return findings


def _controller(snapshot: Snapshot) -> list[Finding]:
    controller = snapshot.controller
    if controller is None:
        return []
    ref = _ref("Lease", *controller.lease.split("/", 1))
    expired = controller.renewed is not None and (
        snapshot.now - controller.renewed > controller.duration
    )
    if controller.holder and not expired:
        return []
    what = (
        "no controller holds the leader Lease"
        if not controller.holder
        else f"the leader Lease held by {controller.holder} was last renewed "
        f"{_age(snapshot.now - (controller.renewed or 0))} ago (duration "
        f"{controller.duration:g}s)"
    )
    return [
        Finding(
            CONTROLLER,
            ref,
            what,
            "no controller is leading: new Services get no address, freed addresses are not reused",
            f"kubectl -n {snapshot.namespace} get pods; kubectl -n {snapshot.namespace} logs "
            "deploy/ironlb-controller (is it crash-looping, or unable to reach the API?)",
            (ref,),
        )
    ]


def _webhook(snapshot: Snapshot) -> list[Finding]:
    webhook = snapshot.webhook
    if webhook is None:
        return []
    ref = _ref("ValidatingWebhookConfiguration", "", webhook.name)
    service_ref = _ref("Service", *webhook.service.split("/", 1))
    if not webhook.ca_bundle:
        return [
            Finding(
                WEBHOOK,
                ref,
                "its caBundle is empty: the controller has not published the webhook "
                "certificate yet",
                '`kubectl apply` of metallb.io objects fails with "failed calling webhook"'
                + (" (failurePolicy Fail)" if webhook.failure_policy == "Fail" else ""),
                "wait for the controller to start (it publishes the certificate), check its logs "
                "and RBAC to patch the ValidatingWebhookConfiguration",
                (ref, service_ref),
            )
        ]
    if webhook.ready_endpoints == 0:
        return [
            Finding(
                WEBHOOK,
                service_ref,
                f"the webhook Service has no ready endpoint ({ref} points at it)",
                "the API server cannot call the webhook: `kubectl apply` of metallb.io objects "
                'fails with "failed calling webhook"',
                f"kubectl -n {snapshot.namespace} get pods: the controller must be Ready; the "
                "API server must reach the pod network on the webhook port",
                (ref, service_ref),
            )
        ]
    return []


def _membership(snapshot: Snapshot) -> list[Finding]:
    findings: list[Finding] = []
    reports = sorted(snapshot.speakers.values(), key=lambda r: r.node)
    without = [r.node for r in reports if not r.membership or not r.key_ok]
    if without:
        findings.append(
            Finding(
                NO_MEMBERSHIP,
                _ref("Secret", snapshot.namespace, "memberlist"),
                f"speakers on {_names(without)} run without membership (no usable key in the "
                f"memberlist Secret)",
                "failover falls back to Node readiness: a dead node keeps its addresses for "
                "about 40 s (node-monitor-grace-period) instead of under a second",
                f"kubectl -n {snapshot.namespace} create secret generic memberlist "
                '--from-literal=secretkey="$(openssl rand -base64 128)", then restart the '
                "speakers",
                tuple(_node_ref(n) for n in without),
            )
        )
    keyed = [r for r in reports if r.membership and r.key_ok and r.key_id]
    ids = sorted({r.key_id for r in keyed})
    if len(ids) > 1:
        groups = {k: [r.node for r in keyed if r.key_id == k] for k in ids}
        findings.append(
            Finding(
                KEY_MISMATCH,
                _ref("Secret", snapshot.namespace, "memberlist"),
                "speakers sign membership with different keys: "
                + "; ".join(f"{_names(v)} use key {k}" for k, v in groups.items()),
                "nodes with different keys see each other as dead, and both sides announce the "
                "same addresses",
                "give every speaker the same memberlist Secret (one namespace, one Secret) and "
                "restart the speakers",
                tuple(_node_ref(r.node) for r in keyed),
            )
        )
    return findings


def _strict_arp(snapshot: Snapshot) -> list[Finding]:
    proxy = snapshot.kube_proxy
    if proxy is None or proxy.mode.lower() != "ipvs" or proxy.strict_arp:
        return []
    if not snapshot.config.l2_advertisements:
        return []
    ref = _ref("ConfigMap", "kube-system", "kube-proxy")
    return [
        Finding(
            STRICT_ARP,
            ref,
            "kube-proxy runs in IPVS mode without ipvs.strictARP: true",
            "every node answers ARP for every LoadBalancer address (kube-ipvs0), so traffic "
            "goes to random nodes and layer-2 failover does nothing",
            "kubectl -n kube-system edit configmap kube-proxy: set ipvs.strictARP: true, then "
            "kubectl -n kube-system rollout restart daemonset kube-proxy",
            (ref,),
        )
    ]
