"""Cross-object validation of a configuration: MetalLB's webhook rules, with better messages.

Job: given a `Config` (objects that each parsed on their own), list every problem, each naming the
object, the field and what to do. The admission webhook rejects a change whose resulting config
has an ERROR; the controller applies a config only when it has neither ERROR nor TRANSIENT
problems (the last applicable one stays in force otherwise).

Severities:
- ERROR: MetalLB's webhook rejects it too (overlapping pools, impossible timers, ...), or ironlb
  cannot run it (`vrf`, a non-IPv4 `routerID`).
- TRANSIENT: a reference to an object that does not exist yet (a `bfdProfile`, a community
  alias). MetalLB admits these, since objects of one manifest arrive in any order, and does not
  apply the configuration until they resolve; so does ironlb.
- WARNING: admitted and applied, but almost certainly not what was meant (a `localPref` that no
  iBGP peer will ever see, an advertisement naming a pool that does not exist).

Invariants: pure function of its inputs; problems come out in a stable order.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ironlb.core import addresses, community, config, selectors


class Severity(enum.Enum):
    ERROR = "error"
    TRANSIENT = "transient"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    ref: str
    """The object, as `Kind namespace/name`."""
    path: str
    """The field, as `spec.addresses[1]`."""
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.path}: {self.message}"


def rejected(problems: Iterable[Problem]) -> list[Problem]:
    """What the admission webhook refuses."""
    return [p for p in problems if p.severity is Severity.ERROR]


def blocking(problems: Iterable[Problem]) -> list[Problem]:
    """What keeps the controller and speakers from applying a configuration."""
    return [p for p in problems if p.severity is not Severity.WARNING]


MIN_GRATUITOUS_REFRESH = 1.0
"""Seconds. Linux ignores a second ARP update for the same address within its 1 s locktime."""
MIN_HOLD_TIME = 3
MAX_CONNECT_TIME = 65535


class _Report:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, severity: Severity, obj: config.ConfigKind, path: str, message: str) -> None:
        self.problems.append(Problem(severity, obj.ref, path, message))

    def error(self, obj: config.ConfigKind, path: str, message: str) -> None:
        self.add(Severity.ERROR, obj, path, message)

    def selectors(
        self, obj: config.ConfigKind, path: str, sels: Sequence[selectors.Selector]
    ) -> None:
        """Kubernetes syntax of keys and values, and MetalLB's duplicate check."""
        seen: dict[str, int] = {}
        for i, selector in enumerate(sels):
            for sub, message in selector.syntax_problems():
                self.error(obj, f"{path}[{i}].{sub}", message)
            text = str(selector)
            if text in seen:
                self.error(obj, f"{path}[{i}]", f"duplicate of {path}[{seen[text]}]")
            seen.setdefault(text, i)

    def duplicates(self, obj: config.ConfigKind, path: str, values: Sequence[str]) -> None:
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            if value in seen:
                self.error(obj, f"{path}[{i}]", f"{value!r} is listed twice")
            seen.setdefault(value, i)


def validate(
    cfg: config.Config, *, nodes: Mapping[str, Mapping[str, str]] | None = None
) -> list[Problem]:
    """Every problem of the configuration.

    `nodes` (name -> labels) serves MetalLB's localPref rule, which compares the nodes two
    BGPAdvertisements select; without it no two advertisements are found to share a node
    (as in MetalLB with no nodes).
    """
    report = _Report()
    _pools(cfg, report)
    _l2_advertisements(cfg, report)
    _bgp_advertisements(cfg, report, nodes or {})
    _communities(cfg, report)
    _peers(cfg, report)
    return report.problems


def validate_delete(cfg: config.Config, kind: str, name: str) -> list[Problem]:
    """Problems with deleting one object: a BFDProfile still used by a BGPPeer (MetalLB)."""
    report = _Report()
    if kind == config.BFDProfile.KIND and name in cfg.bfd_profiles:
        profile = cfg.bfd_profiles[name]
        for peer in cfg.peers.values():
            if peer.spec.bfd_profile == name:
                report.error(
                    profile,
                    "metadata.name",
                    f"in use by {peer.ref} (spec.bfdProfile): change the peer first",
                )
    return report.problems


