"""kube-vip (v1.2.2) holding the control-plane VIP of the control-plane lab (`lab.cpvip`), as its
users run it, for side-by-side comparisons with `ironlb cpvip`.

What `kube-vip manifest pod --controlplane --arp --leaderElection` gives a static Pod, the lab
gives a process: the same environment (`vip_arp`, `cp_enable`, `vip_leaderelection`, the Lease
`kube-system/plndr-cp-lock` and its timings, `address`, `vip_interface`, `vip_subnet=32`), with
`vip_nodename` set to the node's name (the Pod gets it from `spec.nodeName`; every lab process
shares one hostname, which kube-vip would otherwise use as its leader identity). Its kubeconfig
points at the node's own kube-apiserver over loopback, as kubeadm's admin.conf / super-admin.conf
does inside kube-vip's Pod (whose host alias maps `kubernetes` to 127.0.0.1), and carries the
lab's admin (system:masters) certificate, so RBAC is not in the way. Each kube-vip runs with
`ip netns exec` in its node's namespace (which remounts /sys for it) and is ended by its PID.

kube-vip exits when it loses the Lease (its static Pod is then restarted by the kubelet); the
lab has no kubelet, so `KubeVip.ensure_running` is what restarts it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ironlb.lab import cpvip as lab_cpvip
from ironlb.lab import kube, netns, peers

VERSION = "v1.2.2"
PROC = "kube-vip"
LEASE_NAMESPACE = "kube-system"
LEASE_NAME = "plndr-cp-lock"


def binary() -> Path:
    """kube-vip's binary (LabError if `make peers` has not built it)."""
    return peers.bin_dir("kube-vip", build=False) / "kube-vip"


@dataclass(frozen=True, slots=True)
class Timings:
    """kube-vip's Lease timings, in whole seconds (its env takes integers)."""

    lease_duration: int
    renew_deadline: int
    retry_period: int

    def __str__(self) -> str:
        return f"{self.lease_duration}/{self.renew_deadline}/{self.retry_period}"


DEFAULTS = Timings(15, 10, 2)
"""What `kube-vip manifest pod` writes."""
RECOMMENDED = Timings(5, 3, 1)
"""The shorter timings commonly recommended for a faster control-plane failover."""


