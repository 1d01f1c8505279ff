"""MetalLB's configuration kinds as frozen typed models, parsed once from raw Kubernetes JSON.

Job: `parse(raw)` turns one `metallb.io` object (a dict from JSON or YAML) into its model, with
MetalLB's exact field names and defaults (v0.14 to v0.16), and rejects what the CRD schema would:
unknown fields, wrong types, out-of-range numbers, malformed addresses, durations and selectors.
Every rejection is a `ConfigError` naming the object and the field path, e.g.
`IPAddressPool metallb/pool-a: spec.addresses[1]: '10.0.0.9-10.0.0.1' is not a valid range
(start after end)`. `Config` is the immutable snapshot the controller and speakers work on.

Invariants: models are immutable and only hold parsed values (an `AddressRange`, a `Selector`, a
duration in seconds), never raw text to re-parse. Cross-object rules (overlapping pools, unknown
references, timer combinations) are not checked here but in `validation`, so that every object
that is well-formed on its own parses, and the validator can report all problems at once.

ironlb's additions live in fields MetalLB does not have, never in a changed meaning:
`L2Advertisement.spec.gratuitousRefreshInterval` (periodic gratuitous ARP / unsolicited NA).
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, NewType, TypeVar

import msgspec

from ironlb.core import addresses, community, selectors

PoolName = NewType("PoolName", str)

GROUP = "metallb.io"
V1BETA1 = "metallb.io/v1beta1"
V1BETA2 = "metallb.io/v1beta2"

UINT32_MAX = 2**32 - 1
Uint32 = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]


class ConfigError(ValueError):
    """A configuration object that cannot be parsed. `str()` is the message for users."""

    def __init__(self, ref: str, path: str, message: str) -> None:
        super().__init__(f"{ref}: {path}: {message}" if path else f"{ref}: {message}")
        self.ref = ref
        self.path = path
        self.message = message


def describe(kind: str, namespace: str, name: str) -> str:
    """How messages name an object: `IPAddressPool metallb/pool-a`."""
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


# Value types parsed from strings. msgspec hands them to `_decode` below.


class Duration(float):
    """A Kubernetes duration (`metav1.Duration`, Go syntax: "90s", "1m30s", "500ms"), in seconds."""

    __slots__ = ()


_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> Duration:
    """Go's time.ParseDuration, minus negative values (no MetalLB duration may be negative)."""
    if text == "0":
        return Duration(0.0)
    body = text.removeprefix("+")
    if body.startswith("-"):
        raise ValueError(f"{text!r} is negative")
    position, seconds = 0, 0.0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            break
        seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body or position != len(body):
        raise ValueError(f"{text!r} is not a duration (examples: '90s', '1m30s', '500ms')")
    return Duration(seconds)


class IPText(str):
    """The text of a valid IP address, kept as written (it is echoed back in status and logs)."""

    __slots__ = ()

    @property
    def ip(self) -> addresses.IP:
        return addresses.parse_ip(self)


class Secret(str):
    """A password: never printed by repr(), so models can be logged."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'<redacted>'" if self else "''"


class CommunityFormatError(ValueError):
    """Text that is not shaped like a community at all, so it may be an alias name."""


def parse_community(text: str) -> community.Community | community.LargeCommunity:
    """MetalLB's `community.New`: raise CommunityFormatError when it could be an alias."""
    fields = text.split(":")
    if len(fields) == 2:
        parts, bits = fields, 16
    elif len(fields) == 4:
        if fields[0] != "large":
            raise ValueError(f"{text!r} is not a large community: write large:<A>:<B>:<C>")
        parts, bits = fields[1:], 32
    else:
        raise CommunityFormatError(
            f"{text!r} is not a community: write <AS>:<value> or large:<A>:<B>:<C>"
        )
    values = []
    for part in parts:
        if not part.isdecimal() or int(part) >= 2**bits:
            raise ValueError(f"{text!r}: {part!r} is not a {bits}-bit unsigned number")
        values.append(int(part))
    if len(values) == 3:
        return community.LargeCommunity(*values)
    return community.Community(values[0] << 16 | values[1])