def _pools(cfg: config.Config, report: _Report) -> None:
    entries: list[tuple[addresses.AddressRange, tuple[config.IPAddressPool, int]]] = []
    for pool in cfg.pools.values():
        spec = pool.spec
        if not spec.addresses:
            report.error(pool, "spec.addresses", "the pool has no addresses")
        entries.extend((r, (pool, i)) for i, r in enumerate(spec.addresses))
        if spec.service_allocation is not None:
            allocation = spec.service_allocation
            path = "spec.serviceAllocation"
            report.duplicates(pool, f"{path}.namespaces", allocation.namespaces)
            report.selectors(pool, f"{path}.namespaceSelectors", allocation.namespace_selectors)
            report.selectors(pool, f"{path}.serviceSelectors", allocation.service_selectors)
    for (first, (first_pool, i)), (later, (later_pool, j)) in addresses.find_overlaps(entries):
        where = "" if first_pool is later_pool else f" of {first_pool.ref}"
        report.error(
            later_pool,
            f"spec.addresses[{j}]",
            f"{later.text!r} overlaps {first.text!r} (spec.addresses[{i}]{where}): "
            "pools must not overlap, within a pool or across pools",
        )


def _advertised_pool_names(
    cfg: config.Config,
    report: _Report,
    adv: config.L2Advertisement | config.BGPAdvertisement,
) -> None:
    spec = adv.spec
    report.duplicates(adv, "spec.ipAddressPools", spec.ip_address_pools)
    for i, name in enumerate(spec.ip_address_pools):
        if name not in cfg.pools:
            report.add(
                Severity.WARNING,
                adv,
                f"spec.ipAddressPools[{i}]",
                f"IPAddressPool {name!r} does not exist: nothing is advertised for it",
            )
    report.selectors(adv, "spec.ipAddressPoolSelectors", spec.ip_address_pool_selectors)
    report.selectors(adv, "spec.nodeSelectors", spec.node_selectors)
    report.selectors(adv, "spec.serviceSelectors", spec.service_selectors)


def _l2_advertisements(cfg: config.Config, report: _Report) -> None:
    for adv in cfg.l2_advertisements.values():
        _advertised_pool_names(cfg, report, adv)
        interval = adv.spec.gratuitous_refresh_interval
        if interval is not None and interval < MIN_GRATUITOUS_REFRESH:
            report.error(
                adv,
                "spec.gratuitousRefreshInterval",
                f"{interval:g}s is too short: at least {MIN_GRATUITOUS_REFRESH:g}s (Linux ignores "
                "faster updates, and the LAN pays for every one)",
            )


def _bgp_advertisements(
    cfg: config.Config, report: _Report, nodes: Mapping[str, Mapping[str, str]]
) -> None:
    aliases = cfg.community_aliases()
    for adv in cfg.bgp_advertisements.values():
        spec = adv.spec
        _advertised_pool_names(cfg, report, adv)
        report.duplicates(adv, "spec.communities", spec.communities)
        report.duplicates(adv, "spec.peers", spec.peers)
        if spec.service_selectors:
            for field, value, default in (
                ("aggregationLength", spec.aggregation_length, 32),
                ("aggregationLengthV6", spec.aggregation_length_v6, 128),
            ):
                if value != default:
                    report.error(
                        adv,
                        f"spec.{field}",
                        "serviceSelectors and aggregation are mutually exclusive",
                    )
        for i, text in enumerate(spec.communities):
            _community(report, adv, f"spec.communities[{i}]", text, aliases)
        pools = cfg.selected_pools(spec.ip_address_pools, spec.ip_address_pool_selectors)
        for pool in pools:
            _aggregation(report, adv, pool)
        peers = _peers_of(cfg, report, adv)
        if spec.local_pref and peers and not any(p.spec.is_ibgp for p in peers):
            report.add(
                Severity.WARNING,
                adv,
                "spec.localPref",
                "LOCAL_PREF is only sent to iBGP peers, and every peer of this advertisement "
                f"is eBGP ({', '.join(p.name for p in peers)}): it has no effect",
            )
        _bfd_echo(cfg, report, adv, pools, peers)
    _local_prefs(cfg, report, nodes)


def _community(
    report: _Report,
    adv: config.BGPAdvertisement,
    path: str,
    text: str,
    aliases: Mapping[str, community.Value],
) -> None:
    if text in aliases:
        return
    try:
        config.parse_community(text)
    except config.CommunityFormatError:
        report.add(
            Severity.TRANSIENT,
            adv,
            path,
            f"{text!r} is neither a community (<AS>:<value> or large:<A>:<B>:<C>) nor an alias "
            "defined in a Community object",
        )
    except ValueError as e:
        report.error(adv, path, str(e))


