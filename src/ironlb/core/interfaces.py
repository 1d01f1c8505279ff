"""Which interfaces of a node announce a layer-2 address, and why each of the others does not.

Inputs: facts about the node's interfaces (anything with the attributes of `Interface`; the
speaker passes `net.links.Link` snapshots), the union of `interfaces` over the L2Advertisements
that match the address (empty: no restriction), and the exclusion patterns. An interface is
usable when it
1. is listed, if the advertisements list any;
2. has a name no exclusion pattern matches: regular expressions searched in the name, as
   MetalLB's `announcedInterfacesToExclude` (by name only: a lab node's eth0 is a veth, and it
   must announce);
3. is Ethernet: ARP and NDP are answered with 6-byte MACs in Ethernet frames;
4. is administratively up, has carrier, has no master (a bridge or bond member: its master does
   the talking) and does not have NOARP set (such a link does neither ARP nor NDP).

Where no advertisement lists interfaces, ironlb narrows further than MetalLB, which answers on
every usable interface: if some interfaces (rules 1-3 and no master/NOARP) have an address in a
subnet that contains the service address, only those of them that are up with carrier announce
it, and if none is, the node cannot announce it at all. Clients ask only for addresses they
consider on-link, so that is where they are, and answering elsewhere is how the wrong NIC of a
multi-homed node ends up answering. If no interface has such an address, every usable interface
announces it, as in MetalLB (a pool may be a subnet no node has an address in).

Because that makes "can this node announce this address" depend only on which of its subnets
have a usable interface, a node can tell its peers in a few bytes (`blocked_subnets`, `blind`),
and every speaker then elects the same owner when a NIC loses carrier (`can_announce`).

Every interface is either chosen or rejected with one reason, the first rule it fails, worded
for `ironlb doctor`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)
from typing import Generic, Protocol, TypeVar

DEFAULT_EXCLUDED: tuple[str, ...] = (
    "^docker.*",
    "^cbr.*",
    "^dummy.*",
    "^virbr.*",
    "^lxcbr.*",
    "^veth.*",
    "^lo$",
    "^cali.*",
    "^tunl.*",
    "^flannel.*",
    "^kube-ipvs.*",
    "^cni.*",
    "^nodelocaldns.*",
    "^lxc.*",
)
"""MetalLB's default exclusion list (its `metallb-excludel2` ConfigMap; `^lxc` covers Cilium's
per-pod veths): container bridges, per-pod veths, tunnels, loopback, kube-proxy's IPVS dummy."""


