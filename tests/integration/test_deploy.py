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
WORKLOADS = {
    "controller": ("Deployment", "ironlb-controller"),
    "speaker": ("DaemonSet", "ironlb-speaker"),
}
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


OPTION = re.compile(r"^ {2}(?:-\w, )?(--[a-z0-9-]+)(?: / (--[a-z0-9-]+))?", re.MULTILINE)
# click wraps help text, possibly inside a long name: whitespace is removed from each match.
ENVVAR = re.compile(r"\[env var:\s*([A-Z0-9_\s]+?)\s*[;\]]")


@pytest.fixture(scope="module")
def cli_help() -> dict[str, tuple[set[str], set[str]]]:
    """Per component, the flags and environment variables its --help lists (the installed
    console script, as the image runs it)."""
    ironlb = Path(sys.executable).with_name("ironlb")
    listed: dict[str, tuple[set[str], set[str]]] = {}
    for component in WORKLOADS:
        proc = subprocess.run(
            [str(ironlb), component, "--help"], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 0, proc.stderr
        flags = {f for m in OPTION.finditer(proc.stdout) for f in m.groups() if f}
        envvars = {re.sub(r"\s+", "", m) for m in ENVVAR.findall(proc.stdout)}
        assert "--log-format" in flags, proc.stdout
        assert f"IRONLB_{component.upper()}_LOG_FORMAT" in envvars, proc.stdout
        listed[component] = (flags, envvars)
    return listed


def dry_run_apply(cluster: lab_cluster.Cluster, *args: str, stdin: str | None = None) -> list[str]:
    """`kubectl apply --dry-run=server`: the API server validates and admits every object, stores
    nothing. Returns kubectl's line per object."""
    proc = cluster.control_plane.run_kubectl(
        "apply", "--dry-run=server", *args, stdin=stdin, check=False
    )
    assert proc.returncode == 0, f"the API server refused:\n{proc.stderr}"
    return [line for line in proc.stdout.splitlines() if line.endswith("(server dry run)")]


def test_kustomization_installs_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {
        str(path.relative_to(DEPLOY)) for d in INSTALLED for path in (DEPLOY / d).glob("*.yaml")
    }
    assert listed == present, "deploy/kustomization.yaml must list exactly the files under " + (
        ", ".join(f"deploy/{d}/" for d in INSTALLED)
    )


def test_image_and_chart_carry_the_package_version(kustomized: list[Doc], chart: list[Doc]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "ghcr.io/ironlb/ironlb", "newTag": version}]
    chart_meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart_meta["version"], chart_meta["appVersion"]) == (version, version)
    for docs in (kustomized, chart):
        for component in WORKLOADS:
            assert container(docs, component)["image"] == f"ghcr.io/ironlb/ironlb:{version}"


def test_kustomize_output_is_accepted_by_the_api_server(
    cluster: lab_cluster.Cluster, kustomized: list[Doc]
) -> None:
    applied = dry_run_apply(cluster, "-k", str(DEPLOY))
    assert len(applied) == len(kustomized), applied


@pytest.mark.parametrize("values", ["default", "full"])
def test_helm_lint_is_clean(helm: Helm, full_values: Path, values: str) -> None:
    args = ["--values", str(full_values)] if values == "full" else []
    proc = helm.run("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", ["default", "full"])
def test_helm_output_is_accepted_by_the_api_server(
    cluster: lab_cluster.Cluster, renders: dict[str, str], values: str
) -> None:
    applied = dry_run_apply(cluster, "-f", "-", stdin=renders[values])
    assert len(applied) == len(documents(renders[values])), applied


def test_chart_crds_are_deploy_crds() -> None:
    fix = f"cp {DEPLOY / 'crds'}/*.yaml {CHART / 'crds'}/"
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == sorted(p.name for p in (DEPLOY / "crds").iterdir()), fix
    for name in chart_crds:
        chart_crd = (CHART / "crds" / name).read_bytes()
        assert chart_crd == (DEPLOY / "crds" / name).read_bytes(), f"{name} differs: {fix}"


def comparable(doc: Doc) -> Doc:
    """An object without the labels that only say who installed it (helm adds its own)."""
    doc = copy.deepcopy(doc)
    doc["metadata"].pop("labels", None)
    template = doc.get("spec", {}).get("template")
    if template is not None:
        template["metadata"].pop("labels", None)
    return doc


def test_chart_defaults_install_what_kustomize_installs(
    kustomized: list[Doc], chart: list[Doc]
) -> None:
    # The chart leaves the namespace to `helm install --namespace` (see values.yaml).
    expected = {k: comparable(d) for k, d in by_key(kustomized).items() if k[0] != "Namespace"}
    rendered = {k: comparable(d) for k, d in by_key(chart).items()}
    assert sorted(rendered) == sorted(expected)
    # RBAC is compared by the rights it grants (test below); everything else must be equal.
    for k in sorted(expected):
        if k[0] not in RBAC_KINDS:
            assert rendered[k] == expected[k], k


