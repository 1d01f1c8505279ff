"""The control-plane lab: three control-plane hosts behind one VIP held by `ironlb cpvip`.

    [cp-1] [cp-2] [cp-3]   each: an etcd member (one three-member cluster, kubeadm's stacked
        \\     |     /       topology), its own kube-apiserver (on every address, as kubeadm's,
         +--- br0 ---+      so it accepts the VIP) and `ironlb cpvip` (health over loopback)
               |
           [client]         reaches the API through the VIP

Address plan (within the lab LAN 198.18.0.0/24, 2001:db8::/64): cp-i is host 20+i, the IPv4 VIP
198.18.0.30, the IPv6 VIP 2001:db8::30. One CA signs every serving certificate (valid for every
host address, the VIPs and 127.0.0.1) and an admin client certificate.

BGP mode (`start_router`, `start_cpvip_bgp`): the VIPs are routed, outside the LAN (192.0.2.30,
2001:db8:2::30); FRR on the lab router (AS 64500) peers with every control-plane host (AS 64520)
in both families and installs the ECMP route; clients sit behind the router (the `remote`
host), as clients of a routed VIP do. The router hashes flows by ports too
(`fib_multipath_hash_policy=1`, a sysctl of its own namespace), so that one client's connections
spread over the three next hops.
"""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ironlb.bgp import bfd
from ironlb.core import pki
from ironlb.lab import kube, netns, routers, topology

VIP_V4 = str(topology.LAN_V4[30])
VIP_V6 = str(topology.LAN_V6[0x30])
BGP_VIP_V4 = "192.0.2.30"
BGP_VIP_V6 = "2001:db8:2::30"
ROUTER_AS, CONTROL_PLANE_AS = 64500, 64520
FIRST_HOST = 20
KEY = b"ironlb-lab-cpvip-membership-key-0001"


