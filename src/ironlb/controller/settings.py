"""Controller settings: one field per flag; each is also an IRONLB_CONTROLLER_<NAME> variable."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


def _default_identity() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None = None
    """Path of a kubeconfig; unset: in-cluster service account, then ~/.kube/config."""
    namespace: str = field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "metallb-system")
    )
    """Namespace holding the metallb.io configuration (and the Lease, Secret, states)."""
    lb_class: str | None = None
    """Serve only Services of this spec.loadBalancerClass (default: those with none)."""
    identity: str = field(default_factory=_default_identity)
    """This replica's name in the leader Lease and in Events."""
    lease_name: str = "ironlb-controller"
    """The Lease the replicas elect a leader with."""
    lease_duration: float = 15.0
    """Seconds a leader's Lease lives without renewal before another replica takes over."""
    workers: int = 16
    """Services reconciled concurrently (the writes to the API overlap; allocation is serial)."""
    listen_address: str = "0.0.0.0"
    """Address the metrics and webhook servers bind."""
    metrics_port: int = 7472
    """Plain HTTP: /metrics, /healthz, /readyz (MetalLB's monitoring port)."""
    webhook_port: int = 9443
    """HTTPS admission webhook; 0 disables it."""
    webhook_service: str = "ironlb-webhook-service"
    """Service in front of the webhook (its DNS name is in the serving certificate)."""
    webhook_configuration: str = "ironlb-webhook"
    """ValidatingWebhookConfiguration whose caBundle the controller keeps current."""
    webhook_secret: str = "ironlb-webhook-cert"
    """Secret holding the webhook CA and serving certificate (created and rotated here)."""
