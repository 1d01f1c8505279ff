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

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, routers, topology

EXAMPLE_CONFIG = lab_cluster.DEPLOY / "examples" / "lab-l2.yaml"
DEMO_SERVICE = lab_cluster.DEPLOY / "examples" / "demo-service.yaml"
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


def up(name: str = "lab") -> Handle:
    h = handle(name)
    if h.running():
        raise netns.LabError(f"lab {name!r} is already running (ironlb lab status / down)")
    shutil.rmtree(h.workdir, ignore_errors=True)
    c = lab_cluster.Cluster.start(h.workdir, h.prefix, keep=True)
    try:
        nodes = {i: c.lab.add_node(i) for i in range(1, NODE_COUNT + 1)}
        client = c.lab.add_client()
        router = c.lab.add_router()
        register_nodes(c, nodes)
        for host in nodes.values():
            components.start_backend(c, host)
        components.start_controller(c)
        for i in nodes:
            components.start_speaker(c, i, wait=False)
        frr = routers.Frr(router, h.workdir / "frr")
        frr.start(
            routers.RouterConfig(
                ROUTER_AS, tuple(routers.Neighbor(host.ipv4, NODE_AS) for host in nodes.values())
            )
        )
        for path in (EXAMPLE_CONFIG, BGP_CONFIG, DEMO_SERVICE):
            c.kubectl("apply", "--server-side", "-f", str(path))
        components.endpoints(c, "default", "demo", [f"node-{i}" for i in nodes])
        demo_ip = _wait_for_address(c, "default", "demo")
        lan_answer = _wait_for_answer(client, demo_ip)
        remote_answer = _wait_for_answer(c.lab.hosts["remote"], demo_ip)
    except BaseException:
        c.stop()
        raise
    state = {
        "name": name,
        "prefix": h.prefix,
        "server": c.control_plane.server,
        "kubeconfig": str(c.control_plane.admin_kubeconfig),
        "kubectl": str(c.control_plane.kubectl),
        "startup_seconds": round(c.control_plane.startup_seconds, 2),
        "hosts": {
            role: {"netns": host.ns.name, "ipv4": host.ipv4, "ipv6": host.ipv6, "mac": host.mac}
            for role, host in c.lab.hosts.items()
        },
        "nodes": [f"node-{i}" for i in nodes],
        "client": client.ns.name,
        "router": router.ns.name,
        "demo": demo_ip,
        "demo_from_client": lan_answer,
        "demo_from_remote": remote_answer,
    }
    h.state_file.write_text(json.dumps(state, indent=2))
    return h


def _wait_for_address(c: lab_cluster.Cluster, namespace: str, name: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ips = components.service_status(c, namespace, name)
        if ips:
            return ips[0]
        time.sleep(0.2)
    raise netns.LabError(f"Service {namespace}/{name} got no address within 30 s")


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
    return "\n".join(
        [
            f"ironlb lab {h.name!r} is up: kube-apiserver {state['server']} "
            f"(ready in {state['startup_seconds']} s), nodes node-1..node-{NODE_COUNT},"
            " a LAN client, a router and a remote client.",
            f"The controller gave the demo Service {state['demo']}; node-1..3 run a speaker each"
            " and a backend that answers with its node's name. The LAN client reaches it by"
            f" ARP (answered by {state['demo_from_client']}), the remote client behind the"
            " router over BGP with ECMP (FRR, AS 64500, peers with every node):",
            "",
            "  ironlb lab kubectl get svc demo",
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
