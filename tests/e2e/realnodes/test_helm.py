"""ironlb installed by its Helm chart on real nodes, as its users install it: pods Ready, the
webhook answering, Services reached by ARP and BGP over TCP and UDP through kube-proxy,
externalTrafficPolicy Local, upgrade and uninstall, leader election, a node's death.

The tests of this module share one cluster and run in file order: the last ones kill a node and
uninstall the chart.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import pytest
import yaml

from ironlb.lab import playground
from support import traffic

from .conftest import RealLab, udp_answer, wait

pytestmark = pytest.mark.e2e

NS = "metallb-system"
CONTROLLERS = "app.kubernetes.io/name=ironlb,app.kubernetes.io/component=controller"
SPEAKERS = "app.kubernetes.io/name=ironlb,app.kubernetes.io/component=speaker"
NODES = {"node-1", "node-2", "node-3"}
# How long the two controllers run side by side before the leader is killed (issue 8 says
# 5 minutes; IRONLB_LEADER_SOAK shortens it for a quick local run).
SOAK_SECONDS = float(os.environ.get("IRONLB_LEADER_SOAK", "300"))


def ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def lease(lab: RealLab) -> tuple[str, int]:
    spec = lab.json("lease", "ironlb-controller", "-n", NS)["spec"]
    return spec.get("holderIdentity", ""), int(spec.get("leaseTransitions", 0))


def demo(lab: RealLab) -> str:
    """The demo Deployment (3 pods, one per node) behind the demo Service; its address."""
    if not lab.ingress("default", "demo"):
        playground.apply_demo(lab.rc)
    (ip, *_) = wait(lambda: lab.ingress("default", "demo"), 60, "demo Service address")
    return str(ip)


def pinned_backend(lab: RealLab, name: str, node: str, **spec: Any) -> list[dict[str, Any]]:
    """A 1-replica Deployment of the lab backend on `node`, and a LoadBalancer Service."""
    deployment, service = playground.demo_manifests(lab.rc.images["ironlb"])
    deployment["metadata"]["name"] = name
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["selector"]["matchLabels"] = {"app": name}
    template = deployment["spec"]["template"]
    template["metadata"]["labels"] = {"app": name}
    template["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    del template["spec"]["topologySpreadConstraints"]
    service["metadata"]["name"] = name
    service["spec"]["selector"] = {"app": name}
    service["spec"].update(spec)
    return [deployment, service]


def test_helm_install_every_pod_ready_and_the_webhook_answers_once_available(
    real: RealLab,
) -> None:
    # Every pod Ready (probes on a busy machine may flap: Ready again within a bound).
    real.kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", NS, "--timeout=60s")
    pods = real.pods(NS, "app.kubernetes.io/name=ironlb")
    by_component: dict[str, list[str]] = {}
    for pod in pods:
        component = pod["metadata"]["labels"]["app.kubernetes.io/component"]
        by_component.setdefault(component, []).append(pod["spec"]["nodeName"])
    assert len(by_component["controller"]) == 2
    assert sorted(by_component["speaker"]) == sorted(NODES)
    print(f"chart install: {real.install_seconds:.1f} s")

    # From no controller at all to Available: right then, the webhook must answer (and refuse).
    real.kubectl("scale", "deployment/ironlb-controller", "-n", NS, "--replicas=0")
    wait(lambda: not real.pods(NS, CONTROLLERS), 60, "controllers gone")
    real.kubectl("scale", "deployment/ironlb-controller", "-n", NS, "--replicas=2")
    real.kubectl(
        "wait",
        "--for=condition=Available",
        "--timeout=120s",
        "deployment/ironlb-controller",
        "-n",
        NS,
    )
    bad = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": {"name": "overlapping", "namespace": NS},
        "spec": {"addresses": ["198.18.0.200/29", "198.18.0.201-198.18.0.202"]},
    }
    proc = real.rc.control_plane.run_kubectl(
        "apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False
    )
    assert proc.returncode != 0, "the webhook accepted overlapping ranges"
    assert "failed calling webhook" not in proc.stderr, proc.stderr
    assert "denied the request" in proc.stderr, proc.stderr
    real.kubectl("rollout", "status", "deployment/ironlb-controller", "-n", NS, "--timeout=120s")


def test_a_service_over_three_pods_is_reached_by_arp_and_bgp_over_tcp_and_udp(
    real: RealLab,
) -> None:
    ip = demo(real)
    pods = real.pods("default", "app=demo")
    assert {p["spec"]["nodeName"] for p in pods} == NODES
    # EndpointSlices written by the real endpoint-slice controller, one endpoint per pod.
    slices = real.json("endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=demo")
    endpoints = [e for s in slices["items"] for e in s.get("endpoints") or []]
    assert {e["nodeName"] for e in endpoints} == NODES
    # The LAN client: ARP answered by the announcing node; kube-proxy spreads over the pods.
    (owner,) = wait(lambda: real.announcers("default", "demo"), 30, "an L2 announcer")
    mac = real.client.ns.arping(ip, real.client.dev, count=3, timeout=3.0)
    assert mac == real.rc.nodes[int(owner.removeprefix("node-"))].host.mac.lower()
    answers: set[str] = set()
    for _ in range(40):
        body = real.client.ns.http_get(f"http://{ip}/", timeout=1.0)
        if body:
            answers.add(body.strip())
    assert answers <= NODES, answers
    assert len(answers) >= 2, answers
    assert udp_answer(real.client, ip, 4433) in NODES
    # Behind the router: BGP, every node a next hop (ECMP), TCP and UDP.
    hops = wait(lambda: real.bgp_next_hops(ip), 30, "BGP routes to the demo address")
    assert {real.node_of_ip(h) for h in hops} == NODES
    assert playground._wait_for_answer(real.remote, ip) in NODES
    assert udp_answer(real.remote, ip, 4433) in NODES


def test_external_traffic_policy_local_is_announced_only_where_a_pod_runs_and_follows_it(
    real: RealLab,
) -> None:
    real.apply(*pinned_backend(real, "local", "node-2", externalTrafficPolicy="Local"))
    real.kubectl("rollout", "status", "deployment/local", "--timeout=120s")
    (ip,) = wait(lambda: real.ingress("default", "local"), 60, "an address")
    node2 = real.rc.nodes[2].host

    assert wait(lambda: real.announcers("default", "local") == {"node-2"}, 30, "L2 on node-2")
    assert wait(lambda: real.bgp_next_hops(ip) == {node2.ipv4}, 30, "BGP from node-2 only")
    assert playground._wait_for_answer(real.client, ip) == "node-2"
    assert playground._wait_for_answer(real.remote, ip) == "node-2"

    # The pod moves to node-3: so does the announcement, by ARP and BGP.
    real.apply(*pinned_backend(real, "local", "node-3", externalTrafficPolicy="Local"))
    real.kubectl("rollout", "status", "deployment/local", "--timeout=120s")
    assert wait(lambda: real.announcers("default", "local") == {"node-3"}, 60, "L2 on node-3")
    node3 = real.rc.nodes[3].host
    assert wait(lambda: real.bgp_next_hops(ip) == {node3.ipv4}, 60, "BGP from node-3 only")
    assert wait(
        lambda: real.client.ns.http_get(f"http://{ip}/", timeout=1.0) == "node-3\n",
        30,
        "the LAN client answered by node-3",
    )
    assert playground._wait_for_answer(real.remote, ip) == "node-3"


def test_helm_upgrade_to_a_changed_chart_keeps_every_address(real: RealLab, tmp_path: Any) -> None:
    before = {name: real.ingress("default", name) for name in ("demo", "local")}
    assert all(before.values()), before
    chart = tmp_path / "ironlb"
    shutil.copytree(playground.nodes.CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = meta["version"] + "-upgrade"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    real.rc.install_ironlb("--set", "logLevel=debug", chart=chart)
    revision = real.rc.helm("history", "ironlb", "-n", NS, "-o", "yaml")
    assert yaml.safe_load(revision)[-1]["chart"].endswith("-upgrade")
    after = {name: real.ingress("default", name) for name in before}
    assert after == before
    for name, ips in after.items():
        assert playground._wait_for_answer(real.client, ips[0]) in NODES, name


@pytest.mark.timeout(SOAK_SECONDS + 400)
def test_two_controllers_keep_one_leader_and_the_other_takes_over_when_it_dies(
    real: RealLab,
) -> None:
    controllers = real.pods(NS, CONTROLLERS)
    assert len(controllers) == 2
    holder, transitions = wait(lambda: lease(real)[0] and lease(real), 60, "a leader")
    before = {name: real.ingress("default", name) for name in ("demo", "local")}
    deadline = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < deadline:
        assert lease(real) == (holder, transitions), "the Lease changed hands while both ran"
        time.sleep(5)
    restarts = {
        p["metadata"]["name"]: sum(
            c.get("restartCount", 0) for c in p["status"].get("containerStatuses", [])
        )
        for p in real.pods(NS, CONTROLLERS)
    }
    assert set(restarts.values()) == {0}, restarts

    real.kubectl("delete", "pod", holder, "-n", NS, "--grace-period=0", "--force")
    new, _ = wait(lambda: (h := lease(real))[0] not in ("", holder) and h, 60, "another leader")
    real.apply(*pinned_backend(real, "after-leader", "node-1"))
    wait(lambda: real.ingress("default", "after-leader"), 30, "allocation by the new leader")
    after = {name: real.ingress("default", name) for name in before}
    assert after == before
    print(f"leader {holder} killed; {new} took over")


def test_a_killed_node_fails_over_and_the_time_is_measured_from_the_lan_client(
    real: RealLab,
) -> None:
    ip = demo(real)
    (owner,) = wait(lambda: real.announcers("default", "demo"), 30, "an L2 announcer")
    stream = traffic.Stream(real.client.ns.name, ip, count=1000, interval=0.02, timeout=0.5)
    stream.start()
    time.sleep(2.0)
    # From the moment the node is dead: every process killed and its link down (requests sent
    # while the kill is under way may still be answered by it).
    real.rc.kill_node(int(owner.removeprefix("node-")))
    killed_at = time.monotonic()
    stream.join()
    after = [(t, body) for t, body in stream.results if t >= killed_at]
    assert after, "no request sent after the kill"
    first = next((t for t, body in after if body is not None), None)
    assert first is not None, f"nothing answered after {owner} died ({stream.errors})"
    gap = first - killed_at
    print(f"node {owner} killed: first answer from the LAN client after {gap * 1000:.0f} ms")
    assert gap < 10.0
    survivors = wait(lambda: real.announcers("default", "demo") - {owner}, 30, "a new announcer")
    assert owner not in survivors


def test_helm_uninstall_leaves_what_the_readme_says(real: RealLab) -> None:
    real.rc.helm("uninstall", "ironlb", "-n", NS, "--wait")
    # Helm never deletes CRDs it installed from crds/ (nor, therefore, the configuration).
    crds = real.kubectl("get", "crd", "-o", "name")
    assert "ipaddresspools.metallb.io" in crds
    assert real.json("ipaddresspools", "-n", NS)["items"]
    left = real.kubectl(
        "get",
        "deployments,daemonsets,serviceaccounts,clusterroles,clusterrolebindings,"
        "validatingwebhookconfigurations",
        "-A",
        "-l",
        "app.kubernetes.io/part-of=ironlb",
        "-o",
        "name",
    )
    assert left.strip() == "", left
