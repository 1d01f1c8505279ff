"""The interactive lab behind `ironlb lab up | down | status`.

`up` builds a whole cluster on this machine and leaves it running after the command returns:
the LAN, etcd + kube-apiserver, three nodes (real ones by default; with `process`, registered as
Node objects and no kubelet), a LAN client, a router with a remote client behind it, and the
example configuration applied. With `control_plane`, it is the control-plane lab instead
(`ironlb.lab.cpvip`): three control-plane hosts, each with an etcd member of one three-member
cluster, its own kube-apiserver and `ironlb cpvip`, and a client whose kubeconfig points at the
VIP. Its state (namespaces, kubeconfig, hosts) is written to `<workdir>/lab.json`; `down` removes
everything, processes included.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, nodes, routers, topology
from ironlb.lab import cpvip as lab_cpvip

EXAMPLE_CONFIG = lab_cluster.DEPLOY / "examples" / "lab-l2.yaml"
DEMO_SERVICE = lab_cluster.DEPLOY / "examples" / "demo-service.yaml"
DEMO_DEPLOYMENT = lab_cluster.DEPLOY / "examples" / "demo-deployment.yaml"
BGP_CONFIG = lab_cluster.DEPLOY / "examples" / "lab-bgp.yaml"
ROUTER_AS, NODE_AS = 64500, 64510
NODE_COUNT = 3


def cache_dir() -> Path:
    base = os.environ.get("IRONLB_CACHE") or Path.home() / ".cache" / "ironlb"
    return Path(base) / "lab"


@dataclass(frozen=True)
class Handle:
    """What `up` leaves behind for the other subcommands."""

    name: str
    workdir: Path

    @property
    def prefix(self) -> str:
        return f"ilb-{self.name}"

    @property
    def state_file(self) -> Path:
        return self.workdir / "lab.json"

    @property
    def ctl_ns(self) -> str:
        return f"{self.prefix}-ctl"

    def state(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        return data

    def running(self) -> bool:
        return bool(netns.list_namespaces(self.prefix))


def handle(name: str) -> Handle:
    if not name.isalnum() or not name.islower() or not 3 <= len(name) <= 12:
        raise netns.LabError("a lab name is 3 to 12 lowercase letters or digits")
    return Handle(name, cache_dir() / name)


def register_nodes(c: lab_cluster.Cluster, nodes: dict[int, topology.Host]) -> None:
    for i, h in nodes.items():
        components.register_node(c, i, h)


def up(name: str = "lab", *, process: bool = False, control_plane: bool = False) -> Handle:
    """Bring lab `name` up and leave it running: real nodes with ironlb installed by its Helm
    chart, (`process`) the process lab, or (`control_plane`) the control-plane lab."""
    if process and control_plane:
        raise netns.LabError("choose one: --process or --control-plane")
    h = handle(name)
    if h.running():
        raise netns.LabError(f"lab {name!r} is already running (ironlb lab status / down)")
    shutil.rmtree(h.workdir, ignore_errors=True)
    if control_plane:
        state = _up_control_plane(h)
    else:
        state = _up_process(h) if process else _up_real(h)
    h.state_file.write_text(json.dumps(state, indent=2))
    return h


def _common_state(h: Handle, c: lab_cluster.Cluster) -> dict[str, object]:
    return {
        "name": h.name,
        "prefix": h.prefix,
        "server": c.control_plane.server,
        "kubeconfig": str(c.control_plane.admin_kubeconfig),
        "kubectl": str(c.control_plane.kubectl),
        "startup_seconds": round(c.control_plane.startup_seconds, 2),
        "hosts": {
            role: {"netns": host.ns.name, "ipv4": host.ipv4, "ipv6": host.ipv6, "mac": host.mac}
            for role, host in c.lab.hosts.items()
        },
        "nodes": [f"node-{i}" for i in range(1, NODE_COUNT + 1)],
        "client": c.lab.hosts["client"].ns.name,
        "router": c.lab.hosts["router"].ns.name,
    }


def _start_router(h: Handle, router: topology.Host, nodes: list[topology.Host]) -> None:
    frr = routers.Frr(router, h.workdir / "frr")
    frr.start(
        routers.RouterConfig(
            ROUTER_AS, tuple(routers.Neighbor(host.ipv4, NODE_AS) for host in nodes)
        )
    )


def _up_process(h: Handle) -> dict[str, object]:
    c = lab_cluster.Cluster.start(h.workdir, h.prefix, keep=True)
    try:
        hosts = {i: c.lab.add_node(i) for i in range(1, NODE_COUNT + 1)}
        client = c.lab.add_client()
        router = c.lab.add_router()
        register_nodes(c, hosts)
        for host in hosts.values():
            components.start_backend(c, host)
        components.start_controller(c)
        for i in hosts:
            components.start_speaker(c, i, wait=False)
        _start_router(h, router, list(hosts.values()))
        for path in (EXAMPLE_CONFIG, BGP_CONFIG, DEMO_SERVICE):
            c.kubectl("apply", "--server-side", "-f", str(path))
        components.endpoints(c, "default", "demo", [f"node-{i}" for i in hosts])
        demo_ip = _wait_for_address(c, "default", "demo")
        lan_answer = _wait_for_answer(client, demo_ip)
        remote_answer = _wait_for_answer(c.lab.hosts["remote"], demo_ip)
    except BaseException:
        c.stop()
        raise
    return {
        "kind": "process",
        **_common_state(h, c),
        "demo": demo_ip,
        "demo_from_client": lan_answer,
        "demo_from_remote": remote_answer,
    }


def _up_real(h: Handle) -> dict[str, object]:
    rc = nodes.RealCluster.start(h.workdir, h.prefix, keep=True, node_count=NODE_COUNT)
    c = rc.cluster
    try:
        client = c.lab.add_client()
        router = c.lab.add_router()
        rc.route_pod_networks(router)
        _start_router(h, router, [n.host for n in rc.nodes.values()])
        install_seconds = rc.install_ironlb()
        apply_demo(rc)
        demo_ip = _wait_for_address(c, "default", "demo", within=60)
        lan_answer = _wait_for_answer(client, demo_ip)
        remote_answer = _wait_for_answer(c.lab.hosts["remote"], demo_ip)
    except BaseException:
        rc.stop()
        raise
    return {
        "kind": "real",
        **_common_state(h, c),
        "cluster_ready_seconds": round(rc.ready_seconds, 1),
        "chart_install_seconds": round(install_seconds, 1),
        "image": rc.images["ironlb"],
        "demo": demo_ip,
        "demo_from_client": lan_answer,
        "demo_from_remote": remote_answer,
    }


def _up_control_plane(h: Handle, within: float = 60.0) -> dict[str, object]:
    lab = topology.Lab.create(h.workdir / "lab", h.prefix, keep=True)
    try:
        cp = lab_cpvip.ControlPlanes.create(lab, h.workdir / "cp")
        began = time.monotonic()
        cp.start()
        apiservers_ready = time.monotonic() - began
        for m in cp.members:
            cp.start_cpvip(m)
        deadline = time.monotonic() + within
        while len(holders := cp.holders()) != 1 or not _vip_answers(cp):
            if time.monotonic() > deadline:
                held = ", ".join(m.name for m in holders) or "nobody"
                raise netns.LabError(
                    f"the VIP {cp.vip} (held by {held}) did not answer within {within:.0f} s"
                )
            time.sleep(0.2)
        vip_ready = time.monotonic() - began
    except BaseException:
        netns.destroy(h.prefix)
        raise
    assert cp.client is not None
    hosts = {m.name: m.host for m in cp.members} | {"client": cp.client}
    return {
        "kind": "control-plane",
        "name": h.name,
        "prefix": h.prefix,
        "server": cp.vip_url(""),
        "kubeconfig": str(cp.workdir / "vip.kubeconfig"),
        "kubectl": str(cp.bin_dir / "kubectl"),
        "kubectl_netns": cp.client.ns.name,
        "vip": cp.vip,
        "holder": holders[0].name,
        "apiservers_ready_seconds": round(apiservers_ready, 1),
        "vip_ready_seconds": round(vip_ready, 1),
        "key_file": str(cp.workdir / "key"),
        "logs": {m.name: str(m.workdir) for m in cp.members},
        "hosts": {
            role: {"netns": host.ns.name, "ipv4": host.ipv4, "ipv6": host.ipv6, "mac": host.mac}
            for role, host in hosts.items()
        },
        "client": cp.client.ns.name,
    }


def _vip_answers(cp: lab_cpvip.ControlPlanes) -> bool:
    """GET /readyz through the VIP from the client host answers "ok"."""
    assert cp.client is not None
    argv = [str(cp.bin_dir / "kubectl"), f"--kubeconfig={cp.workdir / 'vip.kubeconfig'}"]
    out = netns.run(
        cp.client.ns.argv([*argv, "--request-timeout=2s", "get", "--raw", "/readyz"]),
        check=False,
        timeout=10,
    )
    return out.strip() == "ok"


def apply_config(c: lab_cluster.Cluster, *paths: Path, within: float = 60.0) -> None:
    """kubectl apply, through ironlb's admission webhook: retried while the webhook is not
    reachable yet (a just-started controller), never when it refuses the object."""
    deadline = time.monotonic() + within
    for path in paths:
        while True:
            proc = c.control_plane.run_kubectl("apply", "-f", str(path), check=False)
            if proc.returncode == 0:
                break
            if "failed calling webhook" not in proc.stderr or time.monotonic() > deadline:
                raise netns.LabError(f"kubectl apply -f {path}: {proc.stderr.strip()}")
            time.sleep(0.5)


def demo_manifests(image: str) -> list[dict[str, Any]]:
    """The demo Deployment (running `image`) and its LoadBalancer Service."""
    docs = [yaml.safe_load(DEMO_DEPLOYMENT.read_text()), yaml.safe_load(DEMO_SERVICE.read_text())]
    for container in docs[0]["spec"]["template"]["spec"]["containers"]:
        container["image"] = image
    return docs


def apply_demo(rc: nodes.RealCluster, within: float = 120.0) -> None:
    """The example configuration, then the demo Deployment and Service; waits for the pods."""
    apply_config(rc.cluster, EXAMPLE_CONFIG, BGP_CONFIG)
    rc.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(demo_manifests(rc.images["ironlb"])))
    rc.kubectl("rollout", "status", "deployment/demo", "-n", "default", f"--timeout={int(within)}s")


def _wait_for_address(
    c: lab_cluster.Cluster, namespace: str, name: str, within: float = 30.0
) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ips = components.service_status(c, namespace, name)
        if ips:
            return ips[0]
        time.sleep(0.2)
    raise netns.LabError(f"Service {namespace}/{name} got no address within {within:.0f} s")


def _wait_for_answer(host: topology.Host, ip: str, within: float = 30.0) -> str:
    found = topology.answer(host, ip, within)
    if found is None:
        raise netns.LabError(f"{ip} does not answer from {host.name} within {within:.0f} s")
    return found


def down(name: str = "lab") -> bool:
    """Remove the lab; True if there was one."""
    h = handle(name)
    existed = h.running() or h.state_file.exists()
    netns.destroy(h.prefix)
    shutil.rmtree(h.workdir, ignore_errors=True)
    return existed


def kubectl_argv(name: str, args: list[str]) -> list[str]:
    h = handle(name)
    state = h.state()
    if not state or not h.running():
        raise netns.LabError(f"lab {name!r} is not running: start it with `ironlb lab up`")
    return [
        "ip",
        "netns",
        "exec",
        str(state.get("kubectl_netns", h.ctl_ns)),
        str(state["kubectl"]),
        f"--kubeconfig={state['kubeconfig']}",
        *args,
    ]


def shell_argv(name: str, role: str | None = None) -> list[str]:
    """`role` None: the host kubectl runs on (the control-plane host; in the control-plane lab,
    the client, whose kubeconfig points at the VIP)."""
    h = handle(name)
    if not h.running():
        raise netns.LabError(f"lab {name!r} is not running: start it with `ironlb lab up`")
    if role is None:
        role = "client" if h.state().get("kind") == "control-plane" else "ctl"
    ns = f"{h.prefix}-{role}"
    if ns not in netns.list_namespaces(h.prefix):
        roles = [n.removeprefix(h.prefix + "-") for n in netns.list_namespaces(h.prefix)]
        raise netns.LabError(f"no host {role!r} in lab {name!r}; hosts: {', '.join(roles)}")
    state = h.state()
    env_path = f"{Path(str(state.get('kubectl', 'kubectl'))).parent}:{os.environ.get('PATH', '')}"
    return [
        "ip",
        "netns",
        "exec",
        ns,
        "env",
        f"PATH={env_path}",
        f"KUBECONFIG={state.get('kubeconfig', '')}",
        os.environ.get("SHELL", "/bin/bash"),
    ]


def status(name: str = "lab") -> str:
    h = handle(name)
    state = h.state()
    if not h.running():
        return f"lab {name!r} is not running (start it with `ironlb lab up`)"
    ready = netns.run(kubectl_argv(name, ["get", "--raw", "/readyz"]), check=False).strip()
    lines = [
        f"lab {name!r}: kube-apiserver {state.get('server')}: "
        f"{'ready' if ready == 'ok' else 'NOT READY'}"
    ]
    hosts = state.get("hosts")
    if isinstance(hosts, dict):
        for role, info in hosts.items():
            procs = len(netns.pids_in(info["netns"]))
            lines.append(
                f"  {role:<9} {info['ipv4']:<15} {info['ipv6']:<16} {info['mac']}"
                f"  ({procs} process{'es' if procs != 1 else ''})"
            )
    return "\n".join(lines)


def next_steps(h: Handle) -> str:
    state = h.state()
    if state.get("kind") == "control-plane":
        return _next_steps_control_plane(h, state)
    if state.get("kind") == "real":
        intro = [
            f"ironlb lab {h.name!r} is up (real nodes): kube-apiserver {state['server']},"
            " kube-controller-manager and kube-scheduler; node-1..node-"
            f"{NODE_COUNT} each run containerd, kubelet and kube-proxy (Ready after"
            f" {state['cluster_ready_seconds']} s); ironlb installed by its Helm chart from"
            f" {state['image']} in {state['chart_install_seconds']} s; a LAN client, a router"
            " and a remote client.",
            f"The controller gave the demo Service {state['demo']}; the demo Deployment's three"
            " pods answer with their node's name (HTTP 80, UDP 4433). The LAN client reaches it"
            f" by ARP (answered by {state['demo_from_client']}), the remote client behind the"
            " router over BGP with ECMP (FRR, AS 64500, peers with every node):",
            "",
            "  ironlb lab kubectl get pods -A -o wide",
            "  ironlb lab kubectl get svc demo",
        ]
    else:
        intro = [
            f"ironlb lab {h.name!r} is up (process lab): kube-apiserver {state['server']} "
            f"(ready in {state['startup_seconds']} s), nodes node-1..node-{NODE_COUNT},"
            " a LAN client, a router and a remote client.",
            f"The controller gave the demo Service {state['demo']}; node-1..3 run a speaker each"
            " and a backend that answers with its node's name. The LAN client reaches it by"
            f" ARP (answered by {state['demo_from_client']}), the remote client behind the"
            " router over BGP with ECMP (FRR, AS 64500, peers with every node):",
            "",
            "  ironlb lab kubectl get svc demo",
        ]
    return "\n".join(
        [
            *intro,
            f"  ironlb lab shell client     # then: curl http://{state['demo']}/",
            f"  ironlb lab shell remote     # then: curl http://{state['demo']}/",
            "  ironlb lab shell router     # then: ip route; vtysh --vty_socket "
            f"{h.workdir / 'frr'} -c 'show bgp summary'",
            "",
            "The lab lives in network namespaces (it never touches this host's network), so",
            "kubectl runs inside the lab's control-plane namespace:",
            "",
            "  ironlb lab kubectl get nodes",
            "  ironlb lab kubectl get ipaddresspools,l2advertisements -n metallb-system",
            "  ironlb lab kubectl get svc -A",
            "",
            "or open a shell there, with KUBECONFIG set:",
            "",
            "  ironlb lab shell            # then: kubectl get crd",
            f"  (the admin kubeconfig is {state['kubeconfig']})",
            "",
            "ironlb lab status shows the hosts; ironlb lab down removes everything.",
        ]
    )


def _next_steps_control_plane(h: Handle, state: dict[str, object]) -> str:
    logs = state["logs"]
    assert isinstance(logs, dict)
    return "\n".join(
        [
            f"ironlb lab {h.name!r} is up (control plane): cp-1, cp-2 and cp-3 each run an etcd"
            " member (one three-member cluster, kubeadm's stacked topology), a kube-apiserver"
            f" (all ready in {state['apiservers_ready_seconds']} s) and `ironlb cpvip`. The VIP"
            f" {state['vip']} is held by {state['holder']} (answering {state['vip_ready_seconds']}"
            " s after the start); the client's kubeconfig points at it:",
            "",
            "  ironlb lab kubectl get --raw /readyz",
            "  ironlb lab kubectl get namespaces",
            "  ironlb lab shell client       # KUBECONFIG is set: kubectl get --raw /readyz",
            "",
            "The holder has the VIP on its eth0. To watch it move (node death), take the",
            "holder's link down for a few seconds, from the holder's own namespace:",
            "",
            f"  ironlb lab shell {state['holder']}         # then: ip -br addr show eth0",
            "                                #       ip link set eth0 down; sleep 5;"
            " ip link set eth0 up",
            "  ironlb lab shell client       # meanwhile: for i in $(seq 50); do kubectl get"
            " --raw /readyz; sleep 0.2; done",
            "",
            "Each host's processes log to its directory (etcd.log, kube-apiserver.log, cpvip.log):",
            *(f"  {name}: {path}" for name, path in logs.items()),
            "",
            f"(the kubeconfig is {state['kubeconfig']}; the membership key {state['key_file']})",
            "ironlb lab status shows the hosts; ironlb lab down removes everything.",
        ]
    )