# Models. Field names are MetalLB's JSON names; `rename="camel"` covers the regular ones.


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, rename="camel", kw_only=True):
    pass


class _NoStatus(_Spec, frozen=True):
    """MetalLB declares an empty status for most kinds; the API server may still send `{}`."""


class ObjectMeta(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    """The metadata ironlb uses; the server-populated rest (uid, managedFields...) is ignored."""

    name: str
    namespace: str = ""
    labels: Mapping[str, str] = {}


class _Object(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    KIND: ClassVar[str]
    API_VERSION: ClassVar[str]

    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        return describe(self.KIND, self.metadata.namespace, self.metadata.name)


class ServiceAllocation(_Spec, frozen=True):
    """Restricts a pool to some namespaces and/or Services, and orders pools by priority."""

    priority: Annotated[int, msgspec.Meta(ge=0)] = 0
    """Lower is tried first; 0 (unset) is tried after every pool with a priority."""
    namespaces: tuple[str, ...] = ()
    namespace_selectors: tuple[selectors.Selector, ...] = ()
    service_selectors: tuple[selectors.Selector, ...] = ()


class IPAddressPoolSpec(_Spec, frozen=True):
    addresses: tuple[addresses.AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = msgspec.field(default=False, name="avoidBuggyIPs")
    service_allocation: ServiceAllocation | None = None


class IPAddressPoolStatus(_Spec, frozen=True):
    assigned_ipv4: int = msgspec.field(default=0, name="assignedIPv4")
    assigned_ipv6: int = msgspec.field(default=0, name="assignedIPv6")
    available_ipv4: int = msgspec.field(default=0, name="availableIPv4")
    available_ipv6: int = msgspec.field(default=0, name="availableIPv6")


class IPAddressPool(_Object, frozen=True):
    KIND = "IPAddressPool"
    API_VERSION = V1BETA1

    spec: IPAddressPoolSpec
    status: IPAddressPoolStatus = msgspec.field(default_factory=IPAddressPoolStatus)

    @property
    def pool_name(self) -> PoolName:
        return PoolName(self.metadata.name)


class L2AdvertisementSpec(_Spec, frozen=True):
    ip_address_pools: tuple[str, ...] = msgspec.field(default=(), name="ipAddressPools")
    ip_address_pool_selectors: tuple[selectors.Selector, ...] = msgspec.field(
        default=(), name="ipAddressPoolSelectors"
    )
    node_selectors: tuple[selectors.Selector, ...] = ()
    service_selectors: tuple[selectors.Selector, ...] = ()
    interfaces: tuple[str, ...] = ()
    gratuitous_refresh_interval: Duration | None = None
    """ironlb only: repeat the gratuitous ARP / unsolicited NA for every announced address at
    this interval, for switches that age out their tables. Unset: only on takeover."""


class L2Advertisement(_Object, frozen=True):
    KIND = "L2Advertisement"
    API_VERSION = V1BETA1

    spec: L2AdvertisementSpec = msgspec.field(default_factory=L2AdvertisementSpec)
    status: _NoStatus = msgspec.field(default_factory=_NoStatus)


class BGPAdvertisementSpec(_Spec, frozen=True):
    aggregation_length: Annotated[int, msgspec.Meta(ge=1, le=32)] = 32
    aggregation_length_v6: Annotated[int, msgspec.Meta(ge=0, le=128)] = msgspec.field(
        default=128, name="aggregationLengthV6"
    )
    local_pref: Uint32 = 0
    communities: tuple[str, ...] = ()
    ip_address_pools: tuple[str, ...] = msgspec.field(default=(), name="ipAddressPools")
    ip_address_pool_selectors: tuple[selectors.Selector, ...] = msgspec.field(
        default=(), name="ipAddressPoolSelectors"
    )
    node_selectors: tuple[selectors.Selector, ...] = ()
    service_selectors: tuple[selectors.Selector, ...] = ()
    peers: tuple[str, ...] = ()


class BGPAdvertisement(_Object, frozen=True):
    KIND = "BGPAdvertisement"
    API_VERSION = V1BETA1

    spec: BGPAdvertisementSpec = msgspec.field(default_factory=BGPAdvertisementSpec)
    status: _NoStatus = msgspec.field(default_factory=_NoStatus)


class SecretReference(_Spec, frozen=True):
    name: str = ""
    namespace: str = ""


class BGPPeerSpec(_Spec, frozen=True):
    my_asn: Uint32 = msgspec.field(name="myASN")
    peer_asn: Uint32 = msgspec.field(default=0, name="peerASN")
    dynamic_asn: Literal["internal", "external"] | None = msgspec.field(
        default=None, name="dynamicASN"
    )
    peer_address: IPText | None = None
    interface: str = ""
    source_address: IPText | None = None
    peer_port: Annotated[int, msgspec.Meta(ge=1, le=16384)] = 179
    hold_time: Duration | None = None
    keepalive_time: Duration | None = None
    connect_time: Duration | None = None
    router_id: IPText | None = msgspec.field(default=None, name="routerID")
    node_selectors: tuple[selectors.Selector, ...] = ()
    password: Secret = Secret("")
    password_secret: SecretReference | None = None
    bfd_profile: str = msgspec.field(default="", name="bfdProfile")
    enable_graceful_restart: bool = False
    ebgp_multi_hop: bool = msgspec.field(default=False, name="ebgpMultiHop")
    vrf: str = ""
    disable_mp: bool = msgspec.field(default=False, name="disableMP")
    dual_stack_address_family: bool = False

    def timers(self) -> tuple[float, float] | None:
        """(hold, keepalive) in seconds as MetalLB derives them from whichever is set
        (keepalive = hold / 3, hold = 3 x keepalive); None when neither is set."""
        if self.hold_time is not None:
            keepalive = (
                self.keepalive_time if self.keepalive_time is not None else self.hold_time / 3
            )
            return float(self.hold_time), float(keepalive)
        if self.keepalive_time is not None:
            return 3 * float(self.keepalive_time), float(self.keepalive_time)
        return None

    @property
    def is_ibgp(self) -> bool:
        return self.dynamic_asn == "internal" or (
            self.dynamic_asn is None and self.peer_asn == self.my_asn
        )


class BGPPeer(_Object, frozen=True):
    KIND = "BGPPeer"
    API_VERSION = V1BETA2

    spec: BGPPeerSpec
    status: _NoStatus = msgspec.field(default_factory=_NoStatus)


# MetalLB's BFDProfile ranges (inclusive), checked when a BFDProfile is parsed and again by
# `bgp.bfd.Profile`: the one place they are written.
BFD_INTERVAL_MS = (10, 60000)
BFD_DETECT_MULTIPLIER = (2, 255)
BFD_MINIMUM_TTL = (1, 254)

_BfdInterval = Annotated[int, msgspec.Meta(ge=BFD_INTERVAL_MS[0], le=BFD_INTERVAL_MS[1])]


class BFDProfileSpec(_Spec, frozen=True):
    """Intervals in milliseconds. Defaults are what MetalLB (FRR) uses when a field is unset."""

    receive_interval: _BfdInterval = 300
    transmit_interval: _BfdInterval = 300
    detect_multiplier: Annotated[
        int, msgspec.Meta(ge=BFD_DETECT_MULTIPLIER[0], le=BFD_DETECT_MULTIPLIER[1])
    ] = 3
    echo_interval: _BfdInterval = 50
    echo_mode: bool = False
    passive_mode: bool = False
    minimum_ttl: Annotated[int, msgspec.Meta(ge=BFD_MINIMUM_TTL[0], le=BFD_MINIMUM_TTL[1])] = (
        msgspec.field(default=254, name="minimumTtl")
    )


class BFDProfile(_Object, frozen=True):
    KIND = "BFDProfile"
    API_VERSION = V1BETA1

    spec: BFDProfileSpec = msgspec.field(default_factory=BFDProfileSpec)
    status: _NoStatus = msgspec.field(default_factory=_NoStatus)


class CommunityAlias(_Spec, frozen=True):
    name: str
    value: community.Value


class CommunitySpec(_Spec, frozen=True):
    communities: tuple[CommunityAlias, ...] = ()


class Community(_Object, frozen=True):
    KIND = "Community"
    API_VERSION = V1BETA1

    spec: CommunitySpec = msgspec.field(default_factory=CommunitySpec)
    status: _NoStatus = msgspec.field(default_factory=_NoStatus)


class InterfaceInfo(_Spec, frozen=True):
    name: str = ""


class ServiceL2StatusStatus(_Spec, frozen=True):
    node: str = ""
    service_name: str = ""
    service_namespace: str = ""
    interfaces: tuple[InterfaceInfo, ...] = ()


class ServiceL2Status(_Object, frozen=True):
    KIND = "ServiceL2Status"
    API_VERSION = V1BETA1

    spec: _NoStatus = msgspec.field(default_factory=_NoStatus)
    status: ServiceL2StatusStatus = msgspec.field(default_factory=ServiceL2StatusStatus)


class ServiceBGPStatusStatus(_Spec, frozen=True):
    node: str = ""
    service_name: str = ""
    service_namespace: str = ""
    peers: tuple[str, ...] = ()


class ServiceBGPStatus(_Object, frozen=True):
    KIND = "ServiceBGPStatus"
    API_VERSION = V1BETA1

    spec: _NoStatus = msgspec.field(default_factory=_NoStatus)
    status: ServiceBGPStatusStatus = msgspec.field(default_factory=ServiceBGPStatusStatus)


ConfigKind = IPAddressPool | L2Advertisement | BGPAdvertisement | BGPPeer | BFDProfile | Community
"""The kinds that make up a `Config`."""
MetalLBObject = ConfigKind | ServiceL2Status | ServiceBGPStatus

KINDS: Mapping[tuple[str, str], type[MetalLBObject]] = {
    (cls.API_VERSION, cls.KIND): cls
    for cls in (
        IPAddressPool,
        L2Advertisement,
        BGPAdvertisement,
        BGPPeer,
        BFDProfile,
        Community,
        ServiceL2Status,
        ServiceBGPStatus,
    )
}

K = TypeVar("K", bound=_Object)


def parse(raw: Mapping[str, Any]) -> MetalLBObject:
    """Parse any `metallb.io` object, choosing the model by (apiVersion, kind)."""
    api_version, kind = raw.get("apiVersion"), raw.get("kind")
    cls = KINDS.get((str(api_version), str(kind)))
    if cls is None:
        known = ", ".join(f"{v} {k}" for v, k in KINDS)
        raise ConfigError(
            describe(str(kind), *_raw_identity(raw)),
            "apiVersion/kind",
            f"{api_version}/{kind} is not a kind ironlb serves (known: {known})",
        )
    return parse_as(raw, cls)


def parse_as(raw: Mapping[str, Any], cls: type[K]) -> K:
    """Parse `raw` as the given kind (apiVersion and kind, if present, must match it)."""
    ref = describe(cls.KIND, *_raw_identity(raw))
    for key, expected in (("apiVersion", cls.API_VERSION), ("kind", cls.KIND)):
        if key in raw and raw[key] != expected:
            raise ConfigError(ref, key, f"expected {expected!r}, got {raw[key]!r}")
    body = {k: v for k, v in raw.items() if k not in ("apiVersion", "kind")}
    try:
        return msgspec.convert(body, cls, dec_hook=_decode)
    except msgspec.ValidationError as e:
        path, message = _explain(e, body, cls)
        raise ConfigError(ref, path, message) from None


def _raw_identity(raw: Mapping[str, Any]) -> tuple[str, str]:
    metadata = raw.get("metadata")
    if not isinstance(metadata, Mapping):
        return "", "<unnamed>"
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "<unnamed>")


def _decode(tp: type, obj: object) -> object:
    if tp is selectors.Selector:
        return selectors.parse(obj)
    if not isinstance(obj, str):
        raise TypeError(f"expected a string, got {selectors.type_name(obj)}")
    if tp is addresses.AddressRange:
        return addresses.parse_range(obj)
    if tp is Duration:
        return parse_duration(obj)
    if tp is IPText:
        addresses.parse_ip(obj)
        return IPText(obj)
    if tp is Secret:
        return Secret(obj)
    if tp is community.Value:
        return parse_community(obj)
    raise NotImplementedError(tp)


# Turning msgspec's errors into messages that name the field and say what to write instead.

_AT = re.compile(r"^(?P<message>.*) - at `\$(?P<path>[^`]*)`$", re.DOTALL)
_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[([^\]]*)\]")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>.*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>.*)`$")
_EXPECTED = re.compile(r"^Expected `(?P<what>[^`]*)`(?P<rest>.*)$")


