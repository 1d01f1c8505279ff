"""The real MetalLB (v0.15.2) in the process lab, without a kubelet: for migration tests and
side-by-side comparisons.

What MetalLB needs that a kubelet would otherwise give it, the lab provides here:
- its CRDs as its own kustomization installs them (`config/crd/bases` of the module, plus the
  conversion webhook of bgppeers when `conversion_webhook`), read from the Go module cache the
  peer build (`dev/peers/build.sh metallb`) downloaded, never copied into this repository;
- a controller `Deployment` object (inert: the lab has no kube-controller-manager) that its
  controller reads to own the `memberlist` Secret it creates, as in a real install;
- one speaker Pod object per node, labelled `app=metallb,component=speaker`, with the node's
  address as `status.podIP` (its memberlist finds peers by listing those Pods);
- the memberlist key as a file (`METALLB_ML_SECRET_KEY_PATH`), taken from that Secret;
- processes: the controller on the control-plane host with `--webhook-mode=disabled`, each
  speaker inside its node's namespace (`ip netns exec`), all as the cluster admin.

`MetalLB.start(cluster, nodes)` runs all of it; `stop()` ends the processes (by PID) and, with
`remove_objects`, deletes the Deployment and Pod objects, which is what uninstalling MetalLB's
workloads does; its CRDs and configuration stay unless the caller removes them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, peers

MODULE = "go.universe.tf/metallb"
VERSION = "v0.15.2"
NAMESPACE = lab_cluster.CONFIG_NAMESPACE
SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
CONTROLLER_DEPLOYMENT = "controller"
MEMBERLIST_SECRET = "memberlist"
METRICS_PORT = 7472
CRD_KINDS = (
    "ipaddresspools",
    "bgppeers",
    "bfdprofiles",
    "bgpadvertisements",
    "l2advertisements",
    "communities",
    "servicel2statuses",
    "servicebgpstatuses",
)
"""MetalLB's config/crd/kustomization.yaml, in its order."""
WEBHOOK_SERVICE = {"namespace": NAMESPACE, "name": "metallb-webhook-service", "path": "/convert"}


def binaries() -> Path:
    """The directory of MetalLB's `controller` and `speaker` (LabError if not built)."""
    return peers.bin_dir("metallb", build=False)


def source_dir() -> Path:
    """MetalLB's module source, from the Go module cache (filled by the peer build)."""
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": os.environ.get("GOPROXY", "off")}
    try:
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"{MODULE}@{VERSION}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            cwd="/",
            env=env,
        )
    except FileNotFoundError:
        raise netns.LabError("MetalLB's CRDs come from its Go module: Go is required") from None
    info = json.loads(proc.stdout or "{}")
    where = info.get("Dir")
    if proc.returncode != 0 or not where:
        why = info.get("Error") or proc.stderr.strip()
        raise netns.LabError(f"{MODULE}@{VERSION} not in the Go module cache (`make peers`): {why}")
    return Path(where)


def crds(*, conversion_webhook: bool = True) -> list[dict[str, Any]]:
    """MetalLB's CRDs as its manifests install them (with the bgppeers conversion webhook
    pointing at MetalLB's webhook Service, unless `conversion_webhook` is False)."""
    bases = source_dir() / "config" / "crd" / "bases"
    docs = []
    for kind in CRD_KINDS:
        (doc,) = [
            d for d in yaml.safe_load_all((bases / f"metallb.io_{kind}.yaml").read_text()) if d
        ]
        if kind == "bgppeers":
            _drop_int32_format(doc)
        if conversion_webhook and kind == "bgppeers":
            doc["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1beta1", "v1beta2"],
                    "clientConfig": {"service": dict(WEBHOOK_SERVICE)},
                },
            }
        docs.append(doc)
    return docs


INT32_MAX = 2**31 - 1


