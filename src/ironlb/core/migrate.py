"""Converters from MetalLB's older configuration forms to the kinds ironlb serves.

Job: turn MetalLB's legacy `config` ConfigMap (MetalLB up to v0.12) and its v1beta1
`AddressPool` / `BGPPeer` objects (removed in v0.14) into IPAddressPool, L2Advertisement,
BGPAdvertisement, BGPPeer (v1beta2), BFDProfile and Community objects; strip a backup of live
objects down to what can be applied again; decide what to do with a membership Secret or a CRD
left behind by an installed MetalLB.

Invariants: pure functions of plain dicts, no I/O. A field that cannot be converted is never
dropped in silence: it becomes a `Problem` naming the field path (e.g.
`address-pools[1].protocol: 'arp' is neither layer2 nor bgp`), and the converted objects of
everything else are still returned. The output is deterministic (same input, same names, same
order), so that a second run diffs clean.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

Obj = dict[str, Any]

V1BETA1 = "metallb.io/v1beta1"
V1BETA2 = "metallb.io/v1beta2"
LEGACY_CONFIGMAP = "config"
"""The name MetalLB's controller and speakers read their legacy configuration from."""

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the input that was not converted, and why."""

    where: str
    """The source: `ConfigMap metallb-system/config` or `AddressPool metallb-system/a`."""
    field: str
    """Field path inside the source, in the source's own spelling."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Result:
    objects: tuple[Obj, ...] = ()
    problems: tuple[Problem, ...] = ()


@dataclass(slots=True)
class _Out:
    """Accumulates objects and problems while one source is converted."""

    where: str
    namespace: str
    objects: list[Obj] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, path: str, message: str) -> None:
        problem = Problem(self.where, path, message)
        if problem not in self.problems:  # a bad pool name spoils its pool and advertisement
            self.problems.append(problem)

    def add(self, api_version: str, kind: str, name: str, spec: Obj, source: str) -> None:
        if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
            self.problem(source, f"{name!r} is not a valid object name (lowercase DNS subdomain)")
            return
        self.objects.append(
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"name": name, "namespace": self.namespace},
                "spec": spec,
            }
        )

    def result(self) -> Result:
        return Result(tuple(self.objects), tuple(self.problems))


def _unknown(out: _Out, path: str, raw: Mapping[str, Any], known: Iterable[str]) -> None:
    for key in sorted(set(raw) - set(known)):
        out.problem(f"{path}.{key}" if path else key, "unknown field, not converted")