@dataclass
class KubeVip:
    """kube-vip on every member of `cp`; `start` it, always `stop` it."""

    cp: lab_cpvip.ControlPlanes
    timings: Timings = DEFAULTS

    def kubeconfig(self, m: lab_cpvip.Member) -> Path:
        """The node's kubeconfig: its own kube-apiserver over loopback, as the cluster admin."""
        path = m.workdir / "kube-vip.kubeconfig"
        if not path.exists():
            pki = self.cp.pki
            m.workdir.mkdir(parents=True, exist_ok=True)
            path.write_text(
                kube.kubeconfig(
                    "https://127.0.0.1:6443",
                    (pki / "ca.crt").read_bytes(),
                    kube.ADMIN_USER,
                    cert_pem=(pki / "admin.crt").read_bytes(),
                    key_pem=(pki / "admin.key").read_bytes(),
                )
            )
            path.chmod(0o600)
        return path

    def environment(self, m: lab_cpvip.Member) -> dict[str, str]:
        """`kube-vip manifest pod`'s env for control-plane ARP mode with leader election."""
        t = self.timings
        return {
            "vip_arp": "true",
            "port": "6443",
            "vip_nodename": m.name,
            "vip_interface": m.host.dev,
            "vip_subnet": "128" if ":" in self.cp.vip else "32",
            "dns_mode": "first",
            "dhcp_mode": "ipv6" if ":" in self.cp.vip else "ipv4",
            "cp_enable": "true",
            "cp_namespace": LEASE_NAMESPACE,
            "vip_leaderelection": "true",
            "vip_leasename": LEASE_NAME,
            "vip_leaseduration": str(t.lease_duration),
            "vip_renewdeadline": str(t.renew_deadline),
            "vip_retryperiod": str(t.retry_period),
            "address": self.cp.vip,
            "prometheus_server": ":2112",
            "k8s_config_file": str(self.kubeconfig(m)),
            # Only what a container would have: no proxy settings of the host leak in.
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        }

    def start_on(self, m: lab_cpvip.Member) -> None:
        m.procs[PROC] = m.host.ns.spawn(
            [str(binary()), "manager"],
            log=m.workdir / "kube-vip.log",
            env=self.environment(m),
        )

    def start(self) -> None:
        binary()  # fail early, with the hint to build it
        for m in self.cp.members:
            self.start_on(m)

    def running(self, m: lab_cpvip.Member) -> bool:
        proc = m.procs.get(PROC)
        return proc is not None and proc.poll() is None

    def ensure_running(self, m: lab_cpvip.Member) -> bool:
        """Restart `m`'s kube-vip if it exited, as the kubelet restarts its static Pod (at once:
        the lab does not wait out the kubelet's crash-loop back-off). True if it restarted it."""
        if self.running(m):
            return False
        proc = m.procs.pop(PROC, None)
        if proc is not None:
            proc.wait(10)
        self.start_on(m)
        return True

    def restarts(self, m: lab_cpvip.Member) -> int:
        """How many times `m`'s kube-vip said it lost the Lease (and so exited), from its log."""
        log = m.workdir / "kube-vip.log"
        if not log.exists():
            return 0
        return log.read_text(errors="replace").count("lost leadership, restarting kube-vip")

    def stop(self) -> None:
        """SIGTERM every kube-vip (it releases the Lease and removes the VIP), wait, SIGKILL if
        need be; then remove any VIP left behind and the Lease, so the next system (or timing)
        starts from a clean LAN. (Now and then one does not exit on SIGTERM: waited 15 s in one
        quick bench run of four, so the wait is short.)"""
        for m in self.cp.members:
            proc = m.procs.get(PROC)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for m in self.cp.members:
            m.stop(PROC, timeout=3.0)
        remove_leftover_vip(self.cp)
        self.delete_lease()

    def delete_lease(self) -> None:
        """Delete the Lease through any healthy member's apiserver (best effort)."""
        for m in self.cp.members:
            if not self.cp.healthy(m, timeout=0.5):
                continue
            argv = m.host.ns.argv(
                [
                    str(self.cp.bin_dir / "kubectl"),
                    f"--kubeconfig={self.kubeconfig(m)}",
                    "-n",
                    LEASE_NAMESPACE,
                    "delete",
                    "lease",
                    LEASE_NAME,
                    "--ignore-not-found",
                    "--wait=false",
                ]
            )
            try:
                done = subprocess.run(argv, capture_output=True, timeout=20, check=False)
            except subprocess.TimeoutExpired:
                continue
            if done.returncode == 0:
                return


def remove_leftover_vip(cp: lab_cpvip.ControlPlanes) -> None:
    """Delete the VIP from every member's interface, whatever its prefix length (ironlb adds it
    with the subnet's, kube-vip with /32 or /128): a killed holder leaves it behind."""
    for m in cp.members:
        out = m.host.ns.ip("-o", "addr", "show", "dev", m.host.dev, check=False)
        for line in out.splitlines():
            fields = line.split()
            for i, word in enumerate(fields[:-1]):
                if word in ("inet", "inet6") and fields[i + 1].split("/")[0] == cp.vip:
                    m.host.ns.ip("addr", "del", fields[i + 1], "dev", m.host.dev, check=False)


def wait_for_holder(cp: lab_cpvip.ControlPlanes, within: float) -> lab_cpvip.Member:
    """The one member holding the VIP, once exactly one does (LabError after `within` s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        holders = cp.holders()
        if len(holders) == 1:
            return holders[0]
        time.sleep(0.1)
    raise netns.LabError(
        f"kube-vip: not exactly one VIP holder within {within:.0f}s: {[m.name for m in holders]}"
    )
