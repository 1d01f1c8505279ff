"""ironlb's own processes in the lab (controller, speakers), and what a kubelet, kube-proxy and
the endpoints controller would otherwise provide (Node objects, backends, EndpointSlices).

Each runs as `python -m ironlb.cli ...` inside a lab namespace, with a kubeconfig minted for its
service account (so the RBAC manifests are what it runs with), its log in the lab's workdir.
There is no kubelet or endpoints controller: the lab writes the webhook Service's endpoints
itself, pointing at the controller's address.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import netns, topology

WEBHOOK_PORT = 9443
WEBHOOK_SERVICE = "ironlb-webhook-service"


@dataclass
class Process:
    """One ironlb process in a lab namespace."""

    name: str
    ns: netns.Netns
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_url: str
    log_from: int = 0
    """Where this process's lines start in `log` (a log file is shared by every process of the
    same name in a lab: a restarted speaker, another module's controller)."""

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait (the graceful path)."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.alive:
            self.proc.kill()
        self.proc.wait(5)

    def log_text(self) -> str:
        """What this process wrote to its log."""
        with self.log.open("rb") as f:
            f.seek(self.log_from)
            return f.read().decode(errors="replace")

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """GET one of its HTTP endpoints from inside its namespace."""
        try:
            with (
                netns.entered(self.ns.name),
                urllib.request.urlopen(self.metrics_url + path, timeout=timeout) as resp,
            ):
                return int(resp.status), resp.read().decode()
        except urllib.error.HTTPError as e:
            return int(e.code), e.read().decode()
        except OSError as e:
            return 0, str(e)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise netns.LabError(f"{self.name} exited:\n{self.log_text()[-3000:]}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise netns.LabError(f"{self.name} not ready after {timeout}s:\n{self.log_text()[-3000:]}")

    def metric(self, name: str, labels: str = "") -> float | None:
        """One sample of its /metrics (first match of `name{labels...}`), or None."""
        status, text = self.get("/metrics")
        if status != 200:
            return None
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")) and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return None


def install_webhook(c: lab_cluster.Cluster, address: str, *, configuration: bool = True) -> None:
    """Point the webhook's Service at `address` (the lab's endpoints) and, with
    `configuration`, register the webhook (ValidatingWebhookConfiguration)."""
    manifests = yaml.safe_load_all((lab_cluster.DEPLOY / "webhook" / "webhook.yaml").read_text())
    wanted = [d for d in manifests if d and (configuration or d["kind"] == "Service")]
    c.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(wanted))
    ns = lab_cluster.CONFIG_NAMESPACE
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": WEBHOOK_SERVICE, "namespace": ns},
        "subsets": [
            {
                "addresses": [{"ip": address}],
                "ports": [{"name": "webhook", "port": WEBHOOK_PORT, "protocol": "TCP"}],
            }
        ],
    }
    family = "IPv6" if ":" in address else "IPv4"
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{WEBHOOK_SERVICE}-lab",
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": WEBHOOK_SERVICE,
                "endpointslice.kubernetes.io/managed-by": "lab.ironlb.io",
            },
        },
        "addressType": family,
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": "webhook", "port": WEBHOOK_PORT, "protocol": "TCP"}],
    }
    c.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all([endpoints, slice_]))


def uninstall_webhook(c: lab_cluster.Cluster) -> None:
    c.kubectl("delete", "validatingwebhookconfiguration", "ironlb-webhook", "--ignore-not-found")


def start_controller(
    c: lab_cluster.Cluster,
    *,
    name: str = "controller",
    metrics_port: int = 7472,
    webhook: bool = True,
    extra: tuple[str, ...] = (),
    wait: bool = True,
    listen_address: str | None = None,
    register_webhook: bool = True,
) -> Process:
    """Run a controller replica on the control-plane host, as service account
    ironlb-controller, listening on the host's IPv4 address (`listen_address` None) or on the
    one given ("" for the controller's default: every address). `register_webhook` False
    leaves the ValidatingWebhookConfiguration out (its Service and endpoints are installed)."""
    host = c.ctl
    kubeconfig = c.service_account_kubeconfig("ironlb-controller")
    if webhook:
        install_webhook(c, host.ipv4, configuration=register_webhook)
    listen = () if listen_address == "" else (f"--listen-address={listen_address or host.ipv4}",)
    log = c.lab.workdir / f"{name}.log"
    argv = [
        sys.executable,
        "-m",
        "ironlb.cli",
        "controller",
        f"--kubeconfig={kubeconfig}",
        f"--identity={name}",
        *listen,
        f"--metrics-port={metrics_port}",
        f"--webhook-port={WEBHOOK_PORT if webhook else 0}",
        "--log-level=debug",
        *extra,
    ]
    start = _log_size(log)
    proc = host.ns.spawn(argv, log=log)
    process = Process(name, host.ns, proc, log, f"http://{host.ipv4}:{metrics_port}", start)
    if wait:
        process.wait_ready()
    return process


