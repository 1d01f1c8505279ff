"""Speaker settings: each field is a flag of `ironlb speaker` and an IRONLB_SPEAKER_<NAME>
environment variable, checked once when the settings are built (`core.settings.validate`)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ironlb.core import announce, config, interfaces
from ironlb.core import settings as core_settings


def _node_name() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


def _namespace() -> str:
    return os.environ.get("POD_NAMESPACE", "metallb-system")


def _pod_ip() -> str | None:
    # A host-network pod's podIP is its node's primary address, the one the kubelet probes.
    return os.environ.get("POD_IP") or None


def _names(values: tuple[str, ...]) -> str | None:
    for value in values:
        problem = core_settings.dns_subdomain(value)
        if problem is not None:
            return problem
    return None


def _communities(values: tuple[str, ...]) -> str | None:
    """Each a community, or shaped like an alias (resolved against Community objects later)."""
    for value in values:
        try:
            config.parse_community(value)
        except config.CommunityFormatError:
            if not value.strip() or any(c.isspace() for c in value):
                return f"not a community or an alias name: {value!r}"
        except ValueError as e:
            return str(e)
    return None


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = core_settings.setting(
        help="Path of a kubeconfig; unset: in-cluster service account, then ~/.kube/config.",
        check=core_settings.readable_file,
    )
    node_name: str = core_settings.setting(
        factory=_node_name,
        help="This node's name (the Node object; default $NODE_NAME).",
        check=core_settings.dns_subdomain,
    )
    namespace: str = core_settings.setting(
        factory=_namespace,
        help="Namespace of the metallb.io configuration and the Secret.",
        check=core_settings.dns_label,
    )
    lb_class: str | None = core_settings.setting(
        help="Announce only Services of this spec.loadBalancerClass (default: those without).",
        check=core_settings.non_empty,
    )
    ignore_exclude_lb: bool = core_settings.setting(
        False,
        help="Announce from nodes labelled node.kubernetes.io/exclude-from-external-load-balancers"
        " (kubeadm puts it on control-plane nodes; needed on single-node clusters).",
    )
    bind_address: str | None = core_settings.setting(
        factory=_pod_ip,
        help="Address for membership, metrics and probes (default: $POD_IP, else the node's"
        " primary address, as the kubelet chooses it).",
        check=core_settings.ip_address,
    )
    metrics_port: int = core_settings.setting(
        7472, help="HTTP port of /metrics and probes.", check=core_settings.port()
    )
    membership: bool = core_settings.setting(
        True, help="Detect dead speakers directly (UDP); off: trust Node readiness only."
    )
    membership_port: int = core_settings.setting(
        7946, help="UDP port of speaker membership.", check=core_settings.port()
    )
    membership_secret: str = core_settings.setting(
        "memberlist",
        help="Secret whose 'secretkey' signs membership packets (MetalLB's; several"
        " comma-separated keys rotate: the first signs).",
        check=core_settings.dns_subdomain,
    )
    probe_interval: float = core_settings.setting(
        0.1,
        help="Seconds between membership probes (a dead node is found in ~4.5 of these).",
        check=core_settings.positive,
    )
    suspicion_timeout: float = core_settings.setting(
        0.25,
        help="Seconds a suspected node has to refute before it is declared dead.",
        check=core_settings.positive,
    )
    lifeguard: bool = core_settings.setting(
        True,
        help="Membership with Lifeguard (retried probes, confirmed suspicions, local health):"
        " far fewer false failovers on a lossy or busy network; off: plain SWIM.",
    )
    gratuitous_interval: float = core_settings.setting(
        1.1,
        help="Seconds between the gratuitous ARP/NA sent after a takeover (Linux ignores"
        " updates less than 1 s apart).",
        check=core_settings.positive,
    )
    gratuitous_duration: float = core_settings.setting(
        5.0,
        help="Seconds during which gratuitous ARP/NA are repeated after a takeover.",
        check=core_settings.non_negative,
    )
    probe_before_announce: float = core_settings.setting(
        0.5,
        help="Seconds spent checking (RFC 5227 probe / DAD) that no other host uses an"
        " address before announcing it for the first time; 0 disables the check.",
        check=core_settings.non_negative,
    )
    handover_timeout: float = core_settings.setting(
        2.0,
        help="On SIGTERM, seconds to wait for the new owners to announce before stopping.",
        check=core_settings.non_negative,
    )
    # --- PodCIDRs over BGP (native pod routing; core.announce.PodCidrAdvertisement) ---
    advertise_pod_cidrs: bool = core_settings.setting(
        False, help="Also advertise this node's PodCIDRs to its BGP peers (native routing)."
    )
    pod_cidr_peers: tuple[str, ...] = core_settings.setting(
        (),
        help="BGPPeers (names) that receive the PodCIDRs; repeat or comma-separate; default:"
        " every BGPPeer selecting the node.",
        check=_names,
    )
    pod_cidr_communities: tuple[str, ...] = core_settings.setting(
        (),
        help="Communities of the PodCIDR routes (<AS>:<value>, large:<A>:<B>:<C>, or an alias"
        " of a Community object); repeat or comma-separate.",
        check=_communities,
    )
    excluded_interfaces: tuple[str, ...] = core_settings.setting(
        interfaces.DEFAULT_EXCLUDED,
        help="Regular expression of interfaces never used for announcing; repeat the flag for"
        " several (a comma outside brackets also separates two, as in earlier versions).",
        check=core_settings.regexes,
    )

    def __post_init__(self) -> None:
        core_settings.validate(self)
        for name in ("pod_cidr_peers", "pod_cidr_communities"):
            if getattr(self, name) and not self.advertise_pod_cidrs:
                raise core_settings.SettingError(name, "needs --advertise-pod-cidrs")

    def pod_cidr_advertisement(self) -> announce.PodCidrAdvertisement | None:
        """What to advertise of this node's PodCIDRs (None: nothing)."""
        if not self.advertise_pod_cidrs:
            return None
        return announce.PodCidrAdvertisement(
            frozenset(self.pod_cidr_peers), self.pod_cidr_communities
        )