def _drop_int32_format(crd: dict[str, Any]) -> None:
    """Drop `format: int32` from the BGPPeer CRD's `spec.myASN` and `spec.peerASN` (both
    versions), keeping their bounds 0..4294967295.

    MetalLB's Go fields are uint32, which controller-gen v0.17 renders as `format: int32` with
    the uint32 maximum. Kubernetes 1.36 accepts that CRD but then refuses every BGPPeer, whatever
    its ASN ("Maximum boundary value must be of type integer with format int32 in spec.myASN";
    a 4-octet ASN also fails "Checked value must be ..."), so MetalLB could never be configured
    for BGP. Without the format, the bounds alone are MetalLB's intent."""
    for version in crd["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        for name in ("myASN", "peerASN"):
            prop = spec.get(name)
            if prop and prop.get("format") == "int32" and prop.get("maximum", 0) > INT32_MAX:
                del prop["format"]


def install_crds(c: lab_cluster.Cluster, *, conversion_webhook: bool = True) -> None:
    """Replace whatever metallb.io CRDs exist with MetalLB's (objects are kept: same group,
    kinds and storage versions)."""
    for doc in crds(conversion_webhook=conversion_webhook):
        c.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(doc)
        )
        # Server-side apply keeps labels another manager set (ironlb's part-of label): a CRD
        # installed by MetalLB's manifests has none.
        c.kubectl("label", "crd", doc["metadata"]["name"], "app.kubernetes.io/part-of-")
    c.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{k}.metallb.io" for k in CRD_KINDS),
    )


def speaker_pod(node: str, address: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Pod object of the speaker of `node` (never run: the lab has no kubelet), and the
    status that makes memberlist find it."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"speaker-{node}",
            "namespace": NAMESPACE,
            "labels": dict(SPEAKER_LABELS),
        },
        "spec": {
            # MetalLB's ServiceAccount (created by `start`: the lab has no controller making
            # a "default" one), and no token volume: the Pod never runs.
            "serviceAccountName": "speaker",
            "automountServiceAccountToken": False,
            "nodeName": node,
            "hostNetwork": True,
            "containers": [{"name": "speaker", "image": "quay.io/metallb/speaker:" + VERSION}],
        },
    }
    status = {
        "status": {
            "phase": "Running",
            "podIP": address,
            "podIPs": [{"ip": address}],
            "hostIP": address,
        }
    }
    return pod, status


@dataclass
class MetalLB:
    """MetalLB's controller and speakers, running in a lab cluster."""

    cluster: lab_cluster.Cluster
    controller: components.Process
    speakers: dict[str, components.Process] = field(default_factory=dict)
    log_level: str = "info"
    bgp_type: str = "native"

    @classmethod
    def start(
        cls,
        c: lab_cluster.Cluster,
        nodes: Sequence[int],
        *,
        log_level: str = "info",
        bgp_type: str = "native",
    ) -> MetalLB:
        """Start the controller (which creates the memberlist Secret), then one speaker per
        node `node-<i>` (lab hosts already added and Nodes registered)."""
        _ensure_deployment(c)
        controller = _start_controller(c, log_level)
        running = cls(c, controller, log_level=log_level, bgp_type=bgp_type)
        try:
            key = _wait_secret_key(c, controller)
            keydir = _keydir(c)
            keydir.mkdir(exist_ok=True)
            (keydir / "secretkey").write_text(key)
            for i in nodes:
                running.start_speaker(i)
        except BaseException:
            running.stop()
            raise
        return running

    def restart_controller(self) -> components.Process:
        """Start the controller again (after it was killed: a restart of its Pod)."""
        self.controller = _start_controller(self.cluster, self.log_level)
        return self.controller

    def start_speaker(self, index: int) -> components.Process:
        """(Re)start the speaker of node-`index` (a node coming back after its death)."""
        c = self.cluster
        env = {**os.environ, "KUBECONFIG": str(c.control_plane.admin_kubeconfig)}
        proc = _start_speaker(c, index, binaries(), _keydir(c), env, self.log_level, self.bgp_type)
        self.speakers[f"node-{index}"] = proc
        return proc

    def processes(self) -> Iterable[components.Process]:
        yield self.controller
        yield from self.speakers.values()

    def stop(self, *, remove_objects: bool = False) -> None:
        """End every process (SIGTERM, then SIGKILL), as deleting MetalLB's workloads does; with
        `remove_objects` also their Deployment and Pod objects."""
        # All at once, as deleting the DaemonSet does (one by one, a speaker that takes its time
        # to leave memberlist would keep the others running).
        procs = [p for p in self.processes() if p.alive]
        for p in procs:
            p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop(timeout=10.0)
        if remove_objects:
            self.cluster.kubectl(
                "delete",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                "app=metallb,component=speaker",
                "--wait=false",
                check=False,
            )
            self.cluster.kubectl(
                "delete",
                "deployment",
                "-n",
                NAMESPACE,
                CONTROLLER_DEPLOYMENT,
                "--wait=false",
                check=False,
            )


