"""`ironlb doctor` end to end: each broken state built for real in the process lab (real API
server, controller, two node namespaces each running a speaker, a stranger on the LAN), then the
snapshot gathered from the API (SpeakerReports included) and diagnosed; a healthy Service gives
no finding, and the command's exit status says so.

node-2 carries `exclude-from-external-load-balancers` and the label doctor=edge, so that the
exclusion and externalTrafficPolicy Local stories can be told without touching node-1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ironlb.core import announce, diagnosis, model
from ironlb.doctor import gather
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, topology
from support import kube

pytestmark = pytest.mark.e2e

MODULE = "test_doctor"
NODES = (1, 2)
CONFIG = [
    # Services take "doc" unless they name another pool (the others are autoAssign: false).
    kube.pool("doc", "198.18.0.144/28", module=MODULE),
    kube.pool("doc-noadv", "198.18.0.168/30", module=MODULE, autoAssign=False),
    kube.pool("doc-edge", "198.18.0.172/30", module=MODULE, autoAssign=False),
    kube.pool("doc-far", "192.0.2.248/30", module=MODULE, autoAssign=False),
    kube.pool("doc-bgp", "198.18.0.176/30", module=MODULE, autoAssign=False),
    {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "BGPAdvertisement",
        "metadata": {"name": "doc-bgp", "namespace": kube.CONFIG_NS},
        "spec": {"ipAddressPools": ["doc-bgp"], "peers": ["doc-absent"]},
    },
    kube.pool("doc-bgp-pw", "198.18.0.180/30", module=MODULE, autoAssign=False),
    {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "BGPAdvertisement",
        "metadata": {"name": "doc-bgp-pw", "namespace": kube.CONFIG_NS},
        "spec": {"ipAddressPools": ["doc-bgp-pw"], "peers": ["doc-nopw"]},
    },
    # A peer node-1 cannot use: its password Secret does not exist, so no session is started.
    {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "doc-nopw", "namespace": kube.CONFIG_NS},
        "spec": {
            "myASN": 64512,
            "peerASN": 64513,
            "peerAddress": "198.18.0.251",
            "passwordSecret": {"name": "doc-no-such-secret"},
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}],
        },
    },
    # A router that is not there: node-1's session to it never gets Established.
    {
        "apiVersion": "metallb.io/v1beta2",
        "kind": "BGPPeer",
        "metadata": {"name": "doc-absent", "namespace": kube.CONFIG_NS},
        "spec": {
            "myASN": 64512,
            "peerASN": 64513,
            "peerAddress": "198.18.0.250",
            "connectTime": "2s",
            "nodeSelectors": [{"matchLabels": {"kubernetes.io/hostname": "node-1"}}],
        },
    },
    {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "doc", "namespace": kube.CONFIG_NS},
        "spec": {"ipAddressPools": ["doc", "doc-far"]},
    },
    {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "doc-edge", "namespace": kube.CONFIG_NS},
        "spec": {
            "ipAddressPools": ["doc-edge"],
            "nodeSelectors": [{"matchLabels": {"doctor": "edge"}}],
        },
    },
]


@dataclass
class DoctorLab:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    stranger: topology.Host
    controller: components.Process | None = None
    speakers: dict[int, components.Process] = field(default_factory=dict)


@pytest.fixture(scope="module")
def doclab(cluster: lab_cluster.Cluster) -> Iterator[DoctorLab]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    lab = DoctorLab(cluster, hosts, cluster.lab.add_stranger())
    cluster.kubectl("delete", "speakerreports", "--all", "-n", kube.CONFIG_NS, "--ignore-not-found")
    try:
        components.register_node(cluster, 1, hosts[1])
        components.register_node(
            cluster, 2, hosts[2], {"doctor": "edge", announce.EXCLUDE_LB_LABEL: ""}
        )
        lab.controller = components.start_controller(cluster)
        kube.apply(cluster, *CONFIG)
        for i in NODES:
            lab.speakers[i] = components.start_speaker(cluster, i, wait=False)
        for p in lab.speakers.values():
            p.wait_ready()
        yield lab
    finally:
        for proc in [*lab.speakers.values(), *([lab.controller] if lab.controller else [])]:
            proc.kill()
        for doc in CONFIG:
            cluster.kubectl(
                "delete",
                doc["kind"].lower(),
                doc["metadata"]["name"],
                "-n",
                kube.CONFIG_NS,
                "--ignore-not-found",
            )
        components.uninstall_webhook(cluster)
        for role in ("stranger", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")
        cluster.kubectl(
            "delete", "speakerreports", "--all", "-n", kube.CONFIG_NS, "--ignore-not-found"
        )


async def service(
    admin: k8s.Client,
    lab: DoctorLab,
    namespace: str,
    name: str,
    nodes: Sequence[str] = ("node-1",),
    *,
    ready: bool = True,
    annotations: dict[str, str] | None = None,
    wait_address: bool = True,
    **spec: object,
) -> model.ServiceKey:
    await admin.create(k8s.SERVICES, kube.service(name, annotations=annotations, **spec), namespace)
    components.endpoints(lab.cluster, namespace, name, list(nodes), ready=ready)
    if wait_address:
        await kube.eventually(lambda: kube.ingress(admin, namespace, name), what="an address")
    return model.service_key(namespace, name)


async def findings(admin: k8s.Client, key: model.ServiceKey) -> list[diagnosis.Finding]:
    gathered = await gather.gather(admin, kube.CONFIG_NS)
    return diagnosis.diagnose(gathered.snapshot, key)


async def diagnosis_becomes(
    admin: k8s.Client,
    key: model.ServiceKey,
    wanted: Callable[[list[diagnosis.Finding]], bool],
    within: float = 20.0,
) -> list[diagnosis.Finding]:
    """The findings once `wanted(findings)` holds (the speakers report every 5 s at most)."""
    last: list[list[diagnosis.Finding]] = [[]]

    async def probe() -> tuple[list[diagnosis.Finding]] | None:
        last[0] = await findings(admin, key)
        return (last[0],) if wanted(last[0]) else None

    try:
        (found,) = await kube.eventually(probe, within=within, interval=0.5)
    except AssertionError:
        raise AssertionError(f"last diagnosis: {[f.line() for f in last[0]]}") from None
    return found


def causes(found: list[diagnosis.Finding]) -> list[str]:
    return [f.cause for f in found]


def cli(cluster: lab_cluster.Cluster, *args: str, kubectl: bool = False) -> tuple[int, str]:
    kubeconfig = f"--kubeconfig={cluster.control_plane.admin_kubeconfig}"
    argv = (
        [str(Path(sys.executable).parent / "kubectl-ironlb")]
        if kubectl
        else [sys.executable, "-m", "ironlb.cli"]
    )
    done = subprocess.run(
        [*argv, *args, kubeconfig, f"--ironlb-namespace={kube.CONFIG_NS}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


async def test_healthy_service_has_no_finding(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "web", ("node-1", "node-2"))
    found = await diagnosis_becomes(admin, key, lambda f: f == [])
    assert found == []
    # Still none after more than one report interval: nothing flaps.
    await asyncio.sleep(6)
    assert await findings(admin, key) == []
    code, out = await asyncio.to_thread(cli, doclab.cluster, "doctor", key, "-o", "json")
    assert (code, json.loads(out)) == (0, []), out
    code, out = await asyncio.to_thread(cli, doclab.cluster, "status", "-o", "json", kubectl=True)
    assert code == 0, out
    row = next(s for s in json.loads(out)["services"] if s["service"] == key)
    assert [(a["node"], a["interface"]) for a in row["layer2"]] == [("node-1", "eth0")]


async def test_no_ready_endpoint(doclab: DoctorLab, admin: k8s.Client, namespace: str) -> None:
    key = await service(admin, doclab, namespace, "down", ready=False)
    found = await diagnosis_becomes(admin, key, lambda f: bool(f))
    assert causes(found) == [diagnosis.NO_ENDPOINT]
    code, out = await asyncio.to_thread(cli, doclab.cluster, "doctor", key)
    assert code == 1
    assert out.startswith(f"Service/{key}: [no-endpoint] ")


async def test_local_policy_with_endpoints_only_on_an_excluded_node(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(
        admin, doclab, namespace, "local", ("node-2",), externalTrafficPolicy="Local"
    )
    found = await diagnosis_becomes(admin, key, lambda f: bool(f))
    assert causes(found) == [diagnosis.LOCAL_NO_ENDPOINT]
    assert "Node/node-1" in found[0].objects


async def test_requested_address_outside_every_pool(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(
        admin, doclab, namespace, "outside", loadBalancerIP="198.18.0.99", wait_address=False
    )
    found = await diagnosis_becomes(admin, key, lambda f: bool(f))
    assert causes(found) == [diagnosis.NO_POOL]
    assert "198.18.0.99" in found[0].what


async def test_pool_without_advertisement(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    pool = {"metallb.io/address-pool": "doc-noadv"}
    key = await service(admin, doclab, namespace, "unadvertised", annotations=pool)
    found = await diagnosis_becomes(admin, key, lambda f: bool(f))
    assert causes(found) == [diagnosis.NO_ADVERTISEMENT]
    assert f"IPAddressPool/{kube.CONFIG_NS}/doc-noadv" in found[0].objects


async def test_only_selected_node_is_excluded(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    pool = {"metallb.io/address-pool": "doc-edge"}
    key = await service(admin, doclab, namespace, "edge", annotations=pool)
    found = await diagnosis_becomes(admin, key, lambda f: bool(f))
    assert causes(found) == [diagnosis.EXCLUDED]
    assert f"kubectl label node node-2 {announce.EXCLUDE_LB_LABEL}-" in found[0].fix


async def test_address_outside_the_nodes_subnet(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    pool = {"metallb.io/address-pool": "doc-far"}
    key = await service(admin, doclab, namespace, "far", annotations=pool)
    # Until the speaker has probed and announced it, the address is "not announced".
    found = await diagnosis_becomes(admin, key, lambda f: causes(f) == [diagnosis.OFF_SUBNET])
    assert causes(found) == [diagnosis.OFF_SUBNET]
    assert f"via {doclab.hosts[1].ipv4}" in found[0].fix


async def test_address_another_host_answers_for(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    squat = "198.18.0.150"
    doclab.stranger.ns.ip("addr", "add", f"{squat}/24", "dev", "eth0")
    try:
        key = await service(admin, doclab, namespace, "squatted", loadBalancerIP=squat)
        found = await diagnosis_becomes(admin, key, lambda f: causes(f) == [diagnosis.CONFLICT])
        assert causes(found) == [diagnosis.CONFLICT]
        assert doclab.stranger.mac is not None
        assert doclab.stranger.mac in found[0].what
    finally:
        doclab.stranger.ns.ip("addr", "del", f"{squat}/24", "dev", "eth0", check=False)


async def test_bgp_session_that_never_comes_up(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    pool = {"metallb.io/address-pool": "doc-bgp"}
    key = await service(admin, doclab, namespace, "routed", annotations=pool)
    found = await diagnosis_becomes(admin, key, lambda f: bool(f))
    assert causes(found) == [diagnosis.BGP_SESSION]
    assert f"BGPPeer/{kube.CONFIG_NS}/doc-absent" in found[0].objects
    assert "node-1's BGP session" in found[0].what
    assert "198.18.0.250" in found[0].what


async def test_bgp_peer_the_node_cannot_use(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    pool = {"metallb.io/address-pool": "doc-bgp-pw"}
    key = await service(admin, doclab, namespace, "unusable", annotations=pool)
    # Until node-1's first report, only "no session" is known; then the reason it gave.
    found = await diagnosis_becomes(
        admin, key, lambda f: any("runs no BGP session" in x.what for x in f)
    )
    assert causes(found) == [diagnosis.BGP_SESSION]
    assert found[0].what == (
        f"node-1 runs no BGP session to BGPPeer/{kube.CONFIG_NS}/doc-nopw: passwordSecret "
        f"{kube.CONFIG_NS}/doc-no-such-secret does not exist"
    )
    code, out = await asyncio.to_thread(cli, doclab.cluster, "doctor", key)
    assert code == 1
    assert out.startswith(f"Service/{key}: [{diagnosis.BGP_SESSION}] node-1 runs no"), out
    code, out = await asyncio.to_thread(cli, doclab.cluster, "status", "-o", "json")
    assert code == 0, out
    node_1 = next(s for s in json.loads(out)["speakers"] if s["node"] == "node-1")
    assert (
        f"BGPPeer doc-nopw: passwordSecret {kube.CONFIG_NS}/doc-no-such-secret does not exist"
        in node_1["problems"]
    )


async def test_speakers_with_different_membership_keys(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "keys", ("node-1",))
    await diagnosis_becomes(admin, key, lambda f: f == [])
    components.membership_secret(doclab.cluster, "memberlist-doctor")
    doclab.speakers.pop(2).stop()
    doclab.speakers[2] = components.start_speaker(
        doclab.cluster, 2, extra=("--membership-secret=memberlist-doctor",), wait=False
    )
    try:
        # A restarted speaker reports once its caches have listed: slow on a loaded machine.
        found = await diagnosis_becomes(admin, key, lambda f: bool(f), within=60)
        assert causes(found) == [diagnosis.KEY_MISMATCH]
        assert "node-2 use key" in found[0].what
    finally:
        doclab.speakers.pop(2).stop()
        doclab.speakers[2] = components.start_speaker(doclab.cluster, 2)


async def test_speaker_without_a_membership_key_is_reported(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "nokey", ("node-1",))
    await diagnosis_becomes(admin, key, lambda f: f == [])
    doclab.speakers.pop(2).stop()
    doclab.speakers[2] = components.start_speaker(
        doclab.cluster, 2, extra=("--membership-secret=doctor-absent",), wait=False
    )
    try:
        found = await diagnosis_becomes(
            admin, key, lambda f: diagnosis.NO_MEMBERSHIP in causes(f), within=60
        )
        (finding,) = [f for f in found if f.cause == diagnosis.NO_MEMBERSHIP]
        assert "speakers on node-2 run without membership" in finding.what
        assert "node-1" not in finding.what
    finally:
        doclab.speakers.pop(2).stop()
        doclab.speakers[2] = components.start_speaker(doclab.cluster, 2)
    await diagnosis_becomes(admin, key, lambda f: f == [], within=60)


async def test_legacy_configmap_is_reported(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "legacy", ("node-1",))
    await diagnosis_becomes(admin, key, lambda f: f == [])
    legacy = {"metadata": {"name": "config", "namespace": kube.CONFIG_NS}, "data": {"config": ""}}
    await admin.create(k8s.CONFIGMAPS, legacy, kube.CONFIG_NS)
    try:
        found = await findings(admin, key)
        assert [(f.cause, f.subject) for f in found] == [
            (diagnosis.DEPRECATED, f"ConfigMap/{kube.CONFIG_NS}/config")
        ]
    finally:
        await admin.delete(k8s.CONFIGMAPS, "config", kube.CONFIG_NS)


async def test_ipvs_without_strict_arp_is_reported(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "ipvs", ("node-1",))
    await diagnosis_becomes(admin, key, lambda f: f == [])
    conf = (
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n"
    )
    proxy = {
        "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
        "data": {"config.conf": conf},
    }
    await admin.create(k8s.CONFIGMAPS, proxy, "kube-system")
    try:
        found = await findings(admin, key)
        assert [(f.cause, f.subject) for f in found] == [
            (diagnosis.STRICT_ARP, "ConfigMap/kube-system/kube-proxy")
        ]
        strict = conf + "ipvs:\n  strictARP: true\n"
        await admin.patch(
            k8s.CONFIGMAPS, "kube-proxy", {"data": {"config.conf": strict}}, "kube-system"
        )
        assert await findings(admin, key) == []
    finally:
        await admin.delete(k8s.CONFIGMAPS, "kube-proxy", "kube-system")


async def test_webhook_without_endpoint_is_reported(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "hooked", ("node-1",))
    await diagnosis_becomes(admin, key, lambda f: f == [])
    webhook = components.WEBHOOK_SERVICE
    await admin.delete(k8s.ENDPOINT_SLICES, f"{webhook}-lab", kube.CONFIG_NS)
    try:
        found = await findings(admin, key)
        assert [(f.cause, f.subject) for f in found] == [
            (diagnosis.WEBHOOK, f"Service/{kube.CONFIG_NS}/{webhook}")
        ]
    finally:
        components.install_webhook(doclab.cluster, doclab.cluster.ctl.ipv4)


async def test_stopped_controller_is_reported(
    doclab: DoctorLab, admin: k8s.Client, namespace: str
) -> None:
    key = await service(admin, doclab, namespace, "leaderless", ("node-1",))
    await diagnosis_becomes(admin, key, lambda f: f == [])
    assert doclab.controller is not None
    doclab.controller.stop()
    try:
        # The controller hands its Lease over on SIGTERM; else it expires (15 s).
        found = await diagnosis_becomes(admin, key, lambda f: bool(f), within=25)
        assert causes(found) == [diagnosis.CONTROLLER]
    finally:
        doclab.controller = components.start_controller(doclab.cluster)
