"""`kubectl apply -k deploy/` on real nodes, and Pod Security: the speaker (host network, NET_RAW
and NET_ADMIN) needs a namespace that admits privileged pods. deploy/ labels metallb-system
`enforce: privileged`; under `baseline` the speaker pods are refused and the DaemonSet stays at 0.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ironlb.lab import cluster as lab_cluster

from .conftest import RealLab, real_lab, wait

pytestmark = pytest.mark.e2e

NS = "metallb-system"
SPEAKERS = "app.kubernetes.io/name=ironlb,app.kubernetes.io/component=speaker"


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLab]:
    """One real node, nothing of ironlb installed."""
    with real_lab(tmp_path_factory.mktemp("kustomize"), node_count=1, install=False) as lab:
        yield lab


def overlay(lab: RealLab, where: Path, enforce: str) -> Path:
    """A kustomization over deploy/ that uses the lab's image (never pulled) and sets the
    namespace's Pod Security level, as a user's overlay would."""
    repo, _, tag = lab.rc.images["ironlb"].rpartition(":")
    where.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(lab_cluster.DEPLOY, where)],
        "images": [{"name": "ghcr.io/ironlb/ironlb", "newName": repo, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Namespace", "name": NS},
                "patch": yaml.safe_dump(
                    [
                        {
                            "op": "replace",
                            "path": "/metadata/labels/pod-security.kubernetes.io~1enforce",
                            "value": enforce,
                        }
                    ]
                ),
            },
            *(
                {
                    "target": {"kind": kind},
                    "patch": yaml.safe_dump(
                        [
                            {
                                "op": "add",
                                "path": "/spec/template/spec/containers/0/imagePullPolicy",
                                "value": "Never",
                            }
                        ]
                    ),
                }
                for kind in ("Deployment", "DaemonSet")
            ),
        ],
    }
    (where / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return where


def speaker_status(lab: RealLab) -> dict[str, int]:
    status = lab.json("daemonset", "ironlb-speaker", "-n", NS)["status"]
    return {k: int(status.get(k, 0)) for k in ("desiredNumberScheduled", "numberReady")}


def test_apply_k_installs_and_pod_security_baseline_refuses_the_speaker(
    bare: RealLab, tmp_path: Path
) -> None:
    # Under baseline: the DaemonSet exists, its pods are refused (and say why in Events).
    bare.kubectl("apply", "--server-side", "-k", str(overlay(bare, tmp_path / "b", "baseline")))
    wait(lambda: speaker_status(bare)["desiredNumberScheduled"] == 1, 60, "a speaker wanted")
    events = wait(
        lambda: [
            e
            for e in bare.json("events", "-n", NS)["items"]
            if e.get("reason") == "FailedCreate"
            and "ironlb-speaker" in str(e.get("involvedObject"))
        ],
        60,
        "FailedCreate events of the speaker DaemonSet",
    )
    assert "violates PodSecurity" in events[0]["message"]
    assert speaker_status(bare)["numberReady"] == 0
    assert not bare.pods(NS, SPEAKERS)

    # deploy/ as shipped: privileged. The speaker comes up; every pod Ready.
    bare.kubectl("apply", "--server-side", "-k", str(overlay(bare, tmp_path / "p", "privileged")))
    wait(lambda: speaker_status(bare)["numberReady"] == 1, 120, "the speaker Ready")
    bare.kubectl(
        "wait",
        "--for=condition=Available",
        "--timeout=120s",
        "deployment/ironlb-controller",
        "-n",
        NS,
    )
    pods = bare.pods(NS, "app.kubernetes.io/part-of=ironlb")
    assert pods
    for p in pods:
        conditions = {c["type"]: c["status"] for c in p["status"]["conditions"]}
        assert conditions["Ready"] == "True", p["metadata"]["name"]
