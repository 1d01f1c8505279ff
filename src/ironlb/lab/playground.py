"""The interactive lab behind `ironlb lab up | down | status`.

`up` builds a whole cluster on this machine and leaves it running after the command returns:
the LAN, etcd + kube-apiserver, three nodes (registered as Node objects: there is no kubelet), a
LAN client, a router with a remote client behind it, and the example configuration applied.
Its state (namespaces, kubeconfig, hosts) is written to `<workdir>/lab.json`; `down` removes
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


def up(name: str = "lab", *, process: bool = False) -> Handle:
    """Bring lab `name` up and leave it running: real nodes with ironlb installed by its Helm
    chart, or (`process`) the process lab."""
    h = handle(name)
    if h.running():
        raise netns.LabError(f"lab {name!r} is already running (ironlb lab status / down)")
    shutil.rmtree(h.workdir, ignore_errors=True)
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
        h.ctl_ns,
        str(state["kubectl"]),
        f"--kubeconfig={state['kubeconfig']}",
        *args,
    ]


def shell_argv(name: str, role: str) -> list[str]:
    h = handle(name)
    if not h.running():
        raise netns.LabError(f"lab {name!r} is not running: start it with `ironlb lab up`")
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
