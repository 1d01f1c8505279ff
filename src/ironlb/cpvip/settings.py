"""Control-plane VIP settings: each field is a flag of `ironlb cpvip` and an IRONLB_CPVIP_<NAME>
environment variable, checked once when the settings are built (`core.settings.validate`).

What needs the node's interfaces (the default `--interface`, the membership address) is
resolved at start by `resolve`, a pure function of the settings and the interface list, so that a
bad value is still one line and a non-zero exit before anything is touched.

Membership names: cpvip needs no Kubernetes API, so a member's name is its membership address
as text (`198.51.100.2`, `2001:db8::2`); `--peers` lists the other nodes' addresses, optionally
with a port (`198.51.100.3:7947`, `[2001:db8::3]:7947`), and every node derives the same names.

Two modes, each with its own settings (`ARP_ONLY`, `BGP_ONLY`): setting one of the other mode's
is refused in one line, so a setting never passes silently without effect. arp holds the VIP on
the one node elected through membership (needs `--key-file`); bgp advertises it as a host route
from every node whose kube-apiserver is healthy (needs `--bgp-peers`, `--bgp-peer-asn`,
`--bgp-local-asn`) and needs no membership.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

from ironlb.core import settings as core_settings

IP: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Network: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface

DEFAULT_PORT = 7947
"""UDP port of cpvip membership: not the speaker's 7946, so both run on one node."""

MODES = ("arp", "bgp")


def vip_address(value: str) -> str | None:
    """One IP address: a CIDR or a hostname is refused naming the right form."""
    if "/" in value:
        head = value.split("/", 1)[0]
        return (
            f"{value!r} is a CIDR; give one address without a prefix length"
            f" (e.g. {head!r}): the interface's own subnet applies"
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?", value) and not re.fullmatch(
            r"[0-9.]+", value
        ):
            return (
                f"{value!r} is a hostname; give one IP address (e.g. 192.0.2.10 or"
                " 2001:db8::10): the VIP is never looked up in DNS"
            )
        return f"not an IP address: {value!r} (give one address, e.g. 192.0.2.10 or 2001:db8::10)"
    return None


def parse_peer(text: str) -> tuple[IP, int | None]:
    """`IP`, `IPv4:port` or `[IPv6]:port`; raises ValueError with a short phrase."""
    text = text.strip()
    port: str | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"not IP, IPv4:port or [IPv6]:port: {text!r}")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not IP, IPv4:port or [IPv6]:port: {text!r}") from None
    if port is None:
        return ip, None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port in {text!r}")
    return ip, int(port)


def peers(values: Sequence[str]) -> str | None:
    for value in values:
        try:
            parse_peer(value)
        except ValueError as e:
            return str(e)
    return None