def _aggregation(report: _Report, adv: config.BGPAdvertisement, pool: config.IPAddressPool) -> None:
    """MetalLB: the aggregate may not be wider than any CIDR making up a pool entry."""
    for entry in pool.spec.addresses:
        v4 = entry.family is addresses.Family.V4
        length = adv.spec.aggregation_length if v4 else adv.spec.aggregation_length_v6
        widest = entry.widest_prefix()
        if length < widest:
            field = "aggregationLength" if v4 else "aggregationLengthV6"
            report.error(
                adv,
                f"spec.{field}",
                f"/{length} is wider than the /{widest} prefix of {entry.text!r} in {pool.ref}: "
                f"the aggregate would announce addresses outside the pool (use {widest} or more)",
            )


def _peers_of(
    cfg: config.Config, report: _Report, adv: config.BGPAdvertisement
) -> list[config.BGPPeer]:
    if not adv.spec.peers:
        return list(cfg.peers.values())
    found = []
    for i, name in enumerate(adv.spec.peers):
        if name in cfg.peers:
            found.append(cfg.peers[name])
        else:
            report.add(
                Severity.WARNING,
                adv,
                f"spec.peers[{i}]",
                f"BGPPeer {name!r} does not exist: nothing is advertised to it",
            )
    return found


def _bfd_echo(
    cfg: config.Config,
    report: _Report,
    adv: config.BGPAdvertisement,
    pools: Sequence[config.IPAddressPool],
    peers: Sequence[config.BGPPeer],
) -> None:
    """MetalLB: BFD echo mode cannot serve IPv6 pools."""
    v6_pools = [p for p in pools if any(r.family is addresses.Family.V6 for r in p.spec.addresses)]
    if not v6_pools:
        return
    for peer in peers:
        profile = cfg.bfd_profiles.get(peer.spec.bfd_profile)
        if profile is not None and profile.spec.echo_mode:
            report.error(
                adv,
                "spec.peers" if adv.spec.peers else "spec",
                f"advertises IPv6 pool {v6_pools[0].name} to {peer.ref}, whose BFDProfile "
                f"{profile.name} has echoMode: BFD echo does not work for IPv6",
            )


def _local_prefs(
    cfg: config.Config, report: _Report, nodes: Mapping[str, Mapping[str, str]]
) -> None:
    """MetalLB: two advertisements of one pool that can send the same route (same aggregation,
    a common peer and a common node) must agree on localPref."""
    selected_nodes: dict[str, frozenset[str]] = {}
    selected_pools: dict[str, set[str]] = {}
    for name, adv in cfg.bgp_advertisements.items():
        sels = adv.spec.node_selectors
        selected_nodes[name] = frozenset(
            n for n, labels in nodes.items() if selectors.any_matches(sels, labels)
        )
        chosen = cfg.selected_pools(adv.spec.ip_address_pools, adv.spec.ip_address_pool_selectors)
        selected_pools[name] = {p.name for p in chosen}
    for pool in cfg.pools.values():
        families = {r.family for r in pool.spec.addresses}
        advs = [
            adv
            for adv in cfg.bgp_advertisements.values()
            if not adv.spec.service_selectors and pool.name in selected_pools[adv.name]
        ]
        for first, later in itertools.combinations(advs, 2):
            a, b = first.spec, later.spec
            if a.local_pref == b.local_pref:
                continue
            v4_differs = a.aggregation_length != b.aggregation_length
            v6_differs = a.aggregation_length_v6 != b.aggregation_length_v6
            if (
                not families
                or (v4_differs and addresses.Family.V6 not in families)
                or (v6_differs and addresses.Family.V4 not in families)
                or (v4_differs and v6_differs)
            ):
                continue
            if a.peers and b.peers and not set(a.peers) & set(b.peers):
                continue
            if not selected_nodes[first.name] & selected_nodes[later.name]:
                continue
            report.error(
                later,
                "spec.localPref",
                f"{b.local_pref} conflicts with localPref {a.local_pref} of {first.ref}: both "
                f"advertise {pool.ref} with the same aggregation to the same peers from the "
                "same nodes",
            )