def grants(docs: Iterable[Doc]) -> dict[Key, object]:
    """RBAC objects reduced to what they grant: one (group, resource, verb, name) per right, so
    rules split or ordered differently compare equal."""
    out: dict[Key, object] = {}
    for doc in docs:
        kind = doc["kind"]
        if kind not in RBAC_KINDS:
            continue
        if kind in ("Role", "ClusterRole"):
            out[key(doc)] = {
                (group, resource, verb, name)
                for rule in doc.get("rules", [])
                for group in rule.get("apiGroups", ["(non-resource)"])
                for resource in rule.get("resources", []) + rule.get("nonResourceURLs", [])
                for verb in rule["verbs"]
                for name in rule.get("resourceNames") or ["(any)"]
            }
        elif kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = doc["roleRef"]
            subjects = {(s["kind"], s["name"], s.get("namespace", "")) for s in doc["subjects"]}
            out[key(doc)] = (ref["kind"], ref["name"], subjects)
        else:
            out[key(doc)] = "exists"
    return out


def test_chart_rbac_grants_what_deploy_rbac_grants(chart: list[Doc]) -> None:
    deploy_rbac = [
        d for path in sorted((DEPLOY / "rbac").glob("*.yaml")) for d in documents(path.read_text())
    ]
    expected = grants(deploy_rbac)
    assert {k[0] for k in expected} == RBAC_KINDS
    assert grants(chart) == expected


SOURCES = ("kustomize", "helm defaults", "helm with every option")


def rendered_by(kustomized: list[Doc], renders: dict[str, str]) -> dict[str, list[Doc]]:
    docs = (kustomized, documents(renders["default"]), documents(renders["full"]))
    return dict(zip(SOURCES, docs, strict=True))


def test_selectors_match_the_pods(kustomized: list[Doc], renders: dict[str, str]) -> None:
    for source, docs in rendered_by(kustomized, renders).items():
        objects = by_key(docs)
        pods = {
            component: objects[(kind, name, NAMESPACE)]["spec"]["template"]["metadata"]["labels"]
            for component, (kind, name) in WORKLOADS.items()
        }
        for doc in docs:
            spec = doc.get("spec", {})
            selector = spec.get("selector")
            if doc["kind"] in ("Deployment", "DaemonSet", "PodDisruptionBudget"):
                selector = selector["matchLabels"]
            elif doc["kind"] != "Service":
                continue
            matched = [c for c, labels in pods.items() if selector.items() <= labels.items()]
            assert len(matched) == 1, f"{source}: {key(doc)} selects {matched}"
        # The webhook Service reaches the controller's webhook port.
        webhook = objects[("Service", "ironlb-webhook-service", NAMESPACE)]["spec"]
        ports = {p["name"]: p["containerPort"] for p in container(docs, "controller")["ports"]}
        assert webhook["ports"][0]["targetPort"] == ports["webhook"], source


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("component", sorted(WORKLOADS))
def test_containers_use_only_what_the_cli_has(
    kustomized: list[Doc],
    renders: dict[str, str],
    cli_help: dict[str, tuple[set[str], set[str]]],
    source: str,
    component: str,
) -> None:
    spec = container(rendered_by(kustomized, renders)[source], component)
    flags, envvars = cli_help[component]
    command, *args = spec["args"]
    assert command == component
    for arg in args:
        flag = arg.split("=", 1)[0]
        assert flag in flags, f"`ironlb {component} --help` does not list {flag}"
    try:
        params = cli.cli.commands[component].make_context(component, list(args)).params
    except click.ClickException as e:
        pytest.fail(f"`ironlb {component} {' '.join(args)}`: {e.format_message()}")
    for env in spec.get("env", []):
        name = env["name"]
        if name.startswith("IRONLB_"):
            assert name in envvars, f"`ironlb {component} --help` does not list {name}"
        else:
            # Downward API: a variable the component's settings read for their defaults.
            assert "valueFrom" in env, name
            assert f'"{name}"' in inspect.getsource(SETTINGS[component]), name
    # Probes and declared ports are the ones the program serves with these arguments.
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports["metrics"] == params["metrics_port"]
    if component == "controller":
        assert ports["webhook"] == params["webhook_port"]
    else:
        assert ports["membership"] == params["membership_port"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert spec[probe]["httpGet"] == {"path": path, "port": "metrics"}


def pod(docs: list[Doc], component: str, namespace: str) -> str:
    """The Pod a workload would create (what admission judges: priority class, service
    account, Pod Security), as a manifest."""
    kind, name = WORKLOADS[component]
    template = by_key(docs)[(kind, name, NAMESPACE)]["spec"]["template"]
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-dry-run", "namespace": namespace},
            "spec": template["spec"],
        }
    )


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("component", sorted(WORKLOADS))
def test_workload_pods_are_admitted(
    cluster: lab_cluster.Cluster,
    kustomized: list[Doc],
    renders: dict[str, str],
    source: str,
    component: str,
) -> None:
    manifest = pod(rendered_by(kustomized, renders)[source], component, NAMESPACE)
    proc = cluster.control_plane.run_kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=manifest, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_controller_pod_meets_the_restricted_pod_security_standard(
    cluster: lab_cluster.Cluster, kustomized: list[Doc]
) -> None:
    """The controller needs no privilege at all: its pod is admitted by a namespace enforcing
    the `restricted` Pod Security Standard (the speaker, on the host network, cannot be)."""
    namespace = f"t-psa-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    cluster.kubectl("create", "serviceaccount", "ironlb-controller", "-n", namespace)
    proc = cluster.control_plane.run_kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=pod(kustomized, "controller", namespace),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PodSecurity" not in proc.stderr, proc.stderr