def health_url(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"not an http(s) URL: {value!r}"
    return None


def mode(value: str) -> str | None:
    if value not in MODES:
        return f"{value!r} is not one of {', '.join(MODES)}"
    return None


MAX_ASN = 0xFFFFFFFF


def asn(value: int) -> str | None:
    return None if 1 <= value <= MAX_ASN else f"not an AS number (1-{MAX_ASN}): {value}"


def ip_addresses(values: Sequence[str]) -> str | None:
    for value in values:
        if core_settings.ip_address(value) is not None:
            return f"not an IP address: {value!r} (give the routers' addresses)"
    return None


def ipv4_address(value: str) -> str | None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return f"not an IPv4 address: {value!r} (a BGP router ID is one, e.g. 198.51.100.2)"
    return None


def hold_time(value: int) -> str | None:
    return None if value == 0 or 3 <= value <= 65535 else "must be 0 or 3-65535 seconds"


def _range(low: int, high: int) -> core_settings.Check:
    def check(value: int) -> str | None:
        return None if low <= value <= high else f"must be from {low} to {high}, got {value}"

    return check


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 5 else "must be in (0, 5] seconds"


def _discovery_interval(value: float) -> str | None:
    return None if 1 <= value <= 3600 else "must be in [1, 3600] seconds"


@dataclass(frozen=True)
class Settings:
    address: str | None = core_settings.setting(
        help="The VIP: one IPv4 or IPv6 address (no prefix length, no hostname).",
        check=vip_address,
    )
    interface: str | None = core_settings.setting(
        help="Interface to hold the VIP on (default: the one whose subnet contains it).",
        check=core_settings.non_empty,
    )
    peers: tuple[str, ...] = core_settings.setting(
        (),
        help="The other control-plane nodes' membership addresses (IP, IPv4:port or"
        " [IPv6]:port); repeat the flag or separate with commas.",
        check=peers,
    )
    kubeconfig: str | None = core_settings.setting(
        help="A kubeconfig to discover the other control-plane nodes with (Nodes labelled"
        " node-role.kubernetes.io/control-plane, at their InternalIP); optional: --peers needs"
        " no API, and the first node of a cluster has none to ask.",
        check=core_settings.readable_file,
    )
    discovery_interval: float = core_settings.setting(
        10.0,
        help="Seconds between two listings of the control-plane Nodes (with --kubeconfig).",
        check=_discovery_interval,
    )
    bind_address: str | None = core_settings.setting(
        help="This node's membership address (default: its address on --interface in the VIP's"
        " family).",
        check=core_settings.ip_address,
    )
    key_file: str | None = core_settings.setting(
        help="File holding the membership HMAC key (at least 16 bytes; one key per line, the"
        " first signs).",
        check=core_settings.readable_file,
    )
    health_url: str = core_settings.setting(
        "https://127.0.0.1:6443/readyz",
        help="The local kube-apiserver's readiness URL (anonymous; the certificate is not"
        " checked).",
        check=health_url,
    )
    mode: str = core_settings.setting(
        "arp", help="How the VIP is announced: arp (ARP/NDP) or bgp.", check=mode
    )
    membership_port: int = core_settings.setting(
        DEFAULT_PORT, help="UDP port of cpvip membership.", check=core_settings.port()
    )
    metrics_port: int = core_settings.setting(
        7474,
        help="HTTP port of /metrics and /readyz (0: none).",
        check=core_settings.port(allow_zero=True),
    )
    health_interval: float = core_settings.setting(
        0.15,
        help="Seconds between checks of the local kube-apiserver.",
        check=_fraction,
    )
    health_timeout: float = core_settings.setting(
        0.5, help="Seconds a health check may take.", check=_fraction
    )
    health_rise: int = core_settings.setting(
        2,
        help="Consecutive good checks before the local apiserver counts as healthy.",
        check=core_settings.at_least(1),
    )
    health_fall: int = core_settings.setting(
        2,
        help="Consecutive failed checks before it counts as unhealthy.",
        check=core_settings.at_least(1),
    )
    probe_interval: float = core_settings.setting(
        0.1, help="Seconds between membership probes.", check=core_settings.positive
    )
    suspicion_timeout: float = core_settings.setting(
        0.25,
        help="Seconds a suspected node has to refute before it is declared dead.",
        check=core_settings.positive,
    )
    gratuitous_interval: float = core_settings.setting(
        1.1,
        help="Seconds between the gratuitous ARP/NA sent after taking the VIP.",
        check=core_settings.positive,
    )
    gratuitous_duration: float = core_settings.setting(
        5.0,
        help="Seconds during which gratuitous ARP/NA are repeated.",
        check=core_settings.non_negative,
    )
    handover_timeout: float = core_settings.setting(
        1.0,
        help="On SIGTERM, seconds the VIP stays here while the next owner takes it (bgp: after"
        " the route is withdrawn, so that packets already on their way are still answered).",
        check=core_settings.non_negative,
    )
    bgp_peers: tuple[str, ...] = core_settings.setting(
        (),
        help="bgp mode: the routers' addresses (the VIP's family); repeat the flag or separate"
        " with commas.",
        check=ip_addresses,
    )
    bgp_peer_asn: int | None = core_settings.setting(
        help="bgp mode: the routers' AS number.", check=asn
    )
    bgp_local_asn: int | None = core_settings.setting(
        help="bgp mode: this node's AS number.", check=asn
    )
    bgp_peer_port: int = core_settings.setting(
        179, help="bgp mode: the routers' BGP port.", check=core_settings.port()
    )
    bgp_hold_time: int = core_settings.setting(
        9,
        help="bgp mode: proposed BGP hold time in seconds (0 or 3-65535; keepalives every third"
        " of it).",
        check=hold_time,
    )
    bgp_password_file: str | None = core_settings.setting(
        help="bgp mode: file holding the TCP MD5 password of the sessions (first line).",
        check=core_settings.readable_file,
    )
    bgp_router_id: str | None = core_settings.setting(
        help="bgp mode: BGP router ID (default: this node's IPv4 address towards the routers).",
        check=ipv4_address,
    )
    bgp_source_address: str | None = core_settings.setting(
        help="bgp mode: connect to the routers from this address (the routes' next hop);"
        " default: the kernel's choice.",
        check=core_settings.ip_address,
    )
    bgp_bfd: bool = core_settings.setting(
        False, help="bgp mode: run BFD with the routers (a BFD Down ends the session at once)."
    )
    bgp_bfd_interval: int = core_settings.setting(
        300,
        help="bgp mode: BFD transmit and receive interval in milliseconds (10-60000).",
        check=_range(10, 60000),
    )
    bgp_bfd_multiplier: int = core_settings.setting(
        3, help="bgp mode: BFD detect multiplier (2-255).", check=_range(2, 255)
    )

    def __post_init__(self) -> None:
        if self.address is None:
            raise core_settings.SettingError("address", "required (the VIP, e.g. 192.0.2.10)")
        if self.mode == "arp" and self.key_file is None:
            raise core_settings.SettingError("key_file", "required (the membership HMAC key)")
        core_settings.validate(self)
        self._check_mode()

    def _check_mode(self) -> None:
        """Settings of the other mode are refused (compared with their defaults: a value given
        but equal to the default cannot be told apart, and changes nothing)."""
        defaults = Settings.__dataclass_fields__
        other = BGP_ONLY if self.mode == "arp" else ARP_ONLY
        for name in other:
            if getattr(self, name) != defaults[name].default:
                raise core_settings.SettingError(
                    name,
                    f"only for --mode {'bgp' if self.mode == 'arp' else 'arp'}"
                    f" (this is --mode {self.mode})",
                )
        if self.mode != "bgp":
            return
        for name, what in (
            ("bgp_peers", "the routers' addresses, e.g. 198.51.100.1"),
            ("bgp_peer_asn", "the routers' AS number"),
            ("bgp_local_asn", "this node's AS number"),
        ):
            if not getattr(self, name):
                raise core_settings.SettingError(name, f"required with --mode bgp ({what})")
        vip = self.vip
        for text in self.bgp_peers:
            if ipaddress.ip_address(text).version != vip.version:
                raise core_settings.SettingError(
                    "bgp_peers",
                    f"{text} is not of the VIP's family (IPv{vip.version}): the route goes to"
                    " routers of its family",
                )
        source = self.bgp_source_address
        if source is not None and ipaddress.ip_address(source).version != vip.version:
            raise core_settings.SettingError(
                "bgp_source_address", f"{source} is not of the VIP's family (IPv{vip.version})"
            )

    @property
    def vip(self) -> IP:
        assert self.address is not None
        return ipaddress.ip_address(self.address)

    def peer_endpoints(self) -> list[tuple[IP, int]]:
        out = []
        for text in self.peers:
            ip, port = parse_peer(text)
            out.append((ip, port or self.membership_port))
        return out


ARP_ONLY = (
    "interface",
    "peers",
    "kubeconfig",
    "discovery_interval",
    "bind_address",
    "key_file",
    "membership_port",
    "probe_interval",
    "suspicion_timeout",
    "gratuitous_interval",
    "gratuitous_duration",
)
BGP_ONLY = tuple(f for f in Settings.__dataclass_fields__ if f.startswith("bgp_"))


@dataclass(frozen=True, slots=True)
class Resolved:
    """What start-up derives from the settings and the node's interfaces."""

    interface: str
    prefix_length: int
    """Of the interface's subnet that contains the VIP (the VIP is added with it)."""
    bind: IP


class ResolveError(ValueError):
    """A setting that does not fit this node: `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def resolve(settings: Settings, interfaces: Sequence[tuple[str, Sequence[Network]]]) -> Resolved:
    """Pick the interface and membership address from `interfaces` ((name, addresses) pairs)."""
    vip = settings.vip
    listing = ", ".join(
        f"{name} ({' '.join(str(a.network) for a in nets) or 'no address'})"
        for name, nets in interfaces
    )
    containing = [
        (name, net)
        for name, nets in interfaces
        for net in nets
        if net.version == vip.version and vip in net.network and net.ip != vip
    ]
    if settings.interface is not None:
        chosen = [c for c in containing if c[0] == settings.interface]
        if settings.interface not in {name for name, _ in interfaces}:
            raise ResolveError("interface", f"no interface {settings.interface!r}; have {listing}")
        if not chosen:
            raise ResolveError(
                "interface",
                f"{vip} is in no subnet of {settings.interface!r}; the address must be in a"
                f" subnet of the interface (have {listing})",
            )
    else:
        chosen = containing
        if not chosen:
            raise ResolveError(
                "address",
                f"{vip} must be in a subnet of one of the node's interfaces: {listing}",
            )
        if len({name for name, _ in chosen}) > 1:
            names = sorted({name for name, _ in chosen})
            raise ResolveError(
                "interface",
                f"{vip} is in subnets of several interfaces ({', '.join(names)}); pick one",
            )
    name, net = chosen[0]
    if settings.bind_address is not None:
        bind = ipaddress.ip_address(settings.bind_address)
    else:
        bind = net.ip
    for ip, _port in settings.peer_endpoints():
        if ip == bind:
            raise ResolveError("peers", f"lists this node's own membership address {ip}")
        if ip == vip:
            raise ResolveError("peers", f"lists the VIP {ip}; list the nodes' own addresses")
    return Resolved(interface=name, prefix_length=net.network.prefixlen, bind=bind)


@dataclass(frozen=True, slots=True)
class BgpResolved:
    """What bgp mode derives at start from the settings and the node's interfaces."""

    router_id: ipaddress.IPv4Address
    prefix_length: int
    """Of the host route (32 or 128)."""


def resolve_bgp(
    settings: Settings, interfaces: Sequence[tuple[str, Sequence[Network]]]
) -> BgpResolved:
    """The router ID, and a check that the VIP is outside every subnet of the node: a client on
    such a subnet would ask ARP/NDP for the VIP instead of going through the router, and every
    node (holding the VIP on `lo`) would answer."""
    vip = settings.vip
    for name, nets in interfaces:
        for net in nets:
            if name != "lo" and net.version == vip.version and vip in net.network:
                raise ResolveError(
                    "address",
                    f"{vip} is in the subnet {net.network} of {name}; in bgp mode the VIP must be"
                    " outside the nodes' subnets (it is routed to them, not answered by ARP/NDP)",
                )
    if settings.bgp_router_id is not None:
        return BgpResolved(ipaddress.IPv4Address(settings.bgp_router_id), vip.max_prefixlen)
    v4 = [
        net
        for name, nets in interfaces
        if name != "lo"
        for net in nets
        if isinstance(net, ipaddress.IPv4Interface) and not net.ip.is_loopback
    ]
    peers = [ipaddress.ip_address(p) for p in settings.bgp_peers]
    # The address facing a router (the usual router ID), else the node's first IPv4 address.
    facing = [net for net in v4 if any(p in net.network for p in peers)]
    chosen = (facing or v4)[:1]
    if not chosen:
        raise ResolveError(
            "bgp_router_id", "this node has no IPv4 address to use as BGP router ID; set one"
        )
    return BgpResolved(chosen[0].ip, vip.max_prefixlen)