def _communities(cfg: config.Config, report: _Report) -> None:
    defined: dict[str, str] = {}
    for obj in cfg.communities.values():
        for i, alias in enumerate(obj.spec.communities):
            where = f"{obj.ref} spec.communities[{i}]"
            if alias.name in defined:
                report.error(
                    obj,
                    f"spec.communities[{i}].name",
                    f"alias {alias.name!r} is already defined by {defined[alias.name]}",
                )
            defined.setdefault(alias.name, where)


def _peers(cfg: config.Config, report: _Report) -> None:
    endpoints: dict[tuple[str, str], config.BGPPeer] = {}
    for peer in cfg.peers.values():
        spec = peer.spec
        if spec.my_asn == 0:
            report.error(peer, "spec.myASN", "missing local ASN (myASN must not be 0)")
        if spec.peer_asn == 0 and spec.dynamic_asn is None:
            report.error(peer, "spec.peerASN", "set peerASN, or dynamicASN: internal | external")
        if spec.peer_asn != 0 and spec.dynamic_asn is not None:
            report.error(peer, "spec.dynamicASN", "peerASN and dynamicASN are mutually exclusive")
        if spec.ebgp_multi_hop and spec.is_ibgp:
            why = "dynamicASN: internal" if spec.dynamic_asn else "peerASN equals myASN"
            report.error(
                peer, "spec.ebgpMultiHop", f"only for eBGP peers, and this one is iBGP ({why})"
            )
        if spec.peer_address is None and not spec.interface:
            report.error(
                peer, "spec.peerAddress", "set peerAddress, or interface for unnumbered BGP"
            )
        if spec.peer_address is not None and spec.interface:
            report.error(peer, "spec.interface", "peerAddress and interface are mutually exclusive")
        for field, value in (("interface", spec.interface), ("password", spec.password)):
            if "\n" in value or "\r" in value:
                report.error(peer, f"spec.{field}", "contains a line break")
        _timers(report, peer)
        if spec.password and spec.password_secret is not None and spec.password_secret.name:
            report.error(
                peer, "spec.passwordSecret", "password and passwordSecret are mutually exclusive"
            )
        if spec.bfd_profile and spec.bfd_profile not in cfg.bfd_profiles:
            report.add(
                Severity.TRANSIENT,
                peer,
                "spec.bfdProfile",
                f"BFDProfile {spec.bfd_profile!r} does not exist (yet)",
            )
        if spec.vrf:
            report.error(
                peer,
                "spec.vrf",
                "VRFs are not supported by ironlb: its BGP speaker peers from the node's main "
                "routing table; remove vrf",
            )
        if spec.router_id is not None and spec.router_id.ip.version != 4:
            report.error(peer, "spec.routerID", "a BGP router ID is 32 bits: use an IPv4 address")
        report.selectors(peer, "spec.nodeSelectors", spec.node_selectors)
        endpoint = (str(spec.peer_address or ""), spec.interface)
        if endpoint == ("", ""):
            continue
        if endpoint in endpoints:
            report.error(
                peer,
                "spec.peerAddress" if spec.peer_address else "spec.interface",
                f"{endpoints[endpoint].ref} already peers with {endpoint[0] or endpoint[1]}",
            )
        endpoints.setdefault(endpoint, peer)


def _timers(report: _Report, peer: config.BGPPeer) -> None:
    """MetalLB: one timer derives the other (keepalive = hold / 3); the hold time, rounded down
    to whole seconds, is 0 (no keepalives) or at least 3 s; keepalive never exceeds hold."""
    spec = peer.spec
    timers = spec.timers()
    if timers is not None:
        hold, keepalive = timers
        whole = int(hold)
        if whole != 0 and whole < MIN_HOLD_TIME:
            path = "spec.holdTime" if spec.hold_time is not None else "spec.keepaliveTime"
            report.error(
                peer,
                path,
                f"hold time {hold:g}s must be 0 (no keepalives) or at least {MIN_HOLD_TIME}s",
            )
        if keepalive > hold:
            report.error(
                peer,
                "spec.keepaliveTime",
                f"{keepalive:g}s is longer than the hold time {hold:g}s",
            )
    connect = spec.connect_time
    if connect is not None and not (
        1 <= connect <= MAX_CONNECT_TIME and round(connect * 1000) % 1000 == 0
    ):
        report.error(
            peer,
            "spec.connectTime",
            f"{connect:g}s: must be a whole number of seconds from 1 to {MAX_CONNECT_TIME}",
        )
