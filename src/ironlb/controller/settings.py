"""Controller settings: each field is a flag of `ironlb controller` and an
IRONLB_CONTROLLER_<NAME> environment variable."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ironlb.core import settings as core_settings


def _default_identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


def _default_namespace() -> str:
    return os.environ.get("POD_NAMESPACE", "metallb-system")


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = core_settings.setting(
        help="Path of a kubeconfig; unset: in-cluster service account, then ~/.kube/config."
    )
    namespace: str = core_settings.setting(
        factory=_default_namespace,
        help="Namespace of the metallb.io configuration, the Lease and the webhook Secret.",
    )
    lb_class: str | None = core_settings.setting(
        help="Serve only Services of this spec.loadBalancerClass (default: those without one)."
    )
    identity: str = core_settings.setting(
        factory=_default_identity, help="This replica's name in the leader Lease and in Events."
    )
    lease_name: str = core_settings.setting(
        "ironlb-controller", help="Lease the replicas elect a leader with."
    )
    lease_duration: float = core_settings.setting(
        15.0, help="Seconds a leader's Lease lives unrenewed before another replica takes over."
    )
    workers: int = core_settings.setting(
        16, help="Services reconciled concurrently (their API writes overlap)."
    )
    listen_address: str = core_settings.setting(
        "",
        help="Address the metrics, probe and webhook servers bind; empty: every address of both"
        " families (IPv6-only and dual-stack clusters included).",
    )
    metrics_port: int = core_settings.setting(
        7472, help="HTTP port of /metrics, /healthz and /readyz."
    )
    webhook_port: int = core_settings.setting(
        9443, help="HTTPS port of the admission webhook; 0 disables it."
    )
    webhook_service: str = core_settings.setting(
        "ironlb-webhook-service", help="Service in front of the webhook (named in its certificate)."
    )
    webhook_configuration: str = core_settings.setting(
        "ironlb-webhook", help="ValidatingWebhookConfiguration whose caBundle is kept current."
    )
    membership_secret: str = core_settings.setting(
        "memberlist",
        help="Secret with the speakers' membership key; created with a random key if missing.",
    )
    webhook_secret: str = core_settings.setting(
        "ironlb-webhook-cert", help="Secret holding the webhook's CA and serving certificate."
    )