def _mapping(out: _Out, path: str, value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    out.problem(path, f"expected a mapping, got {type(value).__name__}")
    return None


def _list(out: _Out, path: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    out.problem(path, f"expected a list, got {type(value).__name__}")
    return []


def _copy(
    out: _Out, path: str, raw: Mapping[str, Any], spec: Obj, renames: Mapping[str, str], kinds: Any
) -> None:
    """Copy `raw[old]` to `spec[new]` for each rename, checking its type."""
    for old, new in renames.items():
        if old not in raw or raw[old] is None:
            continue
        value = raw[old]
        if not isinstance(value, kinds[old]) or (isinstance(value, bool) and kinds[old] is int):
            out.problem(f"{path}.{old}", f"{value!r} has the wrong type, not converted")
            continue
        spec[new] = value


# --- the legacy ConfigMap ---------------------------------------------------------------------

_POOL_KEYS = (
    "name",
    "protocol",
    "addresses",
    "auto-assign",
    "avoid-buggy-ips",
    "bgp-advertisements",
)
_ADV_KEYS = {
    "aggregation-length": ("aggregationLength", int),
    "aggregation-length-v6": ("aggregationLengthV6", int),
    "localpref": ("localPref", int),
}
_PEER_KEYS = {
    "peer-address": ("peerAddress", str),
    "peer-asn": ("peerASN", int),
    "my-asn": ("myASN", int),
    "peer-port": ("peerPort", int),
    "hold-time": ("holdTime", str),
    "keepalive-time": ("keepaliveTime", str),
    "router-id": ("routerID", str),
    "source-address": ("sourceAddress", str),
    "password": ("password", str),
    "bfd-profile": ("bfdProfile", str),
    "ebgp-multihop": ("ebgpMultiHop", bool),
    "vrf": ("vrf", str),
}
_BFD_KEYS = {
    "receive-interval": ("receiveInterval", int),
    "transmit-interval": ("transmitInterval", int),
    "detect-multiplier": ("detectMultiplier", int),
    "echo-interval": ("echoInterval", int),
    "echo-mode": ("echoMode", bool),
    "passive-mode": ("passiveMode", bool),
    "minimum-ttl": ("minimumTtl", int),
}
_TOP_KEYS = ("peers", "bgp-communities", "address-pools", "bfd-profiles")


def _split(table: Mapping[str, tuple[str, type]]) -> tuple[dict[str, str], dict[str, type]]:
    return {k: v[0] for k, v in table.items()}, {k: v[1] for k, v in table.items()}


_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _GoYamlLoader(yaml.SafeLoader):
    """YAML as MetalLB's Go parser reads it: `64512:1` (a BGP community) and `1:30` stay text
    instead of YAML 1.1 base-60 integers."""


_GoYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
_GoYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def configmap_data(configmap: Mapping[str, Any]) -> str | None:
    """The `config` key of a legacy ConfigMap object, or None if it has none."""
    data = configmap.get("data") or {}
    value = data.get("config") if isinstance(data, Mapping) else None
    return value if isinstance(value, str) else None


def from_configmap(text: str, namespace: str, where: str | None = None) -> Result:
    """Convert the YAML text of a legacy ConfigMap's `config` key."""
    out = _Out(where or f"ConfigMap {namespace}/{LEGACY_CONFIGMAP}", namespace)
    try:
        raw = yaml.load(text, Loader=_GoYamlLoader)
    except yaml.YAMLError as e:
        out.problem("config", f"not valid YAML: {str(e).splitlines()[0]}")
        return out.result()
    if raw is None:
        return out.result()
    top = _mapping(out, "config", raw)
    if top is None:
        return out.result()
    _unknown(out, "", top, _TOP_KEYS)

    communities = _mapping(out, "bgp-communities", top.get("bgp-communities") or {}) or {}
    if communities:
        entries = []
        for alias, value in communities.items():
            if not isinstance(value, str):
                out.problem(f"bgp-communities.{alias}", f"{value!r} is not a community string")
                continue
            entries.append({"name": str(alias), "value": value})
        if entries:
            out.add(
                V1BETA1, "Community", "bgp-communities", {"communities": entries}, "bgp-communities"
            )

    for i, raw_profile in enumerate(_list(out, "bfd-profiles", top.get("bfd-profiles"))):
        path = f"bfd-profiles[{i}]"
        profile = _mapping(out, path, raw_profile)
        if profile is None:
            continue
        _unknown(out, path, profile, ("name", *_BFD_KEYS))
        name = profile.get("name")
        if not isinstance(name, str):
            out.problem(f"{path}.name", "missing: the profile cannot be converted")
            continue
        spec: Obj = {}
        _copy(out, path, profile, spec, *_split(_BFD_KEYS))
        out.add(V1BETA1, "BFDProfile", name, spec, f"{path}.name")

    for i, raw_peer in enumerate(_list(out, "peers", top.get("peers"))):
        _legacy_peer(out, i, raw_peer)

    for i, raw_pool in enumerate(_list(out, "address-pools", top.get("address-pools"))):
        _legacy_pool(out, i, raw_pool)
    return out.result()


def _legacy_peer(out: _Out, i: int, raw_peer: Any) -> None:
    path = f"peers[{i}]"
    peer = _mapping(out, path, raw_peer)
    if peer is None:
        return
    _unknown(out, path, peer, ("node-selectors", *_PEER_KEYS))
    spec: Obj = {}
    _copy(out, path, peer, spec, *_split(_PEER_KEYS))
    for required in ("peer-address", "peer-asn", "my-asn"):
        if required not in peer:
            out.problem(f"{path}.{required}", "missing: the peer cannot be converted")
            return
    selectors = []
    for j, raw_sel in enumerate(_list(out, f"{path}.node-selectors", peer.get("node-selectors"))):
        sel_path = f"{path}.node-selectors[{j}]"
        sel = _mapping(out, sel_path, raw_sel)
        if sel is None:
            continue
        _unknown(out, sel_path, sel, ("match-labels", "match-expressions"))
        selector: Obj = {}
        labels = sel.get("match-labels")
        if labels:
            selector["matchLabels"] = {str(k): str(v) for k, v in labels.items()}
        exprs = []
        for k, raw_expr in enumerate(
            _list(out, f"{sel_path}.match-expressions", sel.get("match-expressions"))
        ):
            expr_path = f"{sel_path}.match-expressions[{k}]"
            expr = _mapping(out, expr_path, raw_expr)
            if expr is None:
                continue
            _unknown(out, expr_path, expr, ("key", "operator", "values"))
            converted: Obj = {"key": expr.get("key"), "operator": expr.get("operator")}
            if expr.get("values") is not None:
                converted["values"] = [str(v) for v in expr["values"]]
            exprs.append(converted)
        if exprs:
            selector["matchExpressions"] = exprs
        selectors.append(selector)
    if selectors:
        spec["nodeSelectors"] = selectors
    out.add(V1BETA2, "BGPPeer", f"peer-{i + 1}", spec, path)


def _legacy_pool(out: _Out, i: int, raw_pool: Any) -> None:
    path = f"address-pools[{i}]"
    pool = _mapping(out, path, raw_pool)
    if pool is None:
        return
    _unknown(out, path, pool, _POOL_KEYS)
    name = pool.get("name")
    if not isinstance(name, str):
        out.problem(f"{path}.name", "missing: the pool cannot be converted")
        return
    protocol = pool.get("protocol")
    if protocol not in ("layer2", "bgp"):
        out.problem(f"{path}.protocol", f"{protocol!r} is neither layer2 nor bgp")
        return
    spec: Obj = {
        "addresses": [str(a) for a in _list(out, f"{path}.addresses", pool.get("addresses"))]
    }
    _copy(
        out,
        path,
        pool,
        spec,
        {"auto-assign": "autoAssign", "avoid-buggy-ips": "avoidBuggyIPs"},
        {"auto-assign": bool, "avoid-buggy-ips": bool},
    )
    out.add(V1BETA1, "IPAddressPool", name, spec, f"{path}.name")
    advs = _list(out, f"{path}.bgp-advertisements", pool.get("bgp-advertisements"))
    if protocol == "layer2":
        if advs:
            out.problem(f"{path}.bgp-advertisements", "a layer2 pool has no BGP advertisements")
        out.add(V1BETA1, "L2Advertisement", name, {"ipAddressPools": [name]}, f"{path}.name")
        return
    _bgp_advertisements(out, path, name, advs, _ADV_KEYS, "bgp-advertisements")


def _bgp_advertisements(
    out: _Out,
    path: str,
    pool: str,
    advs: Sequence[Any],
    table: Mapping[str, tuple[str, type]],
    list_field: str,
) -> None:
    """A BGP pool without advertisements is announced with one default advertisement, as MetalLB
    did; each listed advertisement becomes one BGPAdvertisement."""
    if not advs:
        out.add(V1BETA1, "BGPAdvertisement", pool, {"ipAddressPools": [pool]}, path)
        return
    for j, raw_adv in enumerate(advs):
        adv_path = f"{path}.{list_field}[{j}]"
        adv = _mapping(out, adv_path, raw_adv)
        if adv is None:
            continue
        _unknown(out, adv_path, adv, ("communities", *table))
        spec: Obj = {"ipAddressPools": [pool]}
        _copy(out, adv_path, adv, spec, *_split(table))
        communities = _list(out, f"{adv_path}.communities", adv.get("communities"))
        if communities:
            spec["communities"] = [str(c) for c in communities]
        name = pool if len(advs) == 1 else f"{pool}-{j + 1}"
        out.add(V1BETA1, "BGPAdvertisement", name, spec, adv_path)


# --- v1beta1 AddressPool and BGPPeer ----------------------------------------------------------

_AP_ADV_KEYS = {
    "aggregationLength": ("aggregationLength", int),
    "aggregationLengthV6": ("aggregationLengthV6", int),
    "localPref": ("localPref", int),
}
_PEER_SPEC_KEYS = (
    "myASN",
    "peerASN",
    "peerAddress",
    "sourceAddress",
    "peerPort",
    "holdTime",
    "keepaliveTime",
    "routerID",
    "nodeSelectors",
    "password",
    "bfdProfile",
    "ebgpMultiHop",
    "vrf",
)


def from_v1beta1(objects: Iterable[Mapping[str, Any]]) -> Result:
    """Convert v1beta1 AddressPool objects (to IPAddressPool plus the matching advertisement) and
    v1beta1 BGPPeer objects (to v1beta2). Other objects are passed over."""
    objects_out: list[Obj] = []
    problems: list[Problem] = []
    for raw in objects:
        kind, version = raw.get("kind"), raw.get("apiVersion")
        meta = raw.get("metadata") or {}
        namespace = str(meta.get("namespace") or "metallb-system")
        out = _Out(f"{kind} {namespace}/{meta.get('name')}", namespace)
        name = meta.get("name")
        spec = raw.get("spec")
        if (kind, version) not in (("AddressPool", V1BETA1), ("BGPPeer", V1BETA1)):
            continue
        if not isinstance(name, str) or not isinstance(spec, Mapping):
            out.problem("metadata.name" if not isinstance(name, str) else "spec", "missing")
        elif kind == "AddressPool" and version == V1BETA1:
            _address_pool(out, name, spec)
        else:
            _unknown(out, "spec", spec, _PEER_SPEC_KEYS)
            out.add(
                V1BETA2, "BGPPeer", name, {k: spec[k] for k in _PEER_SPEC_KEYS if k in spec}, "spec"
            )
            for o in out.objects:
                _keep_labels(o, meta)
        objects_out += out.objects
        problems += out.problems
    return Result(tuple(objects_out), tuple(problems))


def _address_pool(out: _Out, name: str, spec: Mapping[str, Any]) -> None:
    _unknown(
        out,
        "spec",
        spec,
        ("protocol", "addresses", "autoAssign", "avoidBuggyIPs", "bgpAdvertisements"),
    )
    protocol = spec.get("protocol")
    if protocol not in ("layer2", "bgp"):
        out.problem("spec.protocol", f"{protocol!r} is neither layer2 nor bgp")
        return
    pool: Obj = {"addresses": [str(a) for a in _list(out, "spec.addresses", spec.get("addresses"))]}
    _copy(
        out,
        "spec",
        spec,
        pool,
        {"autoAssign": "autoAssign", "avoidBuggyIPs": "avoidBuggyIPs"},
        {"autoAssign": bool, "avoidBuggyIPs": bool},
    )
    out.add(V1BETA1, "IPAddressPool", name, pool, "metadata.name")
    advs = _list(out, "spec.bgpAdvertisements", spec.get("bgpAdvertisements"))
    if protocol == "layer2":
        if advs:
            out.problem("spec.bgpAdvertisements", "a layer2 pool has no BGP advertisements")
        out.add(V1BETA1, "L2Advertisement", name, {"ipAddressPools": [name]}, "metadata.name")
    else:
        _bgp_advertisements(out, "spec", name, advs, _AP_ADV_KEYS, "bgpAdvertisements")


def _keep_labels(obj: Obj, meta: Mapping[str, Any]) -> None:
    for key in ("labels", "annotations"):
        if meta.get(key):
            obj["metadata"][key] = dict(meta[key])


# --- backups --------------------------------------------------------------------------------

BACKUP_KINDS = (
    ("metallb.io", "v1beta1", "IPAddressPool", "ipaddresspools"),
    ("metallb.io", "v1beta1", "L2Advertisement", "l2advertisements"),
    ("metallb.io", "v1beta1", "BGPAdvertisement", "bgpadvertisements"),
    ("metallb.io", "v1beta2", "BGPPeer", "bgppeers"),
    ("metallb.io", "v1beta1", "BFDProfile", "bfdprofiles"),
    ("metallb.io", "v1beta1", "Community", "communities"),
    ("metallb.io", "v1beta1", "AddressPool", "addresspools"),
)
"""What `backup` saves: the configuration kinds. ServiceL2Status, ServiceBGPStatus and
ConfigurationState are status written by the running load balancer and are not configuration."""

_SERVER_SET = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
)


def for_backup(obj: Mapping[str, Any]) -> Obj:
    """An object as it can be applied to another (or an emptied) cluster: no status, no
    server-set metadata, no `last-applied-configuration` copy of itself."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _SERVER_SET}
    annotations = {
        k: v
        for k, v in (meta.get("annotations") or {}).items()
        if k != "kubectl.kubernetes.io/last-applied-configuration"
    }
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    kept: Obj = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": meta}
    if "spec" in obj:
        kept["spec"] = obj["spec"]
    return kept


# --- taking over from an installed MetalLB ----------------------------------------------------

IRONLB_LABEL = ("app.kubernetes.io/part-of", "ironlb")


def foreign_owners(secret: Mapping[str, Any]) -> list[Obj]:
    """The owner references of a membership Secret that would delete it with something that is
    not ironlb: MetalLB's controller creates `memberlist` owned by its Deployment, and removing
    MetalLB would garbage-collect the key the speakers authenticate with."""
    meta = secret.get("metadata") or {}
    return [dict(ref) for ref in meta.get("ownerReferences") or ()]


def membership_secret_patch(secret: Mapping[str, Any]) -> Obj | None:
    """A merge patch that makes a leftover membership Secret ironlb's (its owner references
    dropped, ironlb's label added), or None if there is nothing to change. The key is kept: the
    speakers of both load balancers can share it during the switch."""
    meta = secret.get("metadata") or {}
    labels = meta.get("labels") or {}
    owned = bool(foreign_owners(secret))
    if not owned and labels.get(IRONLB_LABEL[0]) == IRONLB_LABEL[1]:
        return None
    patch: Obj = {"metadata": {"labels": {IRONLB_LABEL[0]: IRONLB_LABEL[1]}}}
    if owned:
        patch["metadata"]["ownerReferences"] = None
    return patch


def crd_takeover_problem(crd: Mapping[str, Any]) -> str | None:
    """Why an existing metallb.io CRD stops ironlb from working, or None if it is ironlb's own.

    MetalLB's CRDs carry a conversion webhook pointing at MetalLB's webhook Service (every read
    fails once MetalLB is gone) and schemas that prune the fields ironlb adds; Helm leaves
    existing CRDs alone, so installing ironlb's chart does not replace them."""
    meta = crd.get("metadata") or {}
    name = meta.get("name", "?")
    labels = meta.get("labels") or {}
    if labels.get(IRONLB_LABEL[0]) == IRONLB_LABEL[1]:
        return None
    conversion = (crd.get("spec") or {}).get("conversion") or {}
    if conversion.get("strategy") == "Webhook":
        service = ((conversion.get("webhook") or {}).get("clientConfig") or {}).get("service") or {}
        target = f"{service.get('namespace', '?')}/{service.get('name', '?')}"
        return f"{name} is MetalLB's, with a conversion webhook to Service {target}"
    return f"{name} is not ironlb's (no {IRONLB_LABEL[0]}={IRONLB_LABEL[1]} label)"


def crd_replacement(existing: Mapping[str, Any], ours: Mapping[str, Any]) -> Obj:
    """ironlb's CRD as a replacement (PUT) of an existing one: its resourceVersion, and every
    version still in `status.storedVersions` kept served (the API server refuses to drop one,
    and objects stored in it must stay readable)."""
    replacement: Obj = {**ours, "metadata": {**ours["metadata"]}}
    rv = (existing.get("metadata") or {}).get("resourceVersion")
    if rv is not None:
        replacement["metadata"]["resourceVersion"] = rv
    spec = {**ours["spec"]}
    versions = [dict(v) for v in spec["versions"]]
    have = {v["name"] for v in versions}
    old = {v.get("name"): v for v in (existing.get("spec") or {}).get("versions") or ()}
    for stored in (existing.get("status") or {}).get("storedVersions") or ():
        if stored not in have and stored in old:
            kept = {k: v for k, v in old[stored].items() if k != "storage"}
            versions.append({**kept, "storage": False})
    spec["versions"] = versions
    replacement["spec"] = spec
    return replacement


def load_all(text: str) -> list[Any]:
    """Every document of a YAML stream, read as MetalLB's Go parser reads it (see above)."""
    return [d for d in yaml.load_all(text, Loader=_GoYamlLoader) if d is not None]


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Objects as one multi-document YAML stream, in the order given."""
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False, default_flow_style=False)