def _explain(error: msgspec.ValidationError, body: Mapping[str, Any], cls: type) -> tuple[str, str]:
    match = _AT.match(str(error))
    message, raw_path = (match["message"], match["path"]) if match else (str(error), "")
    tokens: list[str | int] = []
    for name, index, key in _TOKEN.findall(raw_path):
        tokens.append(int(index) if index else (name or key))
    path = _format_path(tokens)
    cause = error.__cause__
    if isinstance(cause, selectors.SelectorError):
        return _join(path, cause.path), cause.message
    if cause is not None:
        return path, str(cause)
    if m := _UNKNOWN.match(message):
        field_name = m["field"]
        return _join(path, field_name), _unknown_field(field_name, _type_at(cls, tokens))
    if m := _MISSING.match(message):
        return _join(path, m["field"]), "required field is missing"
    if message.startswith("Invalid enum value"):
        allowed = typing.get_args(_type_at(cls, tokens))
        return path, f"{_value_at(body, tokens)!r} is not one of {', '.join(map(repr, allowed))}"
    if m := _EXPECTED.match(message):
        constraint = "" if m["rest"].startswith(",") else m["rest"].replace("`", "")
        got = _value_at(body, tokens)
        shown = "null" if got is None else repr(got)
        return path, f"expected {m['what']}{constraint}, got {shown}"
    return path, message