class Interface(Protocol):
    """What the choice needs to know about an interface."""

    @property
    def name(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def ethernet(self) -> bool: ...

    @property
    def up(self) -> bool:
        """Administratively up (IFF_UP)."""

    @property
    def carrier(self) -> bool:
        """The link layer is up (IFF_LOWER_UP): a cable, or a veth whose peer is up."""

    @property
    def master(self) -> int | None:
        """Index of the bridge, bond or VRF this interface is enslaved to."""

    @property
    def noarp(self) -> bool: ...

    @property
    def addresses(self) -> Sequence[IPv4Interface | IPv6Interface]: ...


IfaceT = TypeVar("IfaceT", bound=Interface)


@dataclass(frozen=True, slots=True)
class Choice(Generic[IfaceT]):
    chosen: tuple[IfaceT, ...]
    """The interfaces that announce the address, in the order given."""
    rejected: Mapping[str, str]
    """Interface name -> why it does not announce the address."""
    missing: tuple[str, ...]
    """Listed interface names this node does not have (a typo, or names differ across nodes)."""


def choose(
    address: IPv4Address | IPv6Address,
    interfaces: Iterable[IfaceT],
    listed: Collection[str] = (),
    excluded: Sequence[str] = DEFAULT_EXCLUDED,
) -> Choice[IfaceT]:
    """The interfaces that announce `address`.

    `listed` is the union of `L2Advertisement.interfaces` (empty: any); `excluded` holds regular
    expressions, which the caller has validated (a bad one raises `re.error`).
    """
    candidates = list(interfaces)
    names = {interface.index: interface.name for interface in candidates}
    rejected: dict[str, str] = {}
    eligible: list[IfaceT] = []
    usable: list[IfaceT] = []
    for interface in candidates:
        reason = _ineligible(interface, listed, excluded, names)
        if reason is None:
            eligible.append(interface)
            reason = _unavailable(interface)
            if reason is None:
                usable.append(interface)
        if reason is not None:
            rejected[interface.name] = reason
    chosen = usable
    if not listed:
        homes = {i.index: i.name for i in eligible if _on_subnet(address, i)}
        if homes:
            chosen = [interface for interface in usable if interface.index in homes]
            instead = ", ".join(homes.values())
            for interface in usable:
                if interface.index not in homes:
                    rejected[interface.name] = (
                        f"no address in a subnet of {address} (its subnet is on {instead})"
                    )
    present = set(names.values())
    missing = tuple(sorted(name for name in set(listed) if name not in present))
    return Choice(tuple(chosen), rejected, missing)


Network = IPv4Network | IPv6Network


def blocked_subnets(
    interfaces: Iterable[Interface], excluded: Sequence[str] = DEFAULT_EXCLUDED
) -> tuple[Network, ...]:
    """Subnets of the node that no usable interface serves: addresses in them cannot be
    announced by this node (see `choose`)."""
    candidates = list(interfaces)
    names = {interface.index: interface.name for interface in candidates}
    served: set[Network] = set()
    present: set[Network] = set()
    for interface in candidates:
        if _ineligible(interface, (), excluded, names) is not None:
            continue
        nets = {
            own.network for own in interface.addresses if own.network.prefixlen < own.max_prefixlen
        }
        present |= nets
        if _unavailable(interface) is None:
            served |= nets
    return tuple(sorted(present - served, key=lambda n: (n.version, n)))


def blind(interfaces: Iterable[Interface], excluded: Sequence[str] = DEFAULT_EXCLUDED) -> bool:
    """True when no interface of the node can announce anything."""
    candidates = list(interfaces)
    names = {interface.index: interface.name for interface in candidates}
    return not any(
        _ineligible(i, (), excluded, names) is None and _unavailable(i) is None for i in candidates
    )


def can_announce(
    address: IPv4Address | IPv6Address, blocked: Iterable[Network], is_blind: bool
) -> bool:
    """Whether a node that published (`blocked`, `is_blind`) can announce `address`."""
    return not is_blind and not any(
        address.version == net.version and address in net for net in blocked
    )


def _ineligible(
    interface: Interface,
    listed: Collection[str],
    excluded: Sequence[str],
    names: Mapping[int, str],
) -> str | None:
    """Why the configuration never lets this interface announce (None: it may)."""
    if listed and interface.name not in listed:
        return "not listed in the interfaces of the matching L2Advertisements"
    for pattern in excluded:
        if re.search(pattern, interface.name):
            return f"name matches the exclusion pattern {pattern!r}"
    if not interface.ethernet:
        return "not an Ethernet interface"
    if interface.master is not None:
        master = names.get(interface.master, f"interface index {interface.master}")
        return f"enslaved to {master}"
    if interface.noarp:
        return "NOARP is set"
    return None


def _unavailable(interface: Interface) -> str | None:
    """Why this interface cannot announce right now (None: it can)."""
    if not interface.up:
        return "administratively down"
    if not interface.carrier:
        return "no carrier"
    return None


def _on_subnet(address: IPv4Address | IPv6Address, interface: Interface) -> bool:
    # A host prefix (/32, /128) is an address, not a subnet: it says nothing about the LAN.
    return any(
        own.version == address.version
        and own.network.prefixlen < own.max_prefixlen
        and address in own.network
        for own in interface.addresses
    )
