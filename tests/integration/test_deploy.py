"""What users install: `kubectl apply -k deploy/` and the Helm chart deploy/helm/ironlb.

Both render; the real API server accepts every object (server-side dry run, so nothing is
installed); the chart installs the same objects as kustomize, with the same RBAC rules and
byte-identical CRDs; and the containers pass only flags `ironlb <component> --help` lists, with
values the CLI parses, on the ports the CLI serves. So neither install path can drift from the
other or from the program.

helm is built by dev/kube/build.sh with kube-apiserver (`make test` runs it first): a missing helm
fails these tests, it never skips them.
"""

from __future__ import annotations

import copy
import inspect
import os
import re
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from ironlb import cli
from ironlb.controller import settings as controller_settings
from ironlb.lab import cluster as lab_cluster
from ironlb.speaker import settings as speaker_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "ironlb"
NAMESPACE = lab_cluster.CONFIG_NAMESPACE
# Subdirectories of deploy/ that `kubectl apply -k deploy/` must install completely.
INSTALLED = ("crds", "rbac", "webhook", "workloads")
WORKLOADS = {"controller": ("Deployment", "ironlb-controller"), "speaker": ("DaemonSet", "ironlb-speaker")}
# The modules whose settings read the downward-API variables the manifests set.
SETTINGS = {"controller": controller_settings, "speaker": speaker_settings}
RBAC_KINDS = {"ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
# Every optional branch of the chart's templates, so that it too is linted and validated.
FULL_VALUES = {
    "image": {"digest": "sha256:" + "0" * 64},
    "imagePullSecrets": ["registry"],
    "loadBalancerClass": "ironlb.io/test",
    "logFormat": "json",
    "logLevel": "debug",
    "controller": {
        "replicas": 3,
        "priorityClassName": "system-cluster-critical",
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "infra", "operator": "Exists"}]}
                    ]
                }
            }
        },
        "podAnnotations": {"example.com/team": "network"},
        "podDisruptionBudget": {"enabled": False},
        "extraArgs": ["--workers=32", "--lease-duration=20"],
    },
    "speaker": {
        "ignoreExcludeLB": True,
        "priorityClassName": "",
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "edge", "operator": "Exists"}]}
                    ]
                }
            }
        },
        "podAnnotations": {"example.com/team": "network"},
        "extraArgs": ["--probe-interval=0.2", "--no-membership"],
    },
    "metrics": {"services": False},
}

Doc = dict[str, Any]
Key = tuple[str, str, str]  # kind, name, namespace


def documents(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(doc: Doc) -> Key:
    meta = doc["metadata"]
    return doc["kind"], meta["name"], meta.get("namespace", "")


def by_key(docs: Iterable[Doc]) -> dict[Key, Doc]:
    return {key(d): d for d in docs}


def container(docs: Iterable[Doc], component: str) -> Doc:
    kind, name = WORKLOADS[component]
    workload = by_key(docs)[(kind, name, NAMESPACE)]
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


class Helm:
    """The helm binary, with its cache and configuration in a directory of this test run."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )

    def template(self, *args: str) -> str:
        proc = self.run("template", "ironlb", str(CHART), "--namespace", NAMESPACE, *args)
        assert proc.returncode == 0, f"helm template {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def helm(cluster: lab_cluster.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = cluster.control_plane.bin_dir / "helm"
    if not os.access(binary, os.X_OK):
        pytest.fail(
            f"helm is not built in {binary.parent}: run dev/kube/build.sh (`make test` does), "
            "or point IRONLB_KUBE_BIN_DIR at a directory that has it"
        )
    return Helm(binary, tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="module")
def full_values(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("values") / "full.yaml"
    path.write_text(yaml.safe_dump(FULL_VALUES))
    return path


@pytest.fixture(scope="module")
def kustomized(cluster: lab_cluster.Cluster) -> list[Doc]:
    return documents(cluster.kubectl("kustomize", str(DEPLOY)))


@pytest.fixture(scope="module")
def renders(helm: Helm, full_values: Path) -> dict[str, str]:
    """The chart rendered with its defaults and with every option set, CRDs included."""
    return {
        "default": helm.template("--include-crds"),
        "full": helm.template("--include-crds", "--values", str(full_values)),
    }


@pytest.fixture(scope="module")
def chart(renders: dict[str, str]) -> list[Doc]:
    return documents(renders["default"])


@dataclass_like := None  # placeholder removed below
