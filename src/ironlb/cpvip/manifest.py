"""`ironlb manifest cpvip`: the static Pod that runs `ironlb cpvip` on a control-plane node.

kubeadm starts every manifest in /etc/kubernetes/manifests before the API exists, so the VIP is
up as soon as the first kube-apiserver is ready (`kubeadm init --control-plane-endpoint VIP:6443`),
with no kubeconfig and no Lease. Host network; root in the container with only NET_ADMIN
(netlink: the address; multicast membership) and NET_RAW (ARP/NDP packet sockets); the HMAC key
from a hostPath file. In bgp mode: only NET_ADMIN (the VIP on `lo`; BGP and BFD are ordinary
sockets), no membership key, the TCP MD5 password (if any) from a hostPath file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_IMAGE = "ghcr.io/ironlb/ironlb:0.1.0"
DEFAULT_KEY_PATH = "/etc/kubernetes/ironlb-cpvip.key"
_KEY_DIR = "/etc/ironlb-cpvip"
_PASSWORD = f"{_KEY_DIR}/bgp-password"
_KUBECONFIG = f"{_KEY_DIR}/kubeconfig"


def static_pod(
    address: str,
    *,
    interface: str | None = None,
    peers: Sequence[str] = (),
    mode: str = "arp",
    image: str = DEFAULT_IMAGE,
    key_path: str = DEFAULT_KEY_PATH,
    kubeconfig_path: str | None = None,
    bgp_args: Sequence[str] = (),
    bgp_password_path: str | None = None,
) -> dict[str, Any]:
    """`bgp_args`: bgp mode's flags as given (`--bgp-peers=...`), passed through; the password
    file is mounted from `bgp_password_path` on the host. `kubeconfig_path` (arp mode): a host
    file mounted for `--kubeconfig`, to discover the other control-plane Nodes."""
    bgp = mode == "bgp"
    args = ["cpvip", f"--address={address}", f"--mode={mode}"]
    mounts: list[tuple[str, str, str]] = []  # (volume, path in the container, host path)
    if bgp:
        args += bgp_args
        if bgp_password_path:
            args.append(f"--bgp-password-file={_PASSWORD}")
            mounts.append(("bgp-password", _PASSWORD, bgp_password_path))
    else:
        args.insert(2, f"--key-file={_KEY_DIR}/key")
        mounts.append(("key", f"{_KEY_DIR}/key", key_path))
        if kubeconfig_path:
            args.append(f"--kubeconfig={_KUBECONFIG}")
            mounts.append(("kubeconfig", _KUBECONFIG, kubeconfig_path))
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
                        "capabilities": {
                            "drop": ["ALL"],
                            "add": ["NET_ADMIN"] if bgp else ["NET_ADMIN", "NET_RAW"],
                        },
                    },
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": 7474},
                        "periodSeconds": 10,
                    },
                    "resources": {"requests": {"cpu": "20m", "memory": "40Mi"}},
                    "volumeMounts": [
                        {"name": name, "mountPath": path, "readOnly": True}
                        for name, path, _ in mounts
                    ],
                }
            ],
            "volumes": [
                {"name": name, "hostPath": {"path": host, "type": "File"}}
                for name, _, host in mounts
            ],
        },
    }
