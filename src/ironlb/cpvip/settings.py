"""Control-plane VIP settings: each field is a flag of `ironlb cpvip` and an IRONLB_CPVIP_<NAME>
environment variable, checked once when the settings are built (`core.settings.validate`).

What needs the node's interfaces (the default `--interface`, the membership address) is
resolved at start by `resolve`, a pure function of the settings and the interface list, so that a
bad value is still one line and a non-zero exit before anything is touched.

Membership names: cpvip needs no Kubernetes API, so a member's name is its membership address
as text (`198.51.100.2`, `2001:db8::2`); `--peers` lists the other nodes' addresses, optionally
with a port (`198.51.100.3:7947`, `[2001:db8::3]:7947`), and every node derives the same names.
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
    if value == "bgp":
        return "'bgp' is not implemented yet; use --mode arp"
    return None


def _fraction(value: float) -> str | None:
    return None if 0 < value <= 5 else "must be in (0, 5] seconds"


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
        help="On SIGTERM, seconds the VIP stays here while the next owner takes it.",
        check=core_settings.non_negative,
    )

    def __post_init__(self) -> None:
        if self.address is None:
            raise core_settings.SettingError("address", "required (the VIP, e.g. 192.0.2.10)")
        if self.key_file is None:
            raise core_settings.SettingError("key_file", "required (the membership HMAC key)")
        core_settings.validate(self)

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