@dataclass
class Member:
    index: int
    host: topology.Host
    workdir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"cp-{self.index}"

    def holds(self, vip: str, dev: str | None = None) -> bool:
        out = self.host.ns.ip("-o", "addr", "show", "dev", dev or self.host.dev, check=False)
        return f" {vip}/" in out

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def stop(self, name: str, timeout: float = 10.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode


@dataclass
class ControlPlanes:
    """Three control-plane hosts on `lab`'s LAN; build with `create`, end with `stop`."""

    lab: topology.Lab
    workdir: Path
    vip: str = VIP_V4
    bin_dir: Path = field(default_factory=kube.binaries)
    members: list[Member] = field(default_factory=list)
    client: topology.Host | None = None
    dual_stack: bool = False
    """The apiservers listen on both families (always with an IPv6 VIP)."""

    @classmethod
    def create(cls, lab: topology.Lab, workdir: Path, vip: str = VIP_V4) -> ControlPlanes:
        cp = cls(lab, workdir, vip, dual_stack=":" in vip)
        workdir.mkdir(parents=True, exist_ok=True)
        for i in (1, 2, 3):
            host = lab.attach(f"cp-{i}", FIRST_HOST + i, port=f"cp{i}")
            cp.members.append(Member(i, host, workdir / f"cp-{i}"))
        cp.client = lab.add_client()
        cp._write_pki()
        (workdir / "key").write_bytes(KEY + b"\n")
        (workdir / "key").chmod(0o600)
        return cp

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    def address(self, m: Member) -> str:
        return m.host.ipv6 if ":" in self.vip else m.host.ipv4

    def _write_pki(self) -> None:
        self.pki.mkdir(parents=True, exist_ok=True)
        ca = pki.CertificateAuthority.create("ironlb-lab-cpvip-ca")
        ips = (
            "127.0.0.1",
            VIP_V4,
            VIP_V6,
            BGP_VIP_V4,
            BGP_VIP_V6,
            *(a for m in self.members for a in (m.host.ipv4, m.host.ipv6)),
            *(str(next(ipaddress.ip_network(c).hosts())) for c in topology.SERVICE_CIDRS),
        )
        serving, serving_key = ca.issue("kube-apiserver", ips=ips, dns=("kubernetes",), server=True)
        admin, admin_key = ca.issue(kube.ADMIN_USER, organization="system:masters")
        sa_key = ec.generate_private_key(ec.SECP256R1())
        files = {
            "ca.crt": pki.pem_cert(ca.cert),
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
            (self.pki / name).write_bytes(data)
            (self.pki / name).chmod(0o600)
        host = f"[{self.vip}]" if ":" in self.vip else self.vip
        (self.workdir / "vip.kubeconfig").write_text(
            kube.kubeconfig(
                f"https://{host}:6443",
                files["ca.crt"],
                kube.ADMIN_USER,
                cert_pem=files["admin.crt"],
                key_pem=files["admin.key"],
            )
        )

    # --- components -----------------------------------------------------------------------------

    def start_etcd(self, m: Member) -> None:
        m.workdir.mkdir(parents=True, exist_ok=True)
        ip = m.host.ipv4
        cluster = ",".join(f"{o.name}=http://{o.host.ipv4}:2380" for o in self.members)
        m.procs["etcd"] = m.host.ns.spawn(
            [
                str(self.bin_dir / "etcd"),
                f"--name={m.name}",
                f"--data-dir={m.workdir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:2379,http://{ip}:2379",
                f"--advertise-client-urls=http://{ip}:2379",
                f"--listen-peer-urls=http://{ip}:2380",
                f"--initial-advertise-peer-urls=http://{ip}:2380",
                f"--initial-cluster={cluster}",
                "--initial-cluster-state=new",
                "--initial-cluster-token=ironlb-lab-cpvip",
                "--listen-metrics-urls=",
                "--log-level=warn",
                "--unsafe-no-fsync",
                "--heartbeat-interval=100",
                "--election-timeout=1000",
            ],
            log=m.workdir / "etcd.log",
        )

    def start_apiserver(self, m: Member) -> None:
        p = self.pki
        m.procs["kube-apiserver"] = m.host.ns.spawn(
            [
                str(self.bin_dir / "kube-apiserver"),
                "--etcd-servers=http://127.0.0.1:2379",
                "--bind-address=0.0.0.0" if not self.dual_stack else "--bind-address=::",
                # IPv4 always: the family of the primary service CIDR; "::" accepts both.
                f"--advertise-address={m.host.ipv4}",
                "--secure-port=6443",
                f"--cert-dir={m.workdir}",
                f"--tls-cert-file={p / 'apiserver.crt'}",
                f"--tls-private-key-file={p / 'apiserver.key'}",
                f"--client-ca-file={p / 'ca.crt'}",
                f"--service-account-key-file={p / 'sa.pub'}",
                f"--service-account-signing-key-file={p / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={topology.SERVICE_CIDRS[0]}",
                "--profiling=false",
                # Quick to drain on SIGTERM and no long-lived watch caches: a lab of three.
                "--shutdown-delay-duration=0s",
                "--watch-cache=false",
                "--v=0",
            ],
            log=m.workdir / "kube-apiserver.log",
        )

    def start_cpvip(self, m: Member, *extra: str, static_peers: bool = True) -> None:
        """`static_peers` False: no --peers (give --kubeconfig to discover them)."""
        peers = [self.address(o) for o in self.members if o is not m and static_peers]
        m.procs["cpvip"] = m.host.ns.spawn(
            [
                sys.executable,
                "-m",
                "ironlb.cli",
                "cpvip",
                f"--address={self.vip}",
                f"--key-file={self.workdir / 'key'}",
                *(f"--peers={p}" for p in peers),
                "--metrics-port=0",
                "--log-level=debug",
                *extra,
            ],
            log=m.workdir / "cpvip.log",
        )

    def start_router(self, workdir: Path, *, bfd_v6: bool = False) -> routers.Frr:
        """BGP mode: the lab router (added to the lab) running FRR, peering with every member in
        both families; clients move behind it (the `remote` host). `bfd_v6`: the IPv6 sessions
        run BFD (default profile: 300 ms x 3), so that one lab covers both."""
        router_host = self.lab.add_router()
        for family in ("ipv4", "ipv6"):
            router_host.ns.sysctl(f"net.{family}.fib_multipath_hash_policy", "1")
        self.client = self.lab.hosts["remote"]
        self.dual_stack = True
        neighbors = tuple(
            routers.Neighbor(address, CONTROL_PLANE_AS, bfd_profile=profile)
            for m in self.members
            for address, profile in (
                (m.host.ipv4, ""),
                (m.host.ipv6, "cpvip" if bfd_v6 else ""),
            )
        )
        profiles = {"cpvip": bfd.Profile()} if bfd_v6 else {}
        frr = routers.Frr(router_host, workdir)
        frr.start(routers.RouterConfig(ROUTER_AS, neighbors, bfd_profiles=profiles))
        return frr

    def start_cpvip_bgp(self, m: Member, vip: str, *extra: str) -> None:
        """`ironlb cpvip --mode bgp` for `vip` (one process per VIP: `cpvip` for IPv4,
        `cpvip6` for IPv6), peering with the lab router."""
        v6 = ":" in vip
        router = topology.lan_addresses(topology.HOST_ROUTER)[1 if v6 else 0]
        m.procs["cpvip6" if v6 else "cpvip"] = m.host.ns.spawn(
            [
                sys.executable,
                "-m",
                "ironlb.cli",
                "cpvip",
                "--mode=bgp",
                f"--address={vip}",
                f"--bgp-peers={router}",
                f"--bgp-peer-asn={ROUTER_AS}",
                f"--bgp-local-asn={CONTROL_PLANE_AS}",
                "--bgp-hold-time=3",
                "--metrics-port=0",
                "--log-level=debug",
                *extra,
            ],
            log=m.workdir / ("cpvip6.log" if v6 else "cpvip.log"),
        )

    def start(self, timeout: float = 120.0) -> None:
        for m in self.members:
            self.start_etcd(m)
        for m in self.members:
            self.start_apiserver(m)
        deadline = time.monotonic() + timeout
        for m in self.members:
            self.wait_healthy(m, deadline - time.monotonic())

    # --- probes ---------------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki / "ca.crt"))

    def healthy(self, m: Member, timeout: float = 1.0) -> bool:
        try:
            with (
                netns.entered(m.host.ns.name),
                urllib.request.urlopen(
                    "https://127.0.0.1:6443/readyz", context=self._tls(), timeout=timeout
                ) as resp,
            ):
                return bool(resp.status == 200)
        except OSError:
            return False

    def wait_healthy(self, m: Member, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            for name, proc in m.procs.items():
                if proc.poll() is not None:
                    log = (m.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise netns.LabError(f"{m.name} {name} exited with {proc.returncode}:\n{log}")
            if self.healthy(m):
                return
            time.sleep(0.2)
        raise netns.LabError(f"{m.name} kube-apiserver not ready after {timeout:.0f}s")

    def holders(self) -> list[Member]:
        return [m for m in self.members if m.holds(self.vip)]

    def vip_url(self, path: str = "/readyz") -> str:
        host = f"[{self.vip}]" if ":" in self.vip else self.vip
        return f"https://{host}:6443{path}"

    @contextlib.contextmanager
    def paused(self, m: Member, name: str = "kube-apiserver") -> Iterator[None]:
        m.signal(name, signal.SIGSTOP)
        try:
            yield
        finally:
            m.signal(name, signal.SIGCONT)

    def stop(self) -> None:
        for m in self.members:
            for name in ("cpvip", "cpvip6", "kube-apiserver", "etcd"):
                m.stop(name)
