"""`ironlb migrate` and the takeover of an installed MetalLB, against the real API server.

The converted legacy ConfigMaps and v1beta1 objects (tests/data/migrate, written from MetalLB's
documentation) are applied through the CLI and accepted by the API server; a controller on them
allocates as the pools say and adopts what MetalLB left: Service addresses with their
`metallb.io/ip-allocated-from-pool` annotation, and the `memberlist` Secret owned by MetalLB's
Deployment. MetalLB's own CRDs (from its Go module) make `ironlb migrate crds` and the chart refuse
until `ironlb migrate crds --apply` replaces them, keeping every object.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ironlb.core import config, migrate
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, metallb
from support import kube

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "migrate"
CHART = REPO / "deploy" / "helm" / "ironlb"
LB_CLASS = "ironlb.io/migrate-test"
RESOURCES = {
    "IPAddressPool": k8s.IP_ADDRESS_POOLS,
    "L2Advertisement": k8s.L2_ADVERTISEMENTS,
    "BGPAdvertisement": k8s.BGP_ADVERTISEMENTS,
    "BGPPeer": k8s.BGP_PEERS,
    "BFDProfile": k8s.BFD_PROFILES,
    "Community": k8s.COMMUNITIES,
}


def ironlb(cluster: lab_cluster.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, with the admin's kubeconfig."""
    env = {**os.environ, "KUBECONFIG": str(cluster.control_plane.admin_kubeconfig)}
    return subprocess.run(
        [sys.executable, "-m", "ironlb.cli", "migrate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def converted(name: str, namespace: str) -> list[dict[str, Any]]:
    """What the converter makes of a fixture, in `namespace`."""
    docs = migrate.load_all((DATA / name).read_text())
    if docs[0]["kind"] == "ConfigMap":
        text = migrate.configmap_data(docs[0])
        assert text is not None
        result = migrate.from_configmap(text, namespace)
    else:
        moved = [{**d, "metadata": {**d["metadata"], "namespace": namespace}} for d in docs]
        result = migrate.from_v1beta1(moved)
    assert result.problems == ()
    return list(result.objects)


async def stored(admin: k8s.Client, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return await admin.get(RESOURCES[obj["kind"]], meta["name"], meta["namespace"])


async def assert_stored(admin: k8s.Client, obj: dict[str, Any]) -> dict[str, Any]:
    """The object is in the cluster with every field written (the API server may add its
    defaults, such as BGPPeer's disableMP, but must not prune or change one)."""
    got = await stored(admin, obj)
    kept = {k: got["spec"].get(k, "<pruned>") for k in obj["spec"]}
    assert kept == obj["spec"], f"{obj['kind']} {obj['metadata']['name']}"
    return got


async def new_namespace(admin: k8s.Client) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    await admin.create(
        k8s.NAMESPACES, {"metadata": {"name": name, "labels": {kube.MODULE_LABEL: "test_migrate"}}}
    )
    return name


@pytest.fixture
def controllers(cluster: lab_cluster.Cluster) -> Iterator[list[components.Process]]:
    procs: list[components.Process] = []
    yield procs
    for p in procs:
        p.kill()


@pytest.mark.parametrize("fixture", ["configmap-bgp.yaml", "addresspools.yaml"])
async def test_converted_files_apply_unchanged(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str, fixture: str
) -> None:
    command = "configmap" if fixture.startswith("configmap") else "addresspools"
    dry = ironlb(cluster, command, str(DATA / fixture), "-n", namespace)
    assert dry.returncode == 0, dry.stderr
    expected = converted(fixture, namespace)
    assert migrate.load_all(dry.stdout) == expected
    items, _ = await admin.list_all(k8s.IP_ADDRESS_POOLS, namespace)
    assert items == [], "written without --apply"

    applied = ironlb(cluster, command, str(DATA / fixture), "-n", namespace, "--apply")
    assert applied.returncode == 0, applied.stderr
    for obj in expected:
        config.parse(await assert_stored(admin, obj))


async def test_unconvertible_input_applies_nothing(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    fixture = str(DATA / "configmap-unconvertible.yaml")
    proc = ironlb(cluster, "configmap", fixture, "-n", namespace, "--apply")
    assert proc.returncode == 1
    problems = [line for line in proc.stderr.splitlines() if line.startswith("not converted: ")]
    assert len(problems) == 7, proc.stderr
    assert "address-pools[0].protocol: 'arp' is neither layer2 nor bgp" in proc.stderr
    for res in RESOURCES.values():
        assert (await admin.list_all(res, namespace))[0] == [], res.kind


async def test_legacy_configmap_in_cluster_allocates_and_adopts_metallb_state(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controllers: list[components.Process],
) -> None:
    (cm,) = migrate.load_all((DATA / "configmap-layer2.yaml").read_text())
    cm["metadata"]["namespace"] = namespace
    await admin.create(k8s.CONFIGMAPS, cm, namespace)
    proc = ironlb(cluster, "configmap", "-n", namespace, "--apply")
    assert proc.returncode == 0, proc.stderr
    for obj in converted("configmap-layer2.yaml", namespace):
        await assert_stored(admin, obj)

    # What MetalLB leaves: an allocated Service, and its memberlist Secret owned by its
    # controller's Deployment.
    kept = kube.service("kept", loadBalancerClass=LB_CLASS)
    kept["metadata"]["annotations"] = {"metallb.io/ip-allocated-from-pool": "default"}
    await admin.create(k8s.SERVICES, kept, namespace)
    await admin.patch(
        k8s.SERVICES,
        "kept",
        {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.10.240", "ipMode": "VIP"}]}}},
        namespace,
        sub="status",
    )
    deployment = await admin.create(
        k8s.Resource("apps", "v1", "Deployment", "deployments"),
        {
            "metadata": {"name": "controller"},
            "spec": {
                "selector": {"matchLabels": {"app": "metallb"}},
                "template": {
                    "metadata": {"labels": {"app": "metallb"}},
                    "spec": {"containers": [{"name": "c", "image": "metallb"}]},
                },
            },
        },
        namespace,
    )
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "controller",
        "uid": deployment["metadata"]["uid"],
    }
    key = base64.b64encode(b"metallb-key").decode()
    await admin.create(
        k8s.SECRETS,
        {
            "metadata": {"name": "memberlist", "ownerReferences": [owner]},
            "data": {"secretkey": key},
        },
        namespace,
    )

    # Pending Services the controller finds beside the adopted one on its first pass: given
    # out before `kept` is reserved, its address would go to the first of them.
    fresh = kube.service("fresh", loadBalancerClass=LB_CLASS)
    chosen = kube.service(
        "chosen",
        loadBalancerClass=LB_CLASS,
        annotations={"metallb.io/address-pool": "expensive"},
    )
    unchosen = kube.service("unchosen", loadBalancerClass=LB_CLASS)
    for svc in (fresh, chosen, unchosen):
        await admin.create(k8s.SERVICES, svc, namespace)

    admin_kubeconfig = cluster.control_plane.admin_kubeconfig
    controllers.append(
        components.start_controller(
            cluster,
            webhook=False,
            extra=(
                f"--kubeconfig={admin_kubeconfig}",
                f"--namespace={namespace}",
                f"--lb-class={LB_CLASS}",
                "--identity=migrate",
            ),
        )
    )

    async def all_assigned() -> dict[str, list[str]]:
        found = {
            n: await kube.ingress(admin, namespace, n) for n in ("fresh", "chosen", "unchosen")
        }
        return found if all(found.values()) else {}

    assigned = await kube.eventually(all_assigned, within=20, what="addresses assigned")
    # The adopted address is not given again; the pool without auto-assign serves only the
    # Service that asks for it, and avoids the .0 and .255 addresses.
    default_pool = {f"198.18.10.{i}" for i in range(241, 251)}
    assert set(assigned["fresh"]) | set(assigned["unchosen"]) <= default_pool, assigned
    assert assigned["fresh"] != assigned["unchosen"]
    (ip,) = assigned["chosen"]
    assert ip.startswith("198.18.11.")
    assert ip not in ("198.18.11.0", "198.18.11.255")
    # Longer than the controller takes to reconcile everything: the adopted one never moved.
    await asyncio.sleep(3)
    assert await kube.ingress(admin, namespace, "kept") == ["198.18.10.240"]
    svc = await admin.get(k8s.SERVICES, "kept", namespace)
    assert svc["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"] == "default"

    secret = await admin.get(k8s.SECRETS, "memberlist", namespace)
    assert not secret["metadata"].get("ownerReferences"), secret["metadata"]
    assert secret["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ironlb"
    assert secret["data"] == {"secretkey": key}, "the key the speakers share is kept"


async def test_backup_restores_every_object(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    objects = converted("configmap-bgp.yaml", namespace)
    applied = ironlb(
        cluster, "configmap", str(DATA / "configmap-bgp.yaml"), "-n", namespace, "--apply"
    )
    assert applied.returncode == 0, applied.stderr
    backup = ironlb(cluster, "backup", "-n", namespace)
    assert backup.returncode == 0, backup.stderr
    saved = migrate.load_all(backup.stdout)
    assert len(saved) == len(objects)
    assert f"backed up {len(objects)} objects" in backup.stderr
    for obj in objects:
        await admin.delete(RESOURCES[obj["kind"]], obj["metadata"]["name"], namespace)
    for res in RESOURCES.values():
        assert (await admin.list_all(res, namespace))[0] == []
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=backup.stdout)
    for obj in objects:
        await assert_stored(admin, obj)


class Helm:
    def __init__(self, cluster: lab_cluster.Cluster, home: Path) -> None:
        self.binary = str(cluster.control_plane.bin_dir / "helm")
        self.env = {
            **os.environ,
            "KUBECONFIG": str(cluster.control_plane.admin_kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            "HOME": str(home),
        }

    def render_against_cluster(self, namespace: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            # `template` with lookups against the cluster: what `install` renders, without
            # install's checks of the lab's own (kubectl-installed) RBAC objects.
            [self.binary, "template", "ironlb", str(CHART), "-n", namespace, "--dry-run=server"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )


async def test_metallb_crds_refused_until_replaced_keeping_objects(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str, tmp_path: Path
) -> None:
    community = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "Community",
        "metadata": {"name": "kept", "namespace": namespace},
        "spec": {"communities": [{"name": "no-advertise", "value": "65535:65282"}]},
    }
    await admin.create(k8s.COMMUNITIES, community, namespace)
    helm = Helm(cluster, tmp_path)
    assert ironlb(cluster, "crds").returncode == 0, "the lab starts with ironlb's CRDs"
    assert helm.render_against_cluster(namespace).returncode == 0
    try:
        metallb.install_crds(cluster)
        report = ironlb(cluster, "crds")
        assert report.returncode == 1
        lines = report.stdout.splitlines()
        assert len(lines) == len(metallb.CRD_KINDS), report.stdout
        assert (
            "bgppeers.metallb.io is MetalLB's, with a conversion webhook to Service"
            " metallb-system/metallb-webhook-service"
        ) in lines
        refused = helm.render_against_cluster(namespace)
        assert refused.returncode != 0
        assert "MetalLB's CRDs are still installed" in refused.stderr, refused.stderr
        assert "ironlb migrate crds --apply" in refused.stderr

        replaced = ironlb(cluster, "crds", str(CHART / "crds"), "--apply")
        assert replaced.returncode == 0, replaced.stderr
        assert replaced.stderr.count("replaced ") == len(metallb.CRD_KINDS), replaced.stderr
        again = ironlb(cluster, "crds")
        assert again.returncode == 0
        assert again.stdout.strip() == "every metallb.io CRD is ironlb's"
        assert helm.render_against_cluster(namespace).returncode == 0
        peers = json.loads(cluster.kubectl("get", "crd", "bgppeers.metallb.io", "-o", "json"))
        assert peers["spec"]["conversion"] == {"strategy": "None"}
        got = await admin.get(k8s.COMMUNITIES, "kept", namespace)
        assert got["spec"] == community["spec"]
        # ironlb's own field, which MetalLB's schema would prune, is kept.
        adv = {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "refresh", "namespace": namespace},
            "spec": {"gratuitousRefreshInterval": "5s"},
        }
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(adv))
        got = await admin.get(k8s.L2_ADVERTISEMENTS, "refresh", namespace)
        assert got["spec"].get("gratuitousRefreshInterval") == "5s"
    finally:
        # Whatever happened, the session's other tests get ironlb's CRDs back.
        cluster.kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(REPO / "deploy" / "crds")
        )


async def test_bgp_to_layer2_keeps_every_address(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controllers: list[components.Process],
) -> None:
    """Seed 004: the BGPAdvertisement of a pool replaced by an L2Advertisement; addresses come
    from the pool, so no Service changes address (announcing is the speakers' part)."""
    config_ns = await new_namespace(admin)
    pool = kube.pool("switched", "198.18.30.0/28")
    pool["metadata"]["namespace"] = config_ns
    bgp = {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "BGPAdvertisement",
        "metadata": {"name": "switched", "namespace": config_ns},
        "spec": {"ipAddressPools": ["switched"]},
    }
    l2 = {**bgp, "kind": "L2Advertisement"}
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([pool, bgp]))
    controllers.append(
        components.start_controller(
            cluster,
            webhook=False,
            extra=(
                f"--kubeconfig={cluster.control_plane.admin_kubeconfig}",
                f"--namespace={config_ns}",
                f"--lb-class={LB_CLASS}",
                "--identity=seed-004",
            ),
        )
    )
    names = [f"s{i}" for i in range(6)]
    for name in names:
        await admin.create(k8s.SERVICES, kube.service(name, loadBalancerClass=LB_CLASS), namespace)

    async def assigned() -> dict[str, list[str]]:
        found = {n: await kube.ingress(admin, namespace, n) for n in names}
        return found if all(found.values()) else {}

    before = await kube.eventually(assigned, within=20, what="addresses assigned")
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(l2))
    cluster.kubectl("delete", "bgpadvertisement", "switched", "-n", config_ns)
    # Longer than a reconcile of every Service after a configuration change.
    await asyncio.sleep(4)
    assert await assigned() == before
    events = [r for n in names for r, _ in await kube.events_for(admin, namespace, n)]
    assert events.count("IPAllocated") <= len(names), events  # none allocated again
