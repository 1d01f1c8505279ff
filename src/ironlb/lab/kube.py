"""A real kube-apiserver and etcd for the lab and the tests, in the lab's control-plane namespace.

The binaries are built from Go modules by `dev/kube/build.sh` (cached outside the repository,
keyed by version). `ControlPlane.start()` writes a fresh PKI (a CA, the API server's serving
certificate, an admin client certificate in `system:masters`, the service-account signing key),
starts etcd and kube-apiserver as child processes inside a network namespace, waits for
`/readyz`, and writes an admin kubeconfig. RBAC authorization is on, so ironlb's RBAC manifests
are exercised for real: `service_account_kubeconfig()` mints a token through the TokenRequest
API and returns a kubeconfig that carries only that service account's rights.

In the process lab there is no kubelet and no kube-controller-manager: the lab writes
EndpointSlices itself, and namespaces are never finalised (each run gets a fresh etcd, so nothing
piles up). The real-nodes lab (`nodes`) adds kube-controller-manager and kube-scheduler beside the
API server (`start_node_controllers`) and issues each kubelet its client certificate here.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ironlb.core import pki
from ironlb.lab import netns

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "dev" / "kube" / "build.sh"
ADMIN_USER = "ironlb-lab-admin"


def binaries(build: bool = True) -> Path:
    """Directory holding kube-apiserver, kubectl, etcd and helm (IRONLB_KUBE_BIN_DIR overrides)."""
    override = os.environ.get("IRONLB_KUBE_BIN_DIR")
    if override:
        return Path(override)
    if not BUILD_SCRIPT.is_file():
        raise netns.LabError(
            f"{BUILD_SCRIPT} not found: run from an ironlb checkout or set IRONLB_KUBE_BIN_DIR"
        )
    args = [str(BUILD_SCRIPT)] + ([] if build else ["--dir"])
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        raise netns.LabError(
            f"kube-apiserver and etcd are not built ({' '.join(args)}): {proc.stderr.strip()}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def kubeconfig(
    server: str,
    ca_pem: bytes,
    user: str,
    *,
    token: str | None = None,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    namespace: str | None = None,
) -> str:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    creds: dict[str, str] = {}
    if token is not None:
        creds["token"] = token
    if cert_pem is not None and key_pem is not None:
        creds["client-certificate-data"] = b64(cert_pem)
        creds["client-key-data"] = b64(key_pem)
    context: dict[str, str] = {"cluster": "ironlb-lab", "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "ironlb-lab",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": context}],
        "current-context": user,
    }
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver running in namespace `ns`, listening on `address`."""

    ns: netns.Netns
    address: str
    workdir: Path
    service_cidrs: tuple[str, ...]
    port: int = 6443
    bin_dir: Path = field(default_factory=binaries)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _ca: pki.CertificateAuthority | None = None
    startup_seconds: float = 0.0

    @property
    def server(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"https://{host}:{self.port}"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def kubectl(self) -> Path:
        return self.bin_dir / "kubectl"

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = pki.CertificateAuthority.create("ironlb-lab-ca")
        self._ca = ca
        serving, serving_key = ca.issue(
            "kube-apiserver",
            ips=(
                self.address,
                *(str(next(ipaddress.ip_network(c).hosts())) for c in self.service_cidrs),
            ),
            dns=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server=True,
        )
        admin, admin_key = ca.issue(ADMIN_USER, organization="system:masters")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": pki.pem_cert(ca.cert),
            "ca.key": pki.pem_key(ca.key),
            "apiserver.crt": pki.pem_cert(serving),
            "apiserver.key": pki.pem_key(serving_key),
            "admin.crt": pki.pem_cert(admin),
            "admin.key": pki.pem_key(admin_key),
            "sa.key": pki.pem_key(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            path = self.pki / name
            path.write_bytes(data)
            path.chmod(0o600)
        self.admin_kubeconfig.write_text(
            kubeconfig(
                self.server,
                files["ca.crt"],
                ADMIN_USER,
                cert_pem=files["admin.crt"],
                key_pem=files["admin.key"],
            )
        )

    def start(self, timeout: float = 60.0) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self.start_etcd()
        self.start_apiserver()
        self.wait_ready(timeout)
        self.startup_seconds = time.monotonic() - started

    def start_etcd(self) -> None:
        data = self.workdir / "etcd"
        client = f"http://{self.address}:2379"
        peer = f"http://{self.address}:2380"
        self._procs["etcd"] = self.ns.spawn(
            [
                str(self.bin_dir / "etcd"),
                "--name=lab",
                f"--data-dir={data}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lab={peer}",
                "--listen-metrics-urls=",
                "--log-level=warn",
                # A lab store is thrown away with the run: durability buys nothing here.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=4294967296",
            ],
            log=self.workdir / "etcd.log",
        )

    def start_apiserver(self) -> None:
        pki = self.pki
        self._procs["kube-apiserver"] = self.ns.spawn(
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers=http://{self.address}:2379",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                # Node: kubelets of the real-nodes lab act with their own identity, as on a
                # kubeadm cluster; RBAC for everything else.
                "--authorization-mode=Node,RBAC",
                # The API server reaches kubelets (logs, exec) on the lab LAN, by address: lab
                # node names resolve nowhere.
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
                # Admission webhooks are reached through their Service's endpoints: the lab has
                # no kube-proxy to route ClusterIPs.
                "--enable-aggregator-routing=true",
                "--profiling=false",
                "--event-ttl=1h",
                # PodTemplates (used by nothing here) bypass the watch cache: a watch of them is
                # served by etcd itself, so an etcd compaction gives it a real 410 Gone.
                "--watch-cache-sizes=podtemplates#0",
                "--max-requests-inflight=1000",
                "--max-mutating-requests-inflight=500",
                "--v=1",
            ],
            log=self.workdir / "kube-apiserver.log",
        )

    def client_kubeconfig(self, name: str, user: str, organization: str | None = None) -> Path:
        """A kubeconfig with a client certificate for `user` (in group `organization`), signed
        by the lab CA: how kubelets and the node controllers authenticate."""
        if self._ca is None:
            raise netns.LabError("the control plane has no CA yet: start() it first")
        cert, key = self._ca.issue(user, organization=organization)
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(
            kubeconfig(
                self.server,
                pki.pem_cert(self._ca.cert),
                user,
                cert_pem=pki.pem_cert(cert),
                key_pem=pki.pem_key(key),
            )
        )
        path.chmod(0o600)
        return path

    def start_node_controllers(self, cluster_cidr: str, node_cidr_mask: int = 24) -> None:
        """kube-controller-manager (node IPAM, Deployments, EndpointSlices, service accounts,
        garbage collection) and kube-scheduler, beside the API server: what real nodes need."""
        pki = self.pki
        kcm = self.client_kubeconfig("kube-controller-manager", "system:kube-controller-manager")
        sched = self.client_kubeconfig("kube-scheduler", "system:kube-scheduler")
        self._procs["kube-controller-manager"] = self.ns.spawn(
            [
                str(self.bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                f"--bind-address={self.address}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--allocate-node-cidrs=true",
                f"--cluster-cidr={cluster_cidr}",
                *(
                    # Dual-stack: one mask per family (the single one is refused).
                    (
                        f"--node-cidr-mask-size-ipv4={node_cidr_mask}",
                        "--node-cidr-mask-size-ipv6=64",
                    )
                    if "," in cluster_cidr
                    else (f"--node-cidr-mask-size={node_cidr_mask}",)
                ),
                f"--service-cluster-ip-range={','.join(self.service_cidrs)}",
                # A killed lab node is NotReady within seconds, not the default 50 s.
                "--node-monitor-period=2s",
                "--node-monitor-grace-period=16s",
                "--v=1",
            ],
            log=self.workdir / "kube-controller-manager.log",
        )
        self._procs["kube-scheduler"] = self.ns.spawn(
            [
                str(self.bin_dir / "kube-scheduler"),
                f"--kubeconfig={sched}",
                f"--authentication-kubeconfig={sched}",
                f"--authorization-kubeconfig={sched}",
                f"--bind-address={self.address}",
                "--leader-elect=false",
                "--v=1",
            ],
            log=self.workdir / "kube-scheduler.log",
        )

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(self.pki / "admin.crt", self.pki / "admin.key")
        return ctx

    def healthy(self, path: str = "/readyz", timeout: float = 2.0) -> bool:
        """One health probe from the lab's control-plane namespace."""
        try:
            with (
                netns.entered(self.ns.name),
                urllib.request.urlopen(
                    self.server + path, context=self._ssl_context(), timeout=timeout
                ) as resp,
            ):
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    log = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise netns.LabError(f"{name} exited with {proc.returncode}:\n{log}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise netns.LabError(f"kube-apiserver not ready after {timeout}s (see {self.workdir})")

    def kill(self, name: str) -> None:
        """SIGKILL one component ('etcd' or 'kube-apiserver'), as a crash would."""
        proc = self._procs.pop(name)
        proc.kill()
        proc.wait(10)

    def pids(self) -> dict[str, int]:
        """The running components' process IDs, by name (for a bench's CPU accounting)."""
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    @contextlib.contextmanager
    def paused(self, name: str = "kube-apiserver") -> Iterator[None]:
        """SIGSTOP one component for the duration (connections stay open, nothing answers: an
        overloaded or hung server), SIGCONT on the way out whatever happened."""
        proc = self._procs[name]
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)

    def restart_apiserver(self, timeout: float = 60.0) -> None:
        self.kill("kube-apiserver")
        self.start_apiserver()
        self.wait_ready(timeout)

    def stop(self) -> None:
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kubectl_argv(self, *args: str, kubeconfig_path: Path | None = None) -> list[str]:
        path = kubeconfig_path or self.admin_kubeconfig
        return self.ns.argv([str(self.kubectl), f"--kubeconfig={path}", *args])

    def run_kubectl(
        self,
        *args: str,
        kubeconfig_path: Path | None = None,
        stdin: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.kubectl_argv(*args, kubeconfig_path=kubeconfig_path),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            raise netns.LabError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def write_kubeconfig(self, name: str, token: str, namespace: str) -> Path:
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(
            kubeconfig(
                self.server,
                (self.pki / "ca.crt").read_bytes(),
                name,
                token=token,
                namespace=namespace,
            )
        )
        path.chmod(0o600)
        return path

    def remove_workdir(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
