"""Generates deploy/crds/*.yaml (and the Helm chart's copy in deploy/helm/ironlb/crds/): the
metallb.io CustomResourceDefinitions ironlb serves.

The schemas follow MetalLB's field names, types and defaults, so that MetalLB users' manifests
apply unchanged; constraints the API server can check itself (ranges, enums, exclusive fields)
are expressed here as OpenAPI bounds and CEL rules, the rest is left to ironlb's webhook.

    python dev/gen_crds.py            write deploy/crds/ and the chart's crds/
    python dev/gen_crds.py --check    exit 1 if either differs (run by the unit tests)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "metallb.io"
DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
OUTS = (DEPLOY / "crds", DEPLOY / "helm" / "ironlb" / "crds")

Schema = dict[str, Any]


def string(desc: str, **extra: Any) -> Schema:
    return {"type": "string", "description": desc, **extra}


def boolean(desc: str, default: bool | None = None) -> Schema:
    s: Schema = {"type": "boolean", "description": desc}
    if default is not None:
        s["default"] = default
    return s


def integer(desc: str, lo: int | None = None, hi: int | None = None, **extra: Any) -> Schema:
    s: Schema = {"type": "integer", "description": desc, **extra}
    if lo is not None:
        s["minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    return s


def strings(desc: str, **extra: Any) -> Schema:
    return {"type": "array", "description": desc, "items": {"type": "string"}, **extra}


def obj(desc: str, props: dict[str, Schema], required: list[str] | None = None, **x: Any) -> Schema:
    s: Schema = {"type": "object", "description": desc, "properties": props, **x}
    if required:
        s["required"] = required
    return s


def duration(desc: str) -> Schema:
    return string(
        desc + ' A Kubernetes duration such as "90s" or "1m30s".',
        **{
            "x-kubernetes-validations": [
                {"rule": "duration(self) >= duration('0s')", "message": "must not be negative"}
            ]
        },
    )


LABEL_SELECTOR: Schema = {
    "type": "object",
    "description": "A Kubernetes label selector; matchLabels and matchExpressions are ANDed.",
    "x-kubernetes-map-type": "atomic",
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {
            "type": "array",
            "x-kubernetes-list-type": "atomic",
            "items": obj(
                "A requirement on one label.",
                {
                    "key": {"type": "string"},
                    "operator": {
                        "type": "string",
                        "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                    },
                    "values": {
                        "type": "array",
                        "items": {"type": "string"},
                        "x-kubernetes-list-type": "atomic",
                    },
                },
                ["key", "operator"],
            ),
        },
    },
}


def selectors(desc: str) -> Schema:
    return {"type": "array", "description": desc, "items": LABEL_SELECTOR}


ASN = {"format": "int64"}


def crd(
    kind: str,
    plural: str,
    versions: list[tuple[str, Schema, Schema | None, list[Schema]]],
    storage: str,
    deprecated: dict[str, str] | None = None,
    group: str = GROUP,
    status_subresource: bool = True,
) -> dict[str, Any]:
    """One CRD. versions: (name, spec schema, status schema or None, printer columns)."""
    out_versions = []
    for name, spec, status, columns in versions:
        props: Schema = {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
        }
        if status is not None:
            props["status"] = status
        version: dict[str, Any] = {
            "name": name,
            "served": True,
            "storage": name == storage,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": props}},
        }
        if status_subresource:
            version["subresources"] = {"status": {}}
        if columns:
            version["additionalPrinterColumns"] = columns
        if deprecated and name in deprecated:
            version["deprecated"] = True
            version["deprecationWarning"] = deprecated[name]
        out_versions.append(version)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app.kubernetes.io/part-of": "ironlb"},
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
            },
            "scope": "Namespaced",
            # Only BGPPeer has two versions; v1beta1's fields are a subset of v1beta2's, so the
            # API server can convert by relabelling alone and no conversion webhook is needed.
            "conversion": {"strategy": "None"},
            "versions": out_versions,
        },
    }


def column(name: str, path: str, kind: str = "string") -> Schema:
    return {"name": name, "jsonPath": path, "type": kind}


AGE = column("Age", ".metadata.creationTimestamp", "date")

ip_address_pool = crd(
    "IPAddressPool",
    "ipaddresspools",
    [
        (
            "v1beta1",
            obj(
                "Addresses ironlb may hand to LoadBalancer Services, and who may get them.",
                {
                    "addresses": strings(
                        'CIDRs ("192.0.2.0/28") or inclusive ranges ("192.0.2.1-192.0.2.9"),'
                        " IPv4 and IPv6 mixed.",
                        minItems=1,
                    ),
                    "autoAssign": boolean(
                        "Hand out addresses without an explicit request. When false, only a"
                        " Service that names this pool or one of its addresses gets one.",
                        True,
                    ),
                    "avoidBuggyIPs": boolean(
                        "Never hand out IPv4 addresses ending in .0 or .255.", False
                    ),
                    "serviceAllocation": obj(
                        "Reserve this pool for some namespaces or Services.",
                        {
                            "priority": integer(
                                "Lower numbers are tried first; 0 (unset) is tried last.", lo=0
                            ),
                            "namespaces": strings("Namespaces that may use this pool."),
                            "namespaceSelectors": selectors("Namespaces that may use this pool."),
                            "serviceSelectors": selectors("Services that may use this pool."),
                        },
                    ),
                },
                ["addresses"],
            ),
            obj(
                "Usage counters written by the controller.",
                {
                    "assignedIPv4": integer("IPv4 addresses in use.", **ASN),
                    "assignedIPv6": integer("IPv6 addresses in use.", **ASN),
                    "availableIPv4": integer("IPv4 addresses free.", **ASN),
                    "availableIPv6": integer("IPv6 addresses free.", **ASN),
                },
            ),
            [
                column("Auto Assign", ".spec.autoAssign", "boolean"),
                column("Avoid Buggy IPs", ".spec.avoidBuggyIPs", "boolean"),
                column("Addresses", ".spec.addresses"),
                AGE,
            ],
        )
    ],
    "v1beta1",
)

l2_advertisement = crd(
    "L2Advertisement",
    "l2advertisements",
    [
        (
            "v1beta1",
            obj(
                "Announce addresses of the selected pools on the LAN with ARP and NDP.",
                {
                    "ipAddressPools": strings("Pools by name; none and no selector means all."),
                    "ipAddressPoolSelectors": selectors("Pools by label."),
                    "nodeSelectors": selectors("Nodes that may announce; none means all."),
                    "interfaces": strings(
                        "Interfaces to announce on; none means every usable interface."
                    ),
                    "serviceSelectors": selectors("Services to announce; none means all."),
                    "gratuitousRefreshInterval": duration(
                        "ironlb: repeat the gratuitous ARP / unsolicited NA for announced addresses"
                        " this often (at least 1s), for switches that age out MAC entries; unset"
                        " means only on takeover."
                    ),
                },
            ),
            None,
            [
                column("IPAddressPools", ".spec.ipAddressPools"),
                column("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors"),
                column("Interfaces", ".spec.interfaces"),
                column("Node Selectors", ".spec.nodeSelectors", "string"),
                AGE,
            ],
        )
    ],
    "v1beta1",
)

bgp_advertisement = crd(
    "BGPAdvertisement",
    "bgpadvertisements",
    [
        (
            "v1beta1",
            obj(
                "Advertise addresses of the selected pools to BGP peers.",
                {
                    "aggregationLength": integer(
                        "Prefix length of IPv4 routes advertised.", lo=0, hi=32, default=32
                    ),
                    "aggregationLengthV6": integer(
                        "Prefix length of IPv6 routes advertised.", lo=0, hi=128, default=128
                    ),
                    "localPref": integer(
                        "BGP LOCAL_PREF attribute (iBGP sessions only).", lo=0, hi=4294967295
                    ),
                    "communities": strings(
                        'Communities: "AA:NN", "large:A:B:C", or the name of a Community alias.'
                    ),
                    "ipAddressPools": strings("Pools by name; none and no selector means all."),
                    "ipAddressPoolSelectors": selectors("Pools by label."),
                    "nodeSelectors": selectors("Nodes that may advertise; none means all."),
                    "serviceSelectors": selectors("Services to advertise; none means all."),
                    "peers": strings("BGPPeers by name; none means every peer."),
                },
            ),
            None,
            [
                column("IPAddressPools", ".spec.ipAddressPools"),
                column("IPAddressPool Selectors", ".spec.ipAddressPoolSelectors"),
                column("Peers", ".spec.peers"),
                column("Node Selectors", ".spec.nodeSelectors"),
                AGE,
            ],
        )
    ],
    "v1beta1",
)

bfd_profile = crd(
    "BFDProfile",
    "bfdprofiles",
    [
        (
            "v1beta1",
            obj(
                "BFD timers for the BGP sessions of the peers that name this profile.",
                {
                    "receiveInterval": integer(
                        "Slowest rate, in ms, at which this end wants packets (default 300).",
                        lo=10,
                        hi=60000,
                    ),
                    "transmitInterval": integer(
                        "Fastest rate, in ms, at which this end sends packets (default 300).",
                        lo=10,
                        hi=60000,
                    ),
                    "detectMultiplier": integer(
                        "Packets lost before the session is declared down (default 3).",
                        lo=2,
                        hi=255,
                    ),
                    "echoInterval": integer("Echo packet interval in ms.", lo=10, hi=60000),
                    "echoMode": boolean("Request the echo function."),
                    "passiveMode": boolean("Wait for the peer's first packet before sending."),
                    "minimumTtl": integer("Lowest TTL accepted (multihop sessions).", lo=1, hi=254),
                },
            ),
            obj("Unused.", {}),
            [
                column("Passive Mode", ".spec.passiveMode", "boolean"),
                column("Transmit Interval", ".spec.transmitInterval", "integer"),
                column("Receive Interval", ".spec.receiveInterval", "integer"),
                column("Multiplier", ".spec.detectMultiplier", "integer"),
            ],
        )
    ],
    "v1beta1",
)

community = crd(
    "Community",
    "communities",
    [
        (
            "v1beta1",
            obj(
                "Named BGP communities that BGPAdvertisements may use by name.",
                {
                    "communities": {
                        "type": "array",
                        "items": obj(
                            "One alias.",
                            {
                                "name": string("The alias."),
                                "value": string('"AA:NN" or "large:A:B:C".'),
                            },
                        ),
                    }
                },
            ),
            obj("Unused.", {}),
            [],
        )
    ],
    "v1beta1",
)


def service_status(kind: str, plural: str, what: Schema, what_name: str) -> dict[str, Any]:
    return crd(
        kind,
        plural,
        [
            (
                "v1beta1",
                obj("Empty: this object only carries status.", {}),
                obj(
                    "Written by the speaker that announces the Service.",
                    {
                        "node": string("The announcing node."),
                        "serviceName": string("The Service."),
                        "serviceNamespace": string("The Service's namespace."),
                        what_name: what,
                    },
                ),
                [
                    column("Allocated Node", ".status.node"),
                    column("Service Name", ".status.serviceName"),
                    column("Service Namespace", ".status.serviceNamespace"),
                ],
            )
        ],
        "v1beta1",
    )


service_l2_status = service_status(
    "ServiceL2Status",
    "servicel2statuses",
    {
        "type": "array",
        "description": "Interfaces the address is announced on.",
        "items": obj("One interface.", {"name": string("Interface name.")}),
    },
    "interfaces",
)
service_bgp_status = service_status(
    "ServiceBGPStatus",
    "servicebgpstatuses",
    strings("BGPPeers the address is advertised to."),
    "peers",
)

_peer_v1beta1: dict[str, Schema] = {
    "myASN": integer("Local AS number.", lo=0, hi=4294967295, **ASN),
    "peerASN": integer("The peer's AS number.", lo=0, hi=4294967295, **ASN),
    "peerAddress": string("Address to connect to."),
    "sourceAddress": string("Local address to connect from."),
    "peerPort": integer("TCP port of the peer.", lo=0, hi=16384, default=179),
    "holdTime": duration("Proposed BGP hold time; 0 or at least 3s."),
    "keepaliveTime": duration("BGP keepalive interval; defaults to a third of the hold time."),
    "routerID": string("BGP identifier to send (an IPv4 address)."),
    "nodeSelectors": selectors("Only nodes matching one of these connect to this peer."),
    "password": string("TCP MD5 password (RFC 2385)."),
    "bfdProfile": string("BFDProfile for this session; none means no BFD."),
    "ebgpMultiHop": boolean("The eBGP peer is more than one hop away."),
}

_peer_v1beta2: dict[str, Schema] = {
    **_peer_v1beta1,
    "dynamicASN": string(
        "Accept the peer's AS number as it comes: internal (must equal myASN) or external"
        " (must differ). Exclusive with peerASN.",
        enum=["internal", "external"],
    ),
    "passwordSecret": obj(
        'A Secret of type kubernetes.io/basic-auth whose "password" key is the TCP MD5'
        " password. Exclusive with password.",
        {"name": string("Secret name."), "namespace": string("Secret namespace.")},
        **{"x-kubernetes-map-type": "atomic"},
    ),
    "connectTime": string(
        "Time between connection attempts, whole seconds from 1s to 65535s.",
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "duration(self) >= duration('1s')"
                    " && duration(self) <= duration('65535s')",
                    "message": "connectTime must be between 1s and 65535s",
                },
                {
                    "rule": "duration(self).getMilliseconds() % 1000 == 0",
                    "message": "connectTime must be a whole number of seconds",
                },
            ]
        },
    ),
    "enableGracefulRestart": boolean(
        "Advertise BGP graceful restart (RFC 4724) so the router keeps routes across a"
        " speaker restart.",
    ),
    "disableMP": boolean("Use separate sessions per address family (not supported).", False),
    "vrf": string("Host VRF to peer from (not supported by ironlb: rejected by the webhook)."),
    "interface": string("Unnumbered peering interface (not supported by ironlb)."),
    "dualStackAddressFamily": boolean(
        "Exchange IPv4 and IPv6 routes over this one session (MP-BGP).", False
    ),
}

_peer_rules = [
    {
        "rule": "has(self.peerASN) != has(self.dynamicASN)",
        "message": "exactly one of peerASN and dynamicASN must be set",
    },
    {
        "rule": "!(has(self.password) && has(self.passwordSecret))",
        "message": "password and passwordSecret are mutually exclusive",
    },
]

_peer_columns = [
    column("Address", ".spec.peerAddress"),
    column("ASN", ".spec.peerASN"),
    column("BFD Profile", ".spec.bfdProfile"),
    column("Multi Hops", ".spec.ebgpMultiHop"),
]

bgp_peer = crd(
    "BGPPeer",
    "bgppeers",
    [
        (
            "v1beta1",
            obj(
                "A BGP router to peer with (deprecated version).",
                _peer_v1beta1,
                ["myASN", "peerASN", "peerAddress"],
            ),
            obj("Unused.", {}),
            _peer_columns,
        ),
        (
            "v1beta2",
            obj(
                "A BGP router the speakers peer with.",
                _peer_v1beta2,
                ["myASN", "peerAddress"],
                **{"x-kubernetes-validations": _peer_rules},
            ),
            obj("Unused.", {}),
            _peer_columns,
        ),
    ],
    "v1beta2",
    deprecated={"v1beta1": "metallb.io/v1beta1 BGPPeer is deprecated, use metallb.io/v1beta2"},
)

configuration_state = crd(
    "ConfigurationState",
    "configurationstates",
    [
        (
            "v1beta1",
            obj(
                "Which component this state belongs to.",
                {
                    "type": string("Controller or Speaker.", enum=["Controller", "Speaker"]),
                    "nodeName": string("The speaker's node."),
                },
                ["type"],
            ),
            obj(
                "Whether the component's configuration is valid and in force.",
                {
                    "validConfig": boolean("True when the latest configuration is in force."),
                    "lastError": string("Why the latest configuration is not in force."),
                    "conditions": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["type"],
                        "items": obj(
                            "One aspect of the configuration.",
                            {
                                "type": string("Condition type."),
                                "status": string(
                                    "True, False or Unknown.", enum=["True", "False", "Unknown"]
                                ),
                                "reason": string("CamelCase reason."),
                                "message": string("Details."),
                                "lastTransitionTime": string(
                                    "When status last changed.", format="date-time"
                                ),
                                "observedGeneration": integer("Generation observed.", lo=0),
                            },
                            ["type", "status", "reason", "message", "lastTransitionTime"],
                        ),
                    },
                },
            ),
            [
                column("Type", ".spec.type"),
                column("Node", ".spec.nodeName"),
                column("Valid", ".status.validConfig", "boolean"),
                column("LastError", ".status.lastError"),
                AGE,
            ],
        )
    ],
    "v1beta1",
)

# ironlb's own group: what each speaker publishes for `ironlb status` / `ironlb doctor`. No
# status subresource: the speaker writes the whole object with one apply, only on change.
IRONLB_GROUP = "ironlb.io"

speaker_report = crd(
    "SpeakerReport",
    "speakerreports",
    [
        (
            "v1alpha1",
            obj("Whose report this is.", {"nodeName": string("The speaker's node.")}),
            obj(
                "The speaker's own view of its node, written only when it changes (at most"
                " every 5 s).",
                {
                    "membership": obj(
                        "Speaker-to-speaker liveness.",
                        {
                            "enabled": boolean("Membership runs (its key exists)."),
                            "keyOK": boolean("The memberlist Secret holds a usable key."),
                            "keyID": string("First 12 hex digits of the signing key's SHA-256."),
                            "live": strings("Nodes this speaker sees alive."),
                        },
                    ),
                    "ignoreExcludeLB": boolean("Started with --ignore-exclude-lb."),
                    "interfaces": {
                        "type": "array",
                        "description": "Interfaces of the node, with their addresses.",
                        "items": obj(
                            "One interface.",
                            {
                                "name": string("Interface name."),
                                "addresses": strings("Addresses as ip/prefixlen."),
                                "usable": boolean("May announce (Ethernet, up, not excluded)."),
                            },
                        ),
                    },
                    "announced": {
                        "type": "array",
                        "description": "Addresses this node answers ARP/NDP for.",
                        "items": obj(
                            "One address.",
                            {
                                "address": string("The address."),
                                "interface": string("Interfaces answering, comma-separated."),
                            },
                        ),
                    },
                    "notAnnounced": {
                        "type": "array",
                        "description": "Addresses this node should announce but cannot, and why.",
                        "items": obj(
                            "One address.",
                            {"address": string("The address."), "reason": string("Why not.")},
                        ),
                    },
                    "conflicts": {
                        "type": "array",
                        "description": "Addresses another host also answers ARP/NDP for.",
                        "items": obj(
                            "One conflict.",
                            {
                                "address": string("The address."),
                                "mac": string("The other host's MAC address."),
                            },
                        ),
                    },
                    "bgpSessions": {
                        "type": "array",
                        "description": "BGP sessions of this node, one per BGPPeer.",
                        "items": obj(
                            "One session.",
                            {
                                "peer": string("BGPPeer name."),
                                "address": string("Peer address."),
                                "state": string("BGP FSM state (Established, Active...)."),
                                "since": string("Last state change.", format="date-time"),
                                "prefixesSent": integer("Prefixes advertised now.", lo=0),
                                "advertised": strings("Prefixes advertised now."),
                                "bfd": string("BFD session state, when BFD runs."),
                                "lastDown": string("Why the session last went down."),
                            },
                        ),
                    },
                    "problems": strings("Why this node announces less than it could."),
                    "bgpPeerProblems": {
                        "type": "array",
                        "description": "BGPPeers that select this node but whose configuration "
                        "it cannot use, so it runs no session to them, and why.",
                        "items": obj(
                            "One BGPPeer.",
                            {"peer": string("BGPPeer name."), "reason": string("Why not.")},
                        ),
                    },
                },
            ),
            [
                column("Node", ".spec.nodeName"),
                column("Live", ".status.membership.live"),
                column("KeyOK", ".status.membership.keyOK", "boolean"),
                AGE,
            ],
        )
    ],
    "v1alpha1",
    group=IRONLB_GROUP,
    status_subresource=False,
)

ALL = {
    "ipaddresspools": ip_address_pool,
    "l2advertisements": l2_advertisement,
    "bgpadvertisements": bgp_advertisement,
    "bfdprofiles": bfd_profile,
    "communities": community,
    "servicel2statuses": service_l2_status,
    "servicebgpstatuses": service_bgp_status,
    "bgppeers": bgp_peer,
    "configurationstates": configuration_state,
    "speakerreports": speaker_report,
}

HEADER = "# Generated by dev/gen_crds.py: edit that file, then run it.\n"


def render() -> dict[str, str]:
    return {
        f"{doc['spec']['group']}_{plural}.yaml": HEADER
        + yaml.safe_dump(doc, sort_keys=False, width=100)
        for plural, doc in ALL.items()
    }


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [
            out / name
            for out in OUTS
            for name, text in files.items()
            if not (out / name).is_file() or (out / name).read_text() != text
        ]
        stale += [
            p
            for out in OUTS
            for group in (GROUP, IRONLB_GROUP)
            for p in out.glob(f"{group}_*.yaml")
            if p.name not in files
        ]
        for path in stale:
            print(f"{path.relative_to(DEPLOY.parent)} is out of date: run python dev/gen_crds.py")
        return 1 if stale else 0
    for out in OUTS:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