def delete_controller(c: lab_cluster.Cluster) -> None:
    """Delete MetalLB's controller Deployment (its process must be stopped first): what
    `kubectl delete deployment controller` does; the speakers keep announcing."""
    c.kubectl(
        "delete",
        "deployment",
        "-n",
        NAMESPACE,
        CONTROLLER_DEPLOYMENT,
        "--wait=false",
        "--ignore-not-found",
    )


def _ensure_deployment(c: lab_cluster.Cluster) -> None:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "speaker", "namespace": NAMESPACE},
    }
    c.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(account))
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONTROLLER_DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "metallb", "component": "controller"}},
            "template": {
                "metadata": {"labels": {"app": "metallb", "component": "controller"}},
                "spec": {
                    "serviceAccountName": "speaker",
                    "automountServiceAccountToken": False,
                    "containers": [
                        {"name": "controller", "image": "quay.io/metallb/controller:" + VERSION}
                    ],
                },
            },
        },
    }
    c.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))


def _wait_secret_key(c: lab_cluster.Cluster, controller: components.Process) -> str:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        out = c.kubectl(
            "get", "secret", "-n", NAMESPACE, MEMBERLIST_SECRET, "-o", "json", check=False
        )
        if out.strip():
            data = json.loads(out).get("data") or {}
            if "secretkey" in data:
                return base64.b64decode(data["secretkey"]).decode()
        if not controller.alive:
            raise netns.LabError(f"MetalLB's controller exited:\n{controller.log_text()[-2000:]}")
        time.sleep(0.2)
    raise netns.LabError("MetalLB's controller made no memberlist Secret in 30 s")


def _start_controller(c: lab_cluster.Cluster, log_level: str) -> components.Process:
    env = {**os.environ, "KUBECONFIG": str(c.control_plane.admin_kubeconfig)}
    host = c.ctl
    log = c.lab.workdir / "metallb-controller.log"
    proc = host.ns.spawn(
        [
            str(binaries() / "controller"),
            f"--namespace={NAMESPACE}",
            f"--port={METRICS_PORT}",
            f"--ml-secret-name={MEMBERLIST_SECRET}",
            f"--deployment={CONTROLLER_DEPLOYMENT}",
            "--webhook-mode=disabled",
            "--disable-cert-rotation",
            f"--log-level={log_level}",
        ],
        log=log,
        env=env,
    )
    return components.Process(
        "metallb-controller", host.ns, proc, log, f"http://{host.ipv4}:{METRICS_PORT}"
    )


def _keydir(c: lab_cluster.Cluster) -> Path:
    return c.lab.workdir / "metallb-memberlist"


def _start_speaker(
    c: lab_cluster.Cluster,
    index: int,
    bins: Path,
    keydir: Path,
    env: dict[str, str],
    log_level: str,
    bgp_type: str,
) -> components.Process:
    node = f"node-{index}"
    host = c.lab.hosts[node]
    pod, status = speaker_pod(node, host.ipv4)
    c.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(pod))
    c.kubectl(
        "patch",
        "pod",
        "-n",
        NAMESPACE,
        pod["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    log = c.lab.workdir / f"metallb-speaker-{index}.log"
    speaker_env = {
        **env,
        "METALLB_NODE_NAME": node,
        "METALLB_POD_NAME": pod["metadata"]["name"],
        "METALLB_HOST": host.ipv4,
        "METALLB_ML_BIND_ADDR": host.ipv4,
        "METALLB_ML_LABELS": "app=metallb,component=speaker",
        "METALLB_ML_SECRET_KEY_PATH": str(keydir),
        "METALLB_BGP_TYPE": bgp_type,
    }
    proc = host.ns.spawn(
        [
            str(bins / "speaker"),
            f"--namespace={NAMESPACE}",
            f"--port={METRICS_PORT}",
            f"--log-level={log_level}",
        ],
        log=log,
        env=speaker_env,
    )
    return components.Process(
        f"metallb-speaker-{index}", host.ns, proc, log, f"http://{host.ipv4}:{METRICS_PORT}"
    )
