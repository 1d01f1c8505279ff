"""Real lab nodes: containerd + runc + bridge CNI + kubelet + kube-proxy, one set per node.

Each node is a network namespace on the lab LAN (`topology`) plus, inside it, a PID namespace
and a mount namespace of its own (`unshare`), whose init is `<workdir>/init.sh`. That mount
namespace is private (nothing propagates to the host) and gets: this network namespace's sysfs,
the machine's cgroup hierarchies mounted again, a private `/run`, its own `/var/lib/{kubelet,
containerd,cni}` and `/var/log` (bind mounts of directories in the node's workdir), a lab-only
`/etc/resolv.conf`, and read-only files over the `/proc/sys` entries the kubelet would otherwise
rewrite for the whole machine (`KERNEL_TUNABLES`, with `protectKernelDefaults: true` so that a
missing one makes the kubelet fail instead of writing). kube-proxy's conntrack settings are all 0:
it leaves the host's conntrack sysctls alone.

Invariants:
- Killing the node's init (or every process of its network namespace, as `netns.destroy` does)
  kills every process of the node, pods included (the kernel empties a PID namespace whose init
  dies), and with them its mounts. Its cgroups (`/<prefix>-node-<i>` in every hierarchy, the
  kubelet's cgroupRoot) are removed by `cgroups.remove`.
- Nothing is pulled: images come from OCI archives imported before the kubelet starts, pods use
  `imagePullPolicy: Never`, and the node's resolver points into the lab.
- Pod networks are routed between nodes, the control-plane host and the router by plain routes
  (host-gw style), from the PodCIDRs kube-controller-manager allocates in `CLUSTER_CIDR` (IPv4
  and IPv6 ones with `DUAL_STACK_CLUSTER_CIDR`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ironlb.lab import cgroups, images, kube, netns, topology
from ironlb.lab import cluster as lab_cluster

# Pods: 198.19.0.0/17 of the benchmarking range, a /24 per node (ClusterIPs use the upper half).
CLUSTER_CIDR = "198.19.0.0/17"
# Dual-stack pods (`RealCluster.start(cluster_cidr=DUAL_STACK_CLUSTER_CIDR)`): a /64 per node too.
DUAL_STACK_CLUSTER_CIDR = f"{CLUSTER_CIDR},2001:db8:10::/56"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_BIN_DIR = "/usr/lib/cni"
# The kubelet's setupKernelTunables (pkg/kubelet/cm/container_manager_linux.go): the values it
# wants and writes, machine-wide, when they differ. Each node sees these instead.
KERNEL_TUNABLES = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


@dataclass
class Node:
    """One real node. `start()` launches it; `stop()` / `kill()` end it."""

    index: int
    host: topology.Host
    workdir: Path
    bin_dir: Path
    cgroup_root: str
    proc: subprocess.Popen[bytes] | None = None
    pod_cidr: str | None = None
    """The first of `pod_cidrs` (the IPv4 one in the lab)."""
    pod_cidrs: tuple[str, ...] = ()
    cluster_cidr: str = CLUSTER_CIDR
    started_at: float = 0.0
    _images: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def ns(self) -> netns.Netns:
        return self.host.ns

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "net.d"

    def log(self, component: str) -> Path:
        return self.workdir / "log" / f"{component}.log"

    # --- configuration ---------------------------------------------------------------------

    def write_config(
        self, cp: kube.ControlPlane, sandbox_image: str, archives: Sequence[Path]
    ) -> None:
        w = self.workdir
        for d in ("kubelet", "containerd", "cni", "log", "net.d", "sysctl", "volume-plugins"):
            (w / d).mkdir(parents=True, exist_ok=True)
        self._images = list(archives)
        for key, value in KERNEL_TUNABLES.items():
            (w / "sysctl" / key.replace("/", ".")).write_text(value + "\n")
        # DNS stays in the lab: the control-plane host answers nothing, so lookups fail fast.
        (w / "resolv.conf").write_text(
            f"nameserver {topology.lan_addresses(topology.HOST_CTL)[0]}\n"
        )
        (w / "containerd.toml").write_text(self._containerd_toml(sandbox_image))
        kubelet_kc = cp.client_kubeconfig(
            f"kubelet-{self.name}", f"system:node:{self.name}", "system:nodes"
        )
        proxy_kc = cp.client_kubeconfig(f"kube-proxy-{self.name}", "system:kube-proxy")
        (w / "kubelet.yaml").write_text(yaml.safe_dump(self._kubelet_config(cp)))
        (w / "kube-proxy.yaml").write_text(yaml.safe_dump(self._kube_proxy_config(proxy_kc)))
        (w / "init.sh").write_text(self._init_script(kubelet_kc))

    def _containerd_toml(self, sandbox_image: str) -> str:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        return f"""version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# No /opt/containerd on the host; no snapshotters this machine cannot use.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  # The lab has no CAP_SYS_RESOURCE: never ask for an oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{self.cni_conf_dir}"
