"""What one session announces: desired routes, the peer's view of them, and the UPDATEs between.

ironlb only originates routes (service addresses, node prefixes) and imports none, so the
Adj-RIB-Out is the whole RIB: `AdjRibOut` holds the desired routes per family and what the peer
was last told, and `updates()` emits the UPDATEs that bring the peer up to date.

Invariants: prefixes whose path attributes are identical travel in one UPDATE, split so that no
message exceeds 4096 bytes; withdrawals come before announcements; MP_REACH_NLRI is the first
attribute (RFC 7606 §5.1) and the rest follow in type-code order (RFC 4271 §5). A route whose
next hop cannot be determined is not announced (and withdrawn if it was) and reported as skipped.

Path attributes follow RFC 4271 §5.1 for an originating speaker: eBGP gets our AS in AS_PATH and
no LOCAL_PREF; iBGP gets an empty AS_PATH and LOCAL_PREF. Peers without 4-octet AS support get
AS_TRANS in AS_PATH and the real path in AS4_PATH (RFC 6793 §4.2.2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ironlb.bgp import attributes, families, messages

DEFAULT_LOCAL_PREF = 100
_UINT32 = 1 << 32
# Header, withdrawn-routes length and total-attribute-length fields of an UPDATE.
_UPDATE_OVERHEAD = messages.HEADER_SIZE + 4
# Room for an extended-length attribute header plus AFI/SAFI of MP_UNREACH_NLRI.
_MP_UNREACH_OVERHEAD = 4 + 3


@dataclass(frozen=True, slots=True)
class RouteAttributes:
    """How to announce one prefix. Hashable: prefixes sharing attributes share UPDATEs."""

    next_hop: IPv4Address | IPv6Address | None = None
    """None: the session's own address of the prefix's family."""
    local_pref: int | None = None
    """Sent to iBGP peers only (100 when None); eBGP peers never receive LOCAL_PREF."""
    med: int | None = None
    origin: attributes.OriginType = attributes.OriginType.IGP
    communities: frozenset[attributes.Community] = frozenset()
    large_communities: frozenset[attributes.LargeCommunity] = frozenset()

    def __post_init__(self) -> None:
        for name in ("local_pref", "med"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < _UINT32:
                raise ValueError(f"{name} {value} is not a 32-bit unsigned number")


@dataclass(frozen=True, slots=True)
class Peering:
    """The facts of one established session that shape outgoing path attributes."""

    local_asn: int
    ibgp: bool
    four_octet_as: bool
    next_hop_v4: IPv4Address | None = None
    next_hop_v6: IPv6Address | None = None
    link_local_v6: IPv6Address | None = None

    @property
    def context(self) -> attributes.Context:
        return attributes.Context(four_octet_as=self.four_octet_as)


def path_attributes(
    family: families.Family, route: RouteAttributes, peering: Peering
) -> tuple[attributes.Attribute, ...] | None:
    """Path attributes for `route` (MP_REACH_NLRI without NLRI for IPv6), or None when no next
    hop of the family is known."""
    path: list[attributes.Attribute] = [attributes.Origin(route.origin)]
    if peering.ibgp:
        local_pref = DEFAULT_LOCAL_PREF if route.local_pref is None else route.local_pref
        path += [attributes.AsPath(), attributes.LocalPref(local_pref)]
    else:
        path.append(attributes.AsPath.sequence(peering.local_asn))
        if not peering.four_octet_as and peering.local_asn > 0xFFFF:
            path.append(attributes.As4Path(attributes.AsPath.sequence(peering.local_asn).segments))
    if route.med is not None:
        path.append(attributes.MultiExitDisc(route.med))
    if route.communities:
        path.append(attributes.Communities(tuple(sorted(route.communities))))
    if route.large_communities:
        path.append(attributes.LargeCommunities(tuple(sorted(route.large_communities))))
    if family is families.Family.IPV4_UNICAST:
        v4 = peering.next_hop_v4 if route.next_hop is None else route.next_hop
        if not isinstance(v4, IPv4Address):
            return None
        path.append(attributes.NextHop(v4))
    else:
        v6 = peering.next_hop_v6 if route.next_hop is None else route.next_hop
        if not isinstance(v6, IPv6Address):
            return None
        hops = (v6, peering.link_local_v6) if peering.link_local_v6 else (v6,)
        path.append(attributes.MpReachNlri(family, hops))
    # MP_REACH_NLRI first (RFC 7606 §5.1), then ascending type codes (RFC 4271 §5).
    return tuple(
        sorted(path, key=lambda a: (type(a) is not attributes.MpReachNlri, attributes.type_code(a)))
    )


def _by_address(prefix: families.Prefix) -> tuple[int, int]:
    return int(prefix.network_address), prefix.prefixlen


def _batches(
    prefixes: Sequence[families.Prefix], budget: int
) -> Iterator[tuple[families.Prefix, ...]]:
    """Consecutive runs of prefixes whose encoding fits in `budget` bytes."""
    batch: list[families.Prefix] = []
    used = 0
    for prefix in prefixes:
        size = families.prefix_size(prefix)
        if batch and used + size > budget:
            yield tuple(batch)
            batch, used = [], 0
        batch.append(prefix)
        used += size
    if batch:
        yield tuple(batch)


def _size(path: Sequence[attributes.Attribute], ctx: attributes.Context) -> int:
    return sum(len(attributes.pack(a, ctx)) for a in path)


def announcements(
    path: tuple[attributes.Attribute, ...],
    prefixes: Sequence[families.Prefix],
    ctx: attributes.Context,
) -> Iterator[messages.Update]:
    """UPDATEs announcing `prefixes` with `path`, each within the message size limit."""
    reach, rest = path[0], path[1:]
    if isinstance(reach, attributes.MpReachNlri):
        # Budget as if MP_REACH_NLRI needed the extended length header: at most a byte lost.
        fixed = _UPDATE_OVERHEAD + _size(rest, ctx) + 4 + len(reach.pack_value(ctx))
        for batch in _batches(prefixes, messages.MAX_MESSAGE_SIZE - fixed):
            yield messages.Update(path_attributes=(dataclasses.replace(reach, nlri=batch), *rest))
    else:
        fixed = _UPDATE_OVERHEAD + _size(path, ctx)
        for batch in _batches(prefixes, messages.MAX_MESSAGE_SIZE - fixed):
            yield messages.Update(path_attributes=path, nlri=batch)


def withdrawals(
    family: families.Family, prefixes: Sequence[families.Prefix]
) -> Iterator[messages.Update]:
    if family is families.Family.IPV4_UNICAST:
        for batch in _batches(prefixes, messages.MAX_MESSAGE_SIZE - _UPDATE_OVERHEAD):
            yield messages.Update(withdrawn=batch)
        return
    budget = messages.MAX_MESSAGE_SIZE - _UPDATE_OVERHEAD - _MP_UNREACH_OVERHEAD
    for batch in _batches(prefixes, budget):
        yield messages.Update(path_attributes=(attributes.MpUnreachNlri(family, batch),))


@dataclass(frozen=True, slots=True)
class Changes:
    updates: list[messages.Update]
    skipped: list[families.Prefix]
    """Desired prefixes not announced: no next hop of their family is known."""


class AdjRibOut:
    """Desired and advertised routes per family. `updates()` compares only the prefixes changed
    since the last call (and those skipped then), unless everything must be compared: after
    `set_routes`, `reset` or `refresh`."""

    def __init__(self) -> None:
        self._desired: dict[families.Family, dict[families.Prefix, RouteAttributes]] = {}
        self._advertised: dict[families.Family, dict[families.Prefix, RouteAttributes]] = {}
        self._pending: dict[families.Family, set[families.Prefix]] = {}
        """Prefixes to compare at the next `updates()`; a family missing: all of them."""

    def set_routes(
        self, family: families.Family, routes: Mapping[families.Prefix, RouteAttributes]
    ) -> None:
        """Replace the desired routes of `family`; nothing is sent until `updates()`."""
        self._desired[family] = dict(routes)
        self._pending.pop(family, None)

    def update_routes(
        self, family: families.Family, changes: Mapping[families.Prefix, RouteAttributes | None]
    ) -> None:
        """Change only these desired routes of `family` (None: no longer desired)."""
        desired = self._desired.setdefault(family, {})
        for prefix, route in changes.items():
            if route is None:
                desired.pop(prefix, None)
            else:
                desired[prefix] = route
        pending = self._pending.get(family)
        if pending is not None:
            pending.update(changes)

    def advertised(self, family: families.Family) -> Mapping[families.Prefix, RouteAttributes]:
        return self._advertised.get(family, {})

    def reset(self) -> None:
        """The session went down: the peer holds none of our routes any more."""
        self._advertised.clear()
        self._pending.clear()

    def refresh(self, family: families.Family) -> None:
        """The peer asked for everything again (ROUTE-REFRESH): re-announce it all."""
        self._advertised.pop(family, None)
        self._pending.pop(family, None)

    def updates(self, family: families.Family, peering: Peering) -> Changes:
        desired = self._desired.get(family, {})
        advertised = self._advertised.setdefault(family, {})
        pending = self._pending.get(family)
        groups: dict[tuple[attributes.Attribute, ...], list[families.Prefix]] = {}
        skipped: list[families.Prefix] = []
        gone: set[families.Prefix] = set()
        compared = desired.keys() | advertised.keys() if pending is None else pending
        for prefix in sorted(compared, key=_by_address):
            route = desired.get(prefix)
            if route is None:
                if prefix in advertised:
                    gone.add(prefix)
                continue
            if advertised.get(prefix) == route:
                continue
            path = path_attributes(family, route, peering)
            if path is None:
                skipped.append(prefix)
            else:
                groups.setdefault(path, []).append(prefix)
        gone.update(p for p in skipped if p in advertised)
        # A skipped prefix is compared again next time (a next hop may be known by then).
        self._pending[family] = set(skipped)
        updates = list(withdrawals(family, sorted(gone, key=_by_address)))
        for path, prefixes in groups.items():
            updates += announcements(path, prefixes, peering.context)
            advertised.update((p, desired[p]) for p in prefixes)
        for prefix in gone:
            del advertised[prefix]
        return Changes(updates, skipped)
