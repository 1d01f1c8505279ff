"""`ironlb manifest cpvip`: the static Pod that runs `ironlb cpvip` on a control-plane node.

kubeadm starts every manifest in /etc/kubernetes/manifests before the API exists, so the VIP is
up as soon as the first kube-apiserver is ready (`kubeadm init --control-plane-endpoint VIP:6443`),
with no kubeconfig and no Lease. Host network; root in the container with only NET_ADMIN
(netlink: the address; multicast membership) and NET_RAW (ARP/NDP packet sockets); the HMAC key
from a hostPath file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_IMAGE = "ghcr.io/ironlb/ironlb:0.1.0"
DEFAULT_KEY_PATH = "/etc/kubernetes/ironlb-cpvip.key"
_KEY_DIR = "/etc/ironlb-cpvip"


def static_pod(
    address: str,
    *,
    interface: str | None = None,
    peers: Sequence[str] = (),
    mode: str = "arp",
    image: str = DEFAULT_IMAGE,
    key_path: str = DEFAULT_KEY_PATH,
) -> dict[str, Any]:
    args = ["cpvip", f"--address={address}", f"--key-file={_KEY_DIR}/key", f"--mode={mode}"]
    if interface:
        args.append(f"--interface={interface}")
    args += [f"--peers={p}" for p in peers]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "ironlb-cpvip",
            "namespace": "kube-system",
            "labels": {"app.kubernetes.io/name": "ironlb-cpvip"},
        },
        "spec": {
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "containers": [
                {
                    "name": "cpvip",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "args": args,
                    "securityContext": {
                        "runAsUser": 0,
                        "runAsNonRoot": False,
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 7474},
                        "periodSeconds": 10,
                    },
                    "resources": {"requests": {"cpu": "20m", "memory": "40Mi"}},
                    "volumeMounts": [
                        {"name": "key", "mountPath": f"{_KEY_DIR}/key", "readOnly": True}
                    ],
                }
            ],
            "volumes": [
                {
                    "name": "key",
                    "hostPath": {"path": key_path, "type": "File"},
                }
            ],
        },
    }
