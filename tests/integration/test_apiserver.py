"""The real API server: CRDs installed, RBAC enforced, Services and their status subresource."""

from __future__ import annotations

import json
import re

import pytest

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import kube

pytestmark = pytest.mark.integration

KINDS = {
    "ipaddresspools": "v1beta1",
    "l2advertisements": "v1beta1",
    "bgpadvertisements": "v1beta1",
    "bfdprofiles": "v1beta1",
    "communities": "v1beta1",
    "servicel2statuses": "v1beta1",
    "servicebgpstatuses": "v1beta1",
    "bgppeers": "v1beta2",
    "configurationstates": "v1beta1",
}
IRONLB_KINDS = {"speakerreports": "v1alpha1"}
"""ironlb's own group (ironlb.io): what MetalLB has no kind for."""


def lb_service(name: str) -> k8s.Obj:
    return {
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


async def test_crds_are_served_and_established(admin: k8s.Client) -> None:
    crds, _ = await admin.list_all(k8s.CRDS, label_selector="app.kubernetes.io/part-of=ironlb")
    by_name = {c["metadata"]["name"]: c for c in crds}
    served = {f"{plural}.metallb.io": v for plural, v in KINDS.items()}
    served |= {f"{plural}.ironlb.io": v for plural, v in IRONLB_KINDS.items()}
    assert set(by_name) == set(served)
    for name, storage in served.items():
        crd = by_name[name]
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions["Established"] == "True"
        assert [v["name"] for v in crd["spec"]["versions"] if v["storage"]] == [storage]


def test_kubectl_lists_the_crds(cluster: lab_cluster.Cluster) -> None:
    out = cluster.kubectl("get", "crd", "-o", "name")
    for plural in KINDS:
        assert f"customresourcedefinition.apiextensions.k8s.io/{plural}.metallb.io" in out


async def test_controller_identity_patches_service_status(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    await admin.create(k8s.SERVICES, lb_service("web"), namespace)
    kubeconfig = cluster.service_account_kubeconfig("ironlb-controller")
    async with k8s.Client.from_config(kubeconfig) as controller:
        patched = await controller.patch(
            k8s.SERVICES,
            "web",
            {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.240", "ipMode": "VIP"}]}}},
            namespace,
            sub="status",
        )
        assert patched["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.18.0.240"
        # The restriction is real: a controller may not delete Services or read Secrets.
        with pytest.raises(k8s.ApiError) as denied:
            await controller.delete(k8s.SERVICES, "web", namespace, missing_ok=False)
        assert denied.value.forbidden
        with pytest.raises(k8s.ApiError) as denied:
            await controller.list_all(k8s.SECRETS, "kube-system")
        assert denied.value.forbidden
    seen = await admin.get(k8s.SERVICES, "web", namespace)
    assert seen["status"]["loadBalancer"]["ingress"] == [{"ip": "198.18.0.240", "ipMode": "VIP"}]


async def test_watch_sees_changes_and_resumes_from_a_resource_version(
    admin: k8s.Client, namespace: str
) -> None:
    _, rv = await admin.list_all(k8s.SERVICES, namespace)
    await admin.create(k8s.SERVICES, lb_service("a"), namespace)
    await admin.create(k8s.SERVICES, lb_service("b"), namespace)
    seen = []
    async for event in admin.watch(k8s.SERVICES, rv, namespace, timeout_seconds=5):
        seen.append((event.type, event.object["metadata"]["name"]))
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "a"), ("ADDED", "b")]


async def test_errors_are_translated_at_the_boundary(admin: k8s.Client, namespace: str) -> None:
    with pytest.raises(k8s.ApiError) as missing:
        await admin.get(k8s.SERVICES, "nope", namespace)
    assert missing.value.not_found
    await admin.create(k8s.SERVICES, lb_service("dup"), namespace)
    with pytest.raises(k8s.ApiError) as dup:
        await admin.create(k8s.SERVICES, lb_service("dup"), namespace)
    assert dup.value.conflict


def test_api_server_and_kubectl_report_the_release_they_are_built_from(
    cluster: lab_cluster.Cluster,
) -> None:
    """Helm checks a chart's kubeVersion against the server's version and `kubectl version`
    parses it: a build without version ldflags reports v0.0.0-master+$Format:%H$."""
    go_mod = (kube.REPO_ROOT / "dev" / "kube" / "apiserver" / "go.mod").read_text()
    found = re.search(r"^\s*k8s\.io/kubernetes (v(\d+)\.(\d+)\.\d+)$", go_mod, re.M)
    assert found, "dev/kube/apiserver/go.mod pins no k8s.io/kubernetes version"
    release, major, minor = found.groups()
    versions = json.loads(cluster.kubectl("version", "-o", "json"))
    for side in ("serverVersion", "clientVersion"):
        info = versions[side]
        assert info["gitVersion"] == release, side
        assert (info["major"], info["minor"]) == (major, minor), side
        assert info["gitTreeState"] == "clean", side
        assert not info["buildDate"].startswith("1970"), side