"""

    def _kubelet_config(self, cp: kube.ControlPlane) -> dict[str, object]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            # This machine mounts cgroup v1 controllers (with an empty v2 tree beside them).
            "failCgroupV1": False,
            "failSwapOn": False,
            # Never write machine-wide sysctls: fail instead (the node sees KERNEL_TUNABLES).
            "protectKernelDefaults": True,
            "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
            "address": self.host.ipv4,
            "healthzBindAddress": "127.0.0.1",
            "readOnlyPort": 0,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(cp.pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "resolvConf": str(self.workdir / "resolv.conf"),
            "clusterDomain": "cluster.local",
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            # The lab shares one disk and one memory: never evict, never collect images (they
            # cannot be pulled back).
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            # Node status and pod status promptly: the tests wait on them.
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
            "maxPods": 30,
            "serializeImagePulls": False,
            "logging": {"verbosity": 1},
        }

    def _kube_proxy_config(self, kubeconfig: Path) -> dict[str, object]:
        return {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "nftables",
            "clusterCIDR": self.cluster_cidr,
            # 0 everywhere: kube-proxy leaves the conntrack sysctls (machine-wide) alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
                "udpTimeout": "0s",
                "udpStreamTimeout": "0s",
            },
            "metricsBindAddress": "127.0.0.1:10249",
            "healthzBindAddress": f"{self.host.ipv4}:10256",
            "logging": {"verbosity": 1},
        }

    def _init_script(self, kubelet_kubeconfig: Path) -> str:
        w = self.workdir
        q = shlex.quote
        binds = "\n".join(
            f"mount --bind {q(str(w / 'sysctl' / k.replace('/', '.')))} /proc/sys/{k}"
            f" && mount -o remount,bind,ro /proc/sys/{k}"
            for k in KERNEL_TUNABLES
        )
        imports = "\n".join(
            f"ctr --address {CONTAINERD_SOCKET} -n k8s.io images import {q(str(a))} >/dev/null"
            for a in self._images
        )
        node_ips = f"{self.host.ipv4},{self.host.ipv6}"
        return f"""#!/bin/bash
