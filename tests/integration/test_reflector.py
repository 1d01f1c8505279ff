"""The reflector against the real API server: selectors on list and watch, changes reported
once, and a fresh list (not a silent gap) after 410 Gone."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY

from ironlb.k8s import client as k8s
from ironlb.k8s import reflector
from ironlb.lab import cluster as lab_cluster
from support import kube

pytestmark = pytest.mark.integration


def configmap(name: str, value: str = "1", labels: dict[str, str] | None = None) -> k8s.Obj:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": {"v": value}}


def value(raw: k8s.Obj) -> str:
    return str((raw.get("data") or {}).get("v", ""))


async def test_field_and_label_selectors_hold_on_list_and_on_watch(
    admin: k8s.Client, namespace: str
) -> None:
    await admin.create(k8s.CONFIGMAPS, configmap("wanted", labels={"pick": "yes"}), namespace)
    await admin.create(k8s.CONFIGMAPS, configmap("other", labels={"pick": "yes"}), namespace)
    changes: list[str] = []
    by_field = reflector.Reflector(
        admin,
        k8s.CONFIGMAPS,
        value,
        namespace=namespace,
        field_selector="metadata.name=wanted",
        on_change=changes.append,
    )
    by_label = reflector.Reflector(
        admin, k8s.CONFIGMAPS, value, namespace=namespace, label_selector="pick=yes"
    )
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(by_field.run()), tg.create_task(by_label.run())]
        await by_field.listed.wait()
        await by_label.listed.wait()
        assert list(by_field.items) == [f"{namespace}/wanted"]
        # Changes to other objects never reach a field-selected cache, list or watch.
        await admin.patch(k8s.CONFIGMAPS, "other", {"data": {"v": "2"}}, namespace)
        await admin.patch(k8s.CONFIGMAPS, "wanted", {"data": {"v": "3"}}, namespace)
        await admin.create(k8s.CONFIGMAPS, configmap("later", labels={"pick": "yes"}), namespace)
        await kube.eventually(lambda: _has(by_label, f"{namespace}/later"))
        await kube.eventually(lambda: _value_is(by_field, f"{namespace}/wanted", "3"))
        assert list(by_field.items) == [f"{namespace}/wanted"]
        assert changes == [f"{namespace}/wanted", f"{namespace}/wanted"]
        for task in tasks:
            task.cancel()


async def _has(r: reflector.Reflector[str], key: str) -> bool:
    return key in r.items


async def _value_is(r: reflector.Reflector[str], key: str, expected: str) -> bool:
    return r.items.get(key) == expected


async def test_a_gone_resource_version_leads_to_a_fresh_list(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    await admin.create(k8s.CONFIGMAPS, configmap("before"), namespace)
    changes: list[str] = []
    r = reflector.Reflector(
        admin, k8s.CONFIGMAPS, value, namespace=namespace, on_change=changes.append
    )
    await r.relist()
    stale = r._rv
    await admin.delete(k8s.CONFIGMAPS, "before", namespace)
    await admin.create(k8s.CONFIGMAPS, configmap("after"), namespace)
    # A restarted API server's watch cache starts at the current version: older ones are gone.
    await asyncio.to_thread(cluster.control_plane.restart_apiserver)
    with pytest.raises(k8s.ApiError) as gone:
        async for _ in admin.watch(k8s.CONFIGMAPS, stale, namespace, timeout_seconds=5):
            pass
    assert gone.value.gone
    changes.clear()
    async with asyncio.TaskGroup() as tg:
        r._rv = stale
        r.listed.clear()
        task = tg.create_task(r.run())
        await kube.eventually(lambda: _has(r, f"{namespace}/after"))
        task.cancel()
    assert f"{namespace}/before" not in r.items
    assert f"{namespace}/before" in changes  # the deletion in the gap is reported
    relists = REGISTRY.get_sample_value("ironlb_k8s_relists_total", {"resource": "configmaps"})
    assert relists is not None
    assert relists >= 2


# PodTemplates bypass the lab API server's watch cache (`--watch-cache-sizes=podtemplates#0`,
# ironlb.lab.kube): their watches are served by etcd, where a compaction is a real 410 Gone.
POD_TEMPLATES = k8s.Resource("", "v1", "PodTemplate", "podtemplates")


def pod_template(name: str, pick: str) -> k8s.Obj:
    return {
        "metadata": {"name": name, "labels": {"pick": pick}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "pause"}]},
        },
    }


def compact_etcd(cluster: lab_cluster.Cluster) -> int:
    """Compact etcd at its current revision (its gRPC gateway, as `etcdctl compact` does)."""

    def call(path: str, body: dict[str, object]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"http://{cluster.control_plane.address}:2379{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    revision = int(call("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
    call("/v3/kv/compaction", {"revision": revision, "physical": True})
    return revision


def restarts(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "ironlb_k8s_watch_restarts_total", {"resource": "podtemplates", "reason": reason}
    )
    return value or 0.0


async def test_an_etcd_compaction_is_a_real_410_and_the_running_reflector_lists_again(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    """A label-selected reflector's resourceVersion stays where its list left it while only
    other objects change; once etcd compacts past it, its next watch is refused with 410 Gone
    by etcd itself, and the running reflector lists again and goes on watching."""
    await admin.create(POD_TEMPLATES, pod_template("picked", "yes"), namespace)
    r = reflector.Reflector(
        admin,
        POD_TEMPLATES,
        lambda raw: str(raw["metadata"]["name"]),
        namespace=namespace,
        label_selector="pick=yes",
        watch_timeout=2,
    )
    relists = REGISTRY.get_sample_value("ironlb_k8s_relists_total", {"resource": "podtemplates"})
    gone_before, ended_before = restarts("gone"), restarts("ended")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(r.run())
        await r.listed.wait()
        listed_at = int(r._rv)
        # Unselected changes move etcd's revision, not the reflector's.
        for i in range(5):
            await admin.create(POD_TEMPLATES, pod_template(f"other-{i}", "no"), namespace)
        # Control: without a compaction, watches renewed from the old version are served.
        await kube.eventually(lambda: restarts("ended") >= ended_before + 2, within=20)
        assert restarts("gone") == gone_before
        assert int(r._rv) == listed_at
        compacted = await asyncio.to_thread(compact_etcd, cluster)
        assert compacted > listed_at
        with pytest.raises(k8s.ApiError) as gone:
            async for _ in admin.watch(POD_TEMPLATES, str(listed_at), namespace, timeout_seconds=2):
                pass
        assert gone.value.gone, gone.value
        # The running reflector meets the same 410 at its next renewal and lists again.
        await kube.eventually(lambda: restarts("gone") > gone_before, within=20, what="a 410")
        await kube.eventually(lambda: int(r._rv) >= compacted, within=20, what="a new list")
        relisted = REGISTRY.get_sample_value(
            "ironlb_k8s_relists_total", {"resource": "podtemplates"}
        )
        assert relisted is not None
        assert relisted >= (relists or 0) + 2  # the first list, and the one after the 410
        # And it watches again: a new selected object arrives.
        await admin.create(POD_TEMPLATES, pod_template("later", "yes"), namespace)
        await kube.eventually(lambda: _has(r, f"{namespace}/later"), what="later")
        assert sorted(r.items) == [f"{namespace}/later", f"{namespace}/picked"]
        task.cancel()


async def test_a_write_that_changes_nothing_parsed_is_not_reported(
    admin: k8s.Client, namespace: str
) -> None:
    """A new resourceVersion whose object parses to the same value (a pool's status counters,
    which the parser drops) is no change: reporting it made every speaker re-plan everything on
    each of the controller's counter writes."""
    await admin.create(k8s.CONFIGMAPS, configmap("cfg", labels={"a": "1"}), namespace)
    changes: list[str] = []
    r = reflector.Reflector(
        admin, k8s.CONFIGMAPS, value, namespace=namespace, on_change=changes.append
    )
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(r.run())
        await r.listed.wait()
        changes.clear()
        await admin.patch(k8s.CONFIGMAPS, "cfg", {"metadata": {"labels": {"a": "2"}}}, namespace)
        await admin.patch(k8s.CONFIGMAPS, "cfg", {"data": {"v": "2"}}, namespace)
        await kube.eventually(lambda: _value_is(r, f"{namespace}/cfg", "2"))
        # The label write came first and was seen (the watch is ordered); only the data write
        # changed the parsed value.
        assert changes == [f"{namespace}/cfg"]
        task.cancel()
