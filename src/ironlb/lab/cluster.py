"""A lab cluster: the LAN topology, the control plane on it, and ironlb's API objects installed.

Used by `ironlb lab up` and by the test fixtures, so that what a user tries is what CI tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ironlb.lab import kube, topology

DEPLOY = kube.REPO_ROOT / "deploy"
CONFIG_NAMESPACE = "metallb-system"


@dataclass
class Cluster:
    lab: topology.Lab
    control_plane: kube.ControlPlane

    @classmethod
    def start(
        cls, workdir: Path, prefix: str | None = None, *, keep: bool = False, install: bool = True
    ) -> Cluster:
        """Bring up a LAN with the control-plane host, start etcd + kube-apiserver, and (with
        `install`; not when Helm installs ironlb) install CRDs, namespace and RBAC. On failure
        nothing is left running."""
        bin_dir = kube.binaries()
        lab = topology.Lab.create(workdir, prefix, keep=keep)
        try:
            ctl = lab.add_control_plane_host()
        except BaseException:
            lab.destroy()
            raise
        cp = kube.ControlPlane(
            ctl.ns, ctl.ipv4, workdir / "kube", topology.SERVICE_CIDRS, bin_dir=bin_dir
        )
        cluster = cls(lab, cp)
        try:
            cp.start()
            if install:
                cluster.install()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def ctl(self) -> topology.Host:
        return self.lab.hosts["ctl"]

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.control_plane.run_kubectl(*args, stdin=stdin, check=check).stdout

    def install(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(DEPLOY / "crds"))
        self.kubectl("apply", "--server-side", "-f", str(DEPLOY / "rbac"))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=ironlb",
        )

    def service_account_kubeconfig(
        self, name: str, namespace: str = CONFIG_NAMESPACE, duration: str = "24h"
    ) -> Path:
        """A kubeconfig carrying only service account `name`'s rights (TokenRequest API)."""
        token = self.kubectl("create", "token", name, "-n", namespace, f"--duration={duration}")
        return self.control_plane.write_kubeconfig(name, token.strip(), namespace)

    def stop(self) -> None:
        try:
            self.control_plane.stop()
        finally:
            self.lab.destroy()