def _format_path(tokens: list[str | int]) -> str:
    text = ""
    for token in tokens:
        text += f"[{token}]" if isinstance(token, int) else f".{token}"
    return text.lstrip(".")


def _join(path: str, child: str) -> str:
    if not child:
        return path
    if not path:
        return child
    return f"{path}{child}" if child.startswith("[") else f"{path}.{child}"


def _value_at(body: Mapping[str, Any], tokens: list[str | int]) -> object:
    value: object = body
    for token in tokens:
        try:
            value = value[token]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _type_at(tp: object, tokens: list[str | int]) -> object:
    """The declared type at a path of a model, for listing allowed fields or values."""
    for token in tokens:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin is tuple:
            tp = typing.get_args(tp)[0]
        elif origin is Mapping:
            tp = typing.get_args(tp)[1]
        elif isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            fields = {f.encode_name: f.type for f in msgspec.structs.fields(tp)}
            tp = fields.get(str(token))
        else:
            return None
    return _unwrap(tp)


def _unwrap(tp: object) -> object:
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, _UNION_TYPE) and len(args) == 1:
        return _unwrap(args[0])
    return tp


_UNION_TYPE = type(int | None)


def _unknown_field(name: str, tp: object) -> str:
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return "unknown field"
    known = [f.encode_name for f in msgspec.structs.fields(tp)]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if not close:
        close = [k for k in known if k.lower() == name.lower()]
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return f"unknown field (known fields: {', '.join(known)})"