def _log_size(log: Path) -> int:
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def service_status(c: lab_cluster.Cluster, namespace: str, name: str) -> list[str]:
    """The addresses in a Service's status.loadBalancer.ingress."""
    out = c.kubectl("get", "service", name, "-n", namespace, "-o", "json")
    ingress = (json.loads(out).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    return [i["ip"] for i in ingress if "ip" in i]


# --- nodes, backends, endpoints: what the lab provides instead of kubelet and kube-proxy -------


def node_manifest(
    index: int, labels: dict[str, str] | None = None, *, pod_cidrs: bool = True
) -> dict[str, object]:
    """The Node object of lab node `index`; without `pod_cidrs`, as it registers (the
    controller-manager assigns PodCIDRs later)."""
    name = f"node-{index}"
    cidrs = topology.pod_cidrs(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "ironlb.io/lab": "true",
                **(labels or {}),
            },
        },
        "spec": {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)} if pod_cidrs else {},
    }


def register_node(
    c: lab_cluster.Cluster,
    index: int,
    host: topology.Host,
    labels: dict[str, str] | None = None,
    *,
    pod_cidrs: bool = True,
) -> None:
    """Create the Node object of a lab node, Ready, with its LAN addresses (and its PodCIDRs
    unless told otherwise)."""
    manifest = node_manifest(index, labels, pod_cidrs=pod_cidrs)
    c.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(manifest))
    status = {
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": host.ipv4},
                {"type": "InternalIP", "address": host.ipv6},
                {"type": "Hostname", "address": f"node-{index}"},
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "IronlbLab",
                    "message": "lab node (no kubelet)",
                },
                {
                    "type": "NetworkUnavailable",
                    "status": "False",
                    "reason": "IronlbLab",
                    "message": "lab LAN",
                },
            ],
        }
    }
    # Not server-side apply: status.addresses is keyed by type, and a dual-stack node has two
    # InternalIPs, which SSA rejects as duplicate keys.
    c.kubectl(
        "patch",
        "node",
        f"node-{index}",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def start_backend(c: lab_cluster.Cluster, host: topology.Host) -> Process:
    """The node's workload: answers HTTP with the node's name; service addresses are
    forwarded to it as kube-proxy would (`topology.emulate_kube_proxy`)."""
    topology.emulate_kube_proxy(host)
    name = host.ns.name.removeprefix(c.lab.prefix + "-")
    log = c.lab.workdir / f"backend-{name}.log"
    proc = host.ns.spawn(
        [
            sys.executable,
            "-m",
            "ironlb.lab.backend",
            f"--name={name}",
            f"--listen={host.ipv4}",
            f"--listen={host.ipv6}",
            f"--port={topology.BACKEND_PORT}",
        ],
        log=log,
    )
    return Process(
        f"backend-{name}", host.ns, proc, log, f"http://{host.ipv4}:{topology.BACKEND_PORT}"
    )


def endpoints(
    c: lab_cluster.Cluster, namespace: str, service: str, nodes: list[str], *, ready: bool = True
) -> None:
    """The EndpointSlice of `service`: one endpoint per node named (the lab's "pods")."""
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-lab",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "lab.ironlb.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"198.19.{n.removeprefix('node-')}.10"],
                "nodeName": n,
                "conditions": {"ready": ready, "serving": ready},
            }
            for n in nodes
        ],
        "ports": [{"name": "http", "port": topology.BACKEND_PORT, "protocol": "TCP"}],
    }
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump(body))


def membership_secret(
    c: lab_cluster.Cluster, name: str = "memberlist", key: str | None = None
) -> None:
    """The Secret whose key signs speaker membership packets (created once)."""
    value = key or secrets.token_hex(32)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": lab_cluster.CONFIG_NAMESPACE},
        "data": {"secretkey": base64.b64encode(value.encode()).decode()},
    }
    c.kubectl("create", "-f", "-", stdin=yaml.safe_dump(body), check=False)


def start_speaker(
    c: lab_cluster.Cluster,
    index: int,
    *,
    extra: tuple[str, ...] = (),
    wait: bool = True,
    metrics_port: int = 7472,
    membership_port: int | None = None,
) -> Process:
    """Run the speaker of node-`index` inside its namespace, as service account ironlb-speaker.
    Other ports than the defaults let it run beside MetalLB's speaker (which holds 7472 and
    7946 on the node's address) during a takeover."""
    host = c.lab.hosts[f"node-{index}"]
    kubeconfig = c.service_account_kubeconfig("ironlb-speaker")
    log = c.lab.workdir / f"speaker-{index}.log"
    argv = [
        sys.executable,
        "-m",
        "ironlb.cli",
        "speaker",
        f"--kubeconfig={kubeconfig}",
        f"--node-name=node-{index}",
        f"--bind-address={host.ipv4}",
        "--log-level=debug",
        f"--metrics-port={metrics_port}",
        *((f"--membership-port={membership_port}",) if membership_port else ()),
        *extra,
    ]
    start = _log_size(log)
    proc = host.ns.spawn(argv, log=log)
    url = f"http://{host.ipv4}:{metrics_port}"
    process = Process(f"speaker-{index}", host.ns, proc, log, url, start)
    if wait:
        process.wait_ready()
    return process