# PID 1 of lab node {self.name}: its own mount namespace (private), PID namespace and the
# network namespace {self.ns.name}. Generated by ironlb.lab.nodes.
set -euo pipefail
exec >>{q(str(self.log("init")))} 2>&1
# This network namespace's devices in /sys; the machine's cgroup hierarchies again below it.
mount -t sysfs sysfs /sys
{chr(10).join(cgroups.mount_commands())}
# The kubelet's cgroupRoot, in every hierarchy (it refuses to start without it); a new v1
# cpuset starts with no CPUs and no memory nodes: give it its parent's.
for h in /sys/fs/cgroup/*/; do mkdir -p "$h"{q(self.cgroup_root.lstrip("/"))}; done
cs=/sys/fs/cgroup/cpuset
if [ -e $cs/cpuset.cpus ]; then
  cat $cs/cpuset.cpus > $cs/{q(self.cgroup_root.lstrip("/"))}/cpuset.cpus
  cat $cs/cpuset.mems > $cs/{q(self.cgroup_root.lstrip("/"))}/cpuset.mems
fi
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/containerd
mount -t tmpfs -o mode=755 tmpfs /var/lib
for d in kubelet containerd cni; do
  mkdir -p /var/lib/$d && mount --bind {q(str(w))}/$d /var/lib/$d
done
mount --bind {q(str(w / "log"))} /var/log
mkdir -p /var/log/pods /var/log/containers
mount --bind {q(str(w / "resolv.conf"))} /etc/resolv.conf
{binds}
containerd --config {q(str(w / "containerd.toml"))} >>/var/log/containerd.log 2>&1 &
for _ in $(seq 300); do [ -S {CONTAINERD_SOCKET} ] && break; sleep 0.05; done
{imports}
echo "images imported"
{q(str(self.bin_dir / "kubelet"))} --config={q(str(w / "kubelet.yaml"))} \\
  --kubeconfig={q(str(kubelet_kubeconfig))} --hostname-override={self.name} \\
  --node-ip={node_ips} --node-labels=ironlb.io/lab=true >>/var/log/kubelet.log 2>&1 &
{q(str(self.bin_dir / "kube-proxy"))} --config={q(str(w / "kube-proxy.yaml"))} \\
  >>/var/log/kube-proxy.log 2>&1 &
wait
"""

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.started_at = time.monotonic()
        with open(self.log("unshare"), "ab") as err:
            self.proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.ns.name}",
                    "--",
                    "unshare",
                    "--mount",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--propagation",
                    "private",
                    "--mount-proc",
                    "bash",
                    str(self.workdir / "init.sh"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def init_pid(self) -> int:
        """Host PID of the node's init (PID 1 of its PID namespace)."""
        if self.proc is None:
            raise netns.LabError(f"{self.name} is not running")
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                return int(pids[0])
        raise netns.LabError(f"{self.name}: its init is gone")

    def enter_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the node: its mount, network and PID namespaces."""
        return ["nsenter", "-t", str(self.init_pid()), "-m", "-n", "-p", "--", *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 30.0) -> str:
        return netns.run(self.enter_argv(argv), check=check, timeout=timeout)

    def failure(self) -> str | None:
        """Why the node's init exited, or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = (
            self.log("init").read_text(errors="replace")[-2000:]
            if self.log("init").exists()
            else ""
        )
        return f"{self.name}: init exited with {self.proc.returncode}:\n{tail}"

    def kill(self) -> None:
        """The node dies: its LAN link down and SIGKILL to every process (pods included, with
        its PID namespace's init). No SIGTERM first: a speaker would hand its addresses over,
        which is a graceful stop, not a death."""
        self.ns.ip("link", "set", self.host.dev, "down", check=False)
        for pid in netns.pids_in(self.ns.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to the node's daemons, then SIGKILL to whatever is left."""
        if self.proc is not None and self.proc.poll() is None:
            netns.kill_all_in(self.ns.name, grace=5.0)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def cni_config(self, pod_cidr: str, *more: str) -> None:
        """The node's pod network: a bridge with the node as gateway, addresses from its
        PodCIDRs (one per family). containerd picks the file up when it appears."""
        self.pod_cidr = pod_cidr
        self.pod_cidrs = (pod_cidr, *more)
        ranges = [[{"subnet": cidr}] for cidr in self.pod_cidrs]
        routes = [{"dst": "::/0" if ":" in cidr else "0.0.0.0/0"} for cidr in self.pod_cidrs]
        conf = {
            "cniVersion": "1.0.0",
            "name": "lab",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": ranges,
                        "routes": routes,
                    },
                },
            ],
        }
        tmp = self.cni_conf_dir / "10-lab.conflist.tmp"
        tmp.write_text(json.dumps(conf, indent=2))
        tmp.rename(self.cni_conf_dir / "10-lab.conflist")


CHART = kube.REPO_ROOT / "deploy" / "helm" / "ironlb"


@dataclass
class RealCluster:
    """The lab control plane with kube-controller-manager and kube-scheduler, and real nodes
    node-1..node-N on its LAN. Build with `start()`, always end with `stop()`."""

    cluster: lab_cluster.Cluster
    images: dict[str, str]
    nodes: dict[int, Node] = field(default_factory=dict)
    ready_seconds: float = 0.0

    @classmethod
    def start(
        cls,
        workdir: Path,
        prefix: str | None = None,
        *,
        node_count: int = 3,
        keep: bool = False,
        timeout: float = 180.0,
        cluster_cidr: str = CLUSTER_CIDR,
    ) -> RealCluster:
        """Bring the cluster up until every node is Ready. On failure nothing is left running.
        `cluster_cidr`: the pods' networks; "v4,v6" (`DUAL_STACK_CLUSTER_CIDR`) gives every
        node an IPv4 and an IPv6 PodCIDR and pods an address of each."""
        started = time.monotonic()
        archives = {w: images.archive(w) for w in ("pause", "ironlb")}
        refs = {w: images.reference(p, w) for w, p in archives.items()}
        c = lab_cluster.Cluster.start(workdir, prefix, keep=keep, install=False)
        rc = cls(c, refs)
        try:
            cp = c.control_plane
            cp.start_node_controllers(cluster_cidr)
            for i in range(1, node_count + 1):
                host = c.lab.add_node(i)
                # Pods are routed through the node (bridge CNI, node as their gateway).
                host.ns.sysctl("net.ipv4.ip_forward", "1")
                if "," in cluster_cidr:
                    host.ns.sysctl("net.ipv6.conf.all.forwarding", "1")
                node = Node(
                    i,
                    host,
                    workdir / "nodes" / f"node-{i}",
                    cp.bin_dir,
                    f"/{c.lab.prefix}-node-{i}",
                    cluster_cidr=cluster_cidr,
                )
                node.write_config(cp, refs["pause"], list(archives.values()))
                node.start()
                rc.nodes[i] = node
            rc._wire_pod_networks(started + timeout)
            rc.route_pod_networks(c.ctl)
            rc.wait_ready(started + timeout)
        except BaseException:
            rc.stop()
            raise
        rc.ready_seconds = time.monotonic() - started
        return rc

    @property
    def control_plane(self) -> kube.ControlPlane:
        return self.cluster.control_plane

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return self.cluster.kubectl(*args, stdin=stdin, check=check)

    def _check_alive(self) -> None:
        for node in self.nodes.values():
            why = node.failure()
            if why:
                raise netns.LabError(why)

    def _nodes_json(self) -> list[dict[str, Any]]:
        out = self.kubectl("get", "nodes", "-o", "json", check=False)
        try:
            items: list[dict[str, Any]] = json.loads(out)["items"]
        except (ValueError, KeyError):
            return []
        return items

    def _wire_pod_networks(self, deadline: float) -> None:
        """Wait for each node's PodCIDR (kube-controller-manager allocates it once the kubelet
        has registered the Node), then give the node its CNI configuration and every other
        node a route to it."""
        pending = dict(self.nodes)
        while pending:
            self._check_alive()
            for item in self._nodes_json():
                name = (item.get("metadata") or {}).get("name")
                spec = item.get("spec") or {}
                cidrs = spec.get("podCIDRs") or [spec.get("podCIDR")]
                for i, node in list(pending.items()):
                    if node.name == name and all(isinstance(c, str) for c in cidrs):
                        node.cni_config(*cidrs)
                        del pending[i]
            if not pending:
                break
            if time.monotonic() > deadline:
                names = ", ".join(n.name for n in pending.values())
                raise netns.LabError(f"no PodCIDR for {names} in time (see {self.workdir})")
            time.sleep(0.2)
        for node in self.nodes.values():
            self.route_pod_networks(node.host, exclude=node)

    def route_pod_networks(self, host: topology.Host, exclude: Node | None = None) -> None:
        """Routes from `host` to every node's pod network, through that node."""
        for node in self.nodes.values():
            if node is exclude:
                continue
            for cidr in node.pod_cidrs:
                if ":" in cidr:
                    host.ns.ip("-6", "route", "replace", cidr, "via", node.host.ipv6)
                else:
                    host.ns.ip("route", "replace", cidr, "via", node.host.ipv4)

    @property
    def workdir(self) -> Path:
        return self.cluster.lab.workdir

    def wait_ready(self, deadline: float) -> None:
        while True:
            self._check_alive()
            ready = set()
            for item in self._nodes_json():
                for cond in (item.get("status") or {}).get("conditions") or []:
                    if cond.get("type") == "Ready" and cond.get("status") == "True":
                        ready.add((item.get("metadata") or {}).get("name"))
            if all(n.name in ready for n in self.nodes.values()):
                return
            if time.monotonic() > deadline:
                missing = [n.name for n in self.nodes.values() if n.name not in ready]
                raise netns.LabError(
                    f"nodes not Ready in time: {', '.join(missing)} (logs in {self.workdir})"
                )
            time.sleep(0.2)

    # --- helm --------------------------------------------------------------------------------

    def helm(self, *args: str, check: bool = True, timeout: float = 300.0) -> str:
        """helm (built by dev/kube) against the lab, from the control-plane host."""
        home = self.workdir / "helm"
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            # Without HOME, helm's Kubernetes client caches discovery in ./.kube.
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": str(self.control_plane.admin_kubeconfig),
        }
        argv = self.cluster.ctl.ns.argv([str(self.control_plane.bin_dir / "helm"), *args])
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise netns.LabError(f"helm {' '.join(args)}: timed out after {timeout}s") from e
        if check and proc.returncode != 0:
            raise netns.LabError(f"helm {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def image_values(self) -> list[str]:
        """`--set` arguments that make the chart run the image imported into the nodes."""
        repo, _, tag = self.images["ironlb"].rpartition(":")
        return [
            "--set",
            f"image.repository={repo}",
            "--set",
            f"image.tag={tag}",
            "--set",
            "image.pullPolicy=Never",
        ]

    def install_ironlb(
        self,
        *values: str,
        chart: Path = CHART,
        release: str = "ironlb",
        namespace: str = lab_cluster.CONFIG_NAMESPACE,
        timeout: float = 240.0,
    ) -> float:
        """`helm upgrade --install` ironlb from `chart` with the lab's image and `values`
        (more `--set k=v` / `-f file` arguments); waits for every pod to be Ready. Returns the
        seconds it took."""
        started = time.monotonic()
        self.helm(
            "upgrade",
            "--install",
            release,
            str(chart),
            "--namespace",
            namespace,
            "--create-namespace",
            *self.image_values(),
            *values,
            "--wait",
            "--timeout",
            f"{int(timeout)}s",
            timeout=timeout + 30,
        )
        return time.monotonic() - started

    # --- the end -------------------------------------------------------------------------------

    def kill_node(self, index: int) -> None:
        self.nodes[index].kill()

    def stop(self) -> None:
        try:
            for node in self.nodes.values():
                node.stop()
        finally:
            self.cluster.stop()