# The snapshot.


@dataclass(frozen=True, slots=True)
class Config:
    """Every configuration object in force, keyed by name (one namespace, so names are unique)."""

    pools: Mapping[PoolName, IPAddressPool] = field(default_factory=dict)
    l2_advertisements: Mapping[str, L2Advertisement] = field(default_factory=dict)
    bgp_advertisements: Mapping[str, BGPAdvertisement] = field(default_factory=dict)
    peers: Mapping[str, BGPPeer] = field(default_factory=dict)
    bfd_profiles: Mapping[str, BFDProfile] = field(default_factory=dict)
    communities: Mapping[str, Community] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objects: Iterable[ConfigKind]) -> Config:
        """Build a snapshot; two objects of one kind with the same name is a ConfigError."""
        by_kind: dict[type, dict[str, ConfigKind]] = {}
        for obj in sorted(objects, key=lambda o: (o.KIND, o.name)):
            named = by_kind.setdefault(type(obj), {})
            if obj.name in named:
                other = named[obj.name]
                raise ConfigError(obj.ref, "metadata.name", f"{other.ref} has the same name")
            named[obj.name] = obj

        def of(kind: type[K]) -> dict[str, K]:
            return typing.cast(dict[str, K], by_kind.get(kind, {}))

        return cls(
            pools={PoolName(n): p for n, p in of(IPAddressPool).items()},
            l2_advertisements=of(L2Advertisement),
            bgp_advertisements=of(BGPAdvertisement),
            peers=of(BGPPeer),
            bfd_profiles=of(BFDProfile),
            communities=of(Community),
        )

    def with_object(self, obj: ConfigKind) -> Config:
        """This snapshot with `obj` added, or replacing the object of its kind and name: what
        an admission webhook validates for a create or an update."""
        everything: tuple[ConfigKind, ...] = (
            *self.pools.values(),
            *self.l2_advertisements.values(),
            *self.bgp_advertisements.values(),
            *self.peers.values(),
            *self.bfd_profiles.values(),
            *self.communities.values(),
        )
        kept = [o for o in everything if not (type(o) is type(obj) and o.name == obj.name)]
        return Config.from_objects([*kept, obj])

    def selected_pools(
        self, names: Iterable[str], pool_selectors: Iterable[selectors.Selector]
    ) -> list[IPAddressPool]:
        """The pools an advertisement applies to (`selects_pool`).

        Names of pools that do not exist are ignored, as MetalLB does (the validator warns).
        """
        names, pool_selectors = set(names), tuple(pool_selectors)
        return [pool for pool in self.pools.values() if selects_pool(names, pool_selectors, pool)]

    def pool_index(self) -> PoolIndex:
        """Which pool holds an address (build it once per snapshot: it sorts every range)."""
        return PoolIndex(self.pools)

    def community_aliases(self) -> dict[str, community.Value]:
        """Alias name -> value, across every Community object (duplicates: first by name)."""
        aliases: dict[str, community.Value] = {}
        for obj in self.communities.values():
            for alias in obj.spec.communities:
                aliases.setdefault(alias.name, alias.value)
        return aliases


def selects_pool(
    names: Collection[str], pool_selectors: Sequence[selectors.Selector], pool: IPAddressPool
) -> bool:
    """Whether an advertisement with these `ipAddressPools` and `ipAddressPoolSelectors` applies
    to `pool`: by name or by label, to every pool if neither is set (MetalLB). The one rule that
    announcing, validation and diagnosis share."""
    if not names and not pool_selectors:
        return True
    return pool.name in names or any(s.matches(pool.metadata.labels) for s in pool_selectors)


class PoolIndex:
    """Which IPAddressPool an address is in: the one lookup that announcing, allocation,
    diagnosis and `ironlb status` share. Pools never overlap in a validated configuration; ranges
    that do raise ValueError here."""

    __slots__ = ("_ranges",)

    def __init__(self, pools: Mapping[PoolName, IPAddressPool]) -> None:
        self._ranges = addresses.RangeIndex(
            (r, name) for name, pool in pools.items() for r in pool.spec.addresses
        )

    def pool_of(self, ip: addresses.IP) -> PoolName | None:
        return self._ranges.find(addresses.family_of(ip), int(ip))
