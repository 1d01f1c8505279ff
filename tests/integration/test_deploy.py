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
from collections.abc import Iterable, Iterator
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
    # MetalLB's spelling of "warning".
    "logLevel": "warn",
    # What a parent chart passes to its subcharts.
    "global": {"imageRegistry": "registry.example.com"},
    "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5},
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
        "podCIDRs": {"enabled": True, "peers": ["tor-a"], "communities": ["65000:100"]},
        # Beside MetalLB's speakers while switching from it (README).
        "metricsPort": 7473,
        "membershipPort": 7947,
    },
    "metrics": {"services": True},
    "prometheus": {
        "serviceMonitor": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "interval": "30s",
        },
        "podMonitor": {"enabled": True, "interval": "15s"},
        "prometheusRule": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "bgpSessionDown": {"enabled": True, "labels": {"severity": "page"}},
            "extraAlerts": [{"alert": "IronlbDown", "expr": 'up{job="ironlb"} == 0', "for": "5m"}],
        },
    },
}
# The Prometheus operator's kinds, as minimal CRDs (the operator is not in the lab): enough for
# the API server to accept, in a dry run, the objects the chart renders for it.
MONITORING_KINDS = {
    "ServiceMonitor": "servicemonitors",
    "PodMonitor": "podmonitors",
    "PrometheusRule": "prometheusrules",
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
        "no-webhook": helm.template("--include-crds", "--set", "webhook.enabled=false"),
    }


def kustomize_with(cluster: lab_cluster.Cluster, workdir: Path, *components: str) -> list[Doc]:
    """`kubectl kustomize` of a user's kustomization: deploy/ plus some of deploy/components/."""
    workdir.mkdir(parents=True, exist_ok=True)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY, workdir)],
        "components": [os.path.relpath(DEPLOY / "components" / c, workdir) for c in components],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return documents(cluster.kubectl("kustomize", str(workdir)))


@pytest.fixture(scope="module")
def kustomized_without_webhook(
    cluster: lab_cluster.Cluster, tmp_path_factory: pytest.TempPathFactory
) -> list[Doc]:
    return kustomize_with(cluster, tmp_path_factory.mktemp("overlay"), "webhook-disabled")


@pytest.fixture(scope="module")
def monitoring_crds(cluster: lab_cluster.Cluster) -> Iterator[None]:
    crds = [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
        for kind, plural in MONITORING_KINDS.items()
    ]
    manifest = yaml.safe_dump_all(crds)
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=manifest)
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{plural}.monitoring.coreos.com" for plural in MONITORING_KINDS.values()),
    )
    yield
    cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=manifest)


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


@pytest.mark.parametrize("values", ["default", "full", "no-webhook"])
def test_helm_lint_is_clean(helm: Helm, full_values: Path, values: str) -> None:
    args = {
        "default": [],
        "full": ["--values", str(full_values)],
        "no-webhook": ["--set", "webhook.enabled=false"],
    }[values]
    proc = helm.run("lint", "--strict", str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", ["default", "full", "no-webhook"])
def test_helm_output_is_accepted_by_the_api_server(
    cluster: lab_cluster.Cluster, renders: dict[str, str], monitoring_crds: None, values: str
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


SOURCES = (
    "kustomize",
    "kustomize without webhook",
    "helm defaults",
    "helm with every option",
    "helm without webhook",
)


@pytest.fixture(scope="module")
def rendered_by(
    kustomized: list[Doc], kustomized_without_webhook: list[Doc], renders: dict[str, str]
) -> dict[str, list[Doc]]:
    docs = (
        kustomized,
        kustomized_without_webhook,
        documents(renders["default"]),
        documents(renders["full"]),
        documents(renders["no-webhook"]),
    )
    return dict(zip(SOURCES, docs, strict=True))


def test_selectors_match_the_pods(rendered_by: dict[str, list[Doc]]) -> None:
    for source, docs in rendered_by.items():
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
        ports = {p["name"]: p["containerPort"] for p in container(docs, "controller")["ports"]}
        webhook = objects.get(("Service", "ironlb-webhook-service", NAMESPACE))
        if "without webhook" in source:
            assert webhook is None, source
            assert "webhook" not in ports, source
            continue
        assert webhook is not None, source
        assert webhook["spec"]["ports"][0]["targetPort"] == ports["webhook"], source


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("component", sorted(WORKLOADS))
def test_containers_use_only_what_the_cli_has(
    rendered_by: dict[str, list[Doc]],
    cli_help: dict[str, tuple[set[str], set[str]]],
    source: str,
    component: str,
) -> None:
    spec = container(rendered_by[source], component)
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
        assert ports.get("webhook", 0) == params["webhook_port"]
    else:
        assert ports["membership"] == params["membership_port"]
        # Served from the start, before the caches list: a slow API server is not a kill loop.
        assert spec["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert (
            spec["startupProbe"]["periodSeconds"] * spec["startupProbe"]["failureThreshold"] >= 120
        )
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
    rendered_by: dict[str, list[Doc]],
    source: str,
    component: str,
) -> None:
    manifest = pod(rendered_by[source], component, NAMESPACE)
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


# --- Pod Security ----------------------------------------------------------------------------

PRIVILEGED = {
    f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")
}


def psa_namespace(cluster: lab_cluster.Cluster, labels: dict[str, str]) -> str:
    """A fresh namespace with these labels and the speaker's service account."""
    namespace = f"t-psa-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": labels},
    }
    cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump(body))
    cluster.kubectl("create", "serviceaccount", "ironlb-speaker", "-n", namespace)
    return namespace


def test_kustomize_namespace_is_privileged_for_pod_security(
    cluster: lab_cluster.Cluster, kustomized: list[Doc]
) -> None:
    (namespace,) = [d for d in kustomized if d["kind"] == "Namespace"]
    assert PRIVILEGED.items() <= namespace["metadata"]["labels"].items()
    # As the API server would store it (server-side dry run of what kustomize renders).
    proc = cluster.control_plane.run_kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=yaml.safe_dump(namespace)
    )
    stored = yaml.safe_load(proc.stdout)
    assert PRIVILEGED.items() <= stored["metadata"]["labels"].items()


def test_the_lab_api_server_enforces_pod_security(cluster: lab_cluster.Cluster) -> None:
    """The refusal below is Pod Security admission's (it is on by default): a pod a `baseline`
    namespace must refuse."""
    namespace = psa_namespace(cluster, {"pod-security.kubernetes.io/enforce": "baseline"})
    host_network = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe", "namespace": namespace},
        "spec": {
            "serviceAccountName": "ironlb-speaker",
            "hostNetwork": True,
            "containers": [{"name": "c", "image": "example"}],
        },
    }
    proc = cluster.control_plane.run_kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(host_network), check=False
    )
    assert proc.returncode != 0
    assert 'violates PodSecurity "baseline' in proc.stderr, proc.stderr


@pytest.mark.parametrize("source", ["kustomize", "helm defaults"])
def test_speaker_pods_need_the_privileged_level(
    cluster: lab_cluster.Cluster, rendered_by: dict[str, list[Doc]], source: str
) -> None:
    """Refused where `baseline` is enforced (issue 8: the DaemonSet stayed at 0), admitted in a
    namespace labelled as deploy/rbac/00-namespace.yaml labels metallb-system."""
    docs = rendered_by[source]
    baseline = psa_namespace(cluster, {"pod-security.kubernetes.io/enforce": "baseline"})
    proc = cluster.control_plane.run_kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=pod(docs, "speaker", baseline),
        check=False,
    )
    assert proc.returncode != 0, "a baseline namespace admitted the speaker"
    assert "violates PodSecurity" in proc.stderr, proc.stderr
    privileged = psa_namespace(cluster, PRIVILEGED)
    proc = cluster.control_plane.run_kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=pod(docs, "speaker", privileged),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "PodSecurity" not in proc.stderr, proc.stderr


def test_helm_notes_say_how_to_label_the_namespace() -> None:
    """Helm cannot label the namespace it installs into: its notes give the command (rendered
    by `helm install`, which needs a cluster; `helm lint` above renders them too)."""
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    command = " ".join(notes.split("kubectl label namespace", 1)[1].split("\\\n"))
    for label in PRIVILEGED:
        assert f"{label}=privileged" in command, label


# --- the webhook's values ------------------------------------------------------------------


def webhook_configurations(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]


def test_webhook_off_leaves_no_webhook_to_fail_writes(rendered_by: dict[str, list[Doc]]) -> None:
    """--webhook-port=0 with a failurePolicy: Fail webhook would refuse every metallb.io write."""
    for source in ("kustomize without webhook", "helm without webhook"):
        docs = rendered_by[source]
        assert webhook_configurations(docs) == [], source
        assert "--webhook-port=0" in container(docs, "controller")["args"], source


def test_kustomize_and_helm_without_webhook_install_the_same(
    rendered_by: dict[str, list[Doc]],
) -> None:
    expected = {
        k: comparable(d)
        for k, d in by_key(rendered_by["kustomize without webhook"]).items()
        if k[0] != "Namespace"
    }
    rendered = {k: comparable(d) for k, d in by_key(rendered_by["helm without webhook"]).items()}
    assert sorted(rendered) == sorted(expected)
    for k in sorted(expected):
        if k[0] not in RBAC_KINDS:
            assert rendered[k] == expected[k], k


def test_webhook_failure_policy_is_a_value(
    cluster: lab_cluster.Cluster,
    tmp_path: Path,
    rendered_by: dict[str, list[Doc]],
) -> None:
    for source in ("kustomize", "helm defaults"):
        (hook,) = webhook_configurations(rendered_by[source])
        assert [w["failurePolicy"] for w in hook["webhooks"]] == ["Fail"], source
    (hook,) = webhook_configurations(rendered_by["helm with every option"])
    assert [(w["failurePolicy"], w["timeoutSeconds"]) for w in hook["webhooks"]] == [("Ignore", 5)]
    ignoring = kustomize_with(cluster, tmp_path / "overlay", "webhook-ignore-failures")
    (hook,) = webhook_configurations(ignoring)
    assert [w["failurePolicy"] for w in hook["webhooks"]] == ["Ignore"]


def test_pod_cidrs_are_a_chart_value_and_a_kustomize_component(
    cluster: lab_cluster.Cluster, tmp_path: Path, rendered_by: dict[str, list[Doc]]
) -> None:
    """PodCIDRs over BGP (issue 15): off by default; `speaker.podCIDRs.*` and the component
    `advertise-pod-cidrs` turn them on."""

    def pod_cidr_args(docs: list[Doc]) -> list[str]:
        return [a for a in container(docs, "speaker")["args"] if "pod-cidr" in a]

    for source in ("kustomize", "helm defaults"):
        assert pod_cidr_args(rendered_by[source]) == [], source
    assert pod_cidr_args(rendered_by["helm with every option"]) == [
        "--advertise-pod-cidrs",
        "--pod-cidr-peers=tor-a",
        "--pod-cidr-communities=65000:100",
    ]
    docs = kustomize_with(cluster, tmp_path / "overlay", "advertise-pod-cidrs")
    assert pod_cidr_args(docs) == ["--advertise-pod-cidrs"]


# --- values schema -------------------------------------------------------------------------


def test_chart_works_as_a_subchart(helm: Helm, tmp_path: Path) -> None:
    """A parent chart always passes `global` to its subcharts: the schema must accept it."""
    parent = tmp_path / "parent"
    (parent / "charts").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "parent",
                "version": "1.0.0",
                "dependencies": [{"name": "ironlb", "version": "*"}],
            }
        )
    )
    (parent / "values.yaml").write_text(
        yaml.safe_dump({"global": {"imageRegistry": "registry.example.com"}, "ironlb": {}})
    )
    subprocess.run(["cp", "-r", str(CHART), str(parent / "charts" / "ironlb")], check=True)
    proc = helm.run("template", "parent", str(parent), "--namespace", NAMESPACE)
    assert proc.returncode == 0, proc.stderr
    assert ("DaemonSet", "ironlb-speaker", NAMESPACE) in by_key(documents(proc.stdout))
    proc = helm.run("lint", "--strict", str(parent), "--namespace", NAMESPACE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("logLevel=verbose", "logLevel"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("prometheus.podMonitor.enable=true", "enable"),
        ("speaker.podCIDRs.enable=true", "enable"),
    ],
)
def test_schema_refuses_bad_values(helm: Helm, value: str, complaint: str) -> None:
    proc = helm.run("template", "ironlb", str(CHART), "--namespace", NAMESPACE, "--set", value)
    assert proc.returncode != 0, f"{value} was accepted"
    assert complaint in proc.stderr, proc.stderr


# --- monitoring ----------------------------------------------------------------------------


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def test_monitoring_objects_only_when_enabled(helm: Helm, renders: dict[str, str]) -> None:
    for kind in MONITORING_KINDS:
        assert of_kind(documents(renders["default"]), kind) == [], kind
    for value, kind in (
        ("prometheus.serviceMonitor.enabled=true", "ServiceMonitor"),
        ("prometheus.podMonitor.enabled=true", "PodMonitor"),
        ("prometheus.prometheusRule.enabled=true", "PrometheusRule"),
    ):
        docs = documents(helm.template("--set", value))
        assert {d["kind"] for d in docs if d["kind"] in MONITORING_KINDS} == {kind}, value


def test_monitors_scrape_the_metrics_ports(renders: dict[str, str]) -> None:
    docs = documents(renders["full"])
    objects = by_key(docs)
    for component, (kind, name) in WORKLOADS.items():
        pod_labels = objects[(kind, name, NAMESPACE)]["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for p in container(docs, component)["ports"]}
        monitor = objects[("PodMonitor", f"ironlb-{component}", NAMESPACE)]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
            "metrics",
            "/metrics",
            "15s",
        )
        assert endpoint["port"] in ports
        service_monitor = objects[("ServiceMonitor", f"ironlb-{component}", NAMESPACE)]
        assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selector = service_monitor["spec"]["selector"]["matchLabels"]
        scraped = [
            d
            for d in of_kind(docs, "Service")
            if selector.items() <= d["metadata"]["labels"].items()
            and "metrics" in {p["name"] for p in d["spec"]["ports"]}
        ]
        assert [d["metadata"]["name"] for d in scraped] == [f"ironlb-{component}-metrics"]
        (endpoint,) = service_monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["interval"]) == ("metrics", "30s")


def exported_metric_names() -> set[str]:
    """Metric names ironlb's code declares (the first argument of its metric constructors)."""
    names: set[str] = set()
    for path in (REPO / "src" / "ironlb").rglob("*.py"):
        names |= set(re.findall(r'"((?:metallb|ironlb)_[a-z0-9_]+)"', path.read_text()))
    return names


def test_prometheus_rule_carries_metallbs_alerts(helm: Helm, renders: dict[str, str]) -> None:
    (rule,) = of_kind(documents(renders["full"]), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (group,) = rule["spec"]["groups"]
    alerts = {r["alert"]: r for r in group["rules"]}
    assert sorted(alerts) == [
        "IronlbDown",
        "MetalLBAddressPoolExhausted",
        "MetalLBBGPSessionDown",
        "MetalLBConfigNotLoaded",
        "MetalLBStaleConfig",
    ]
    assert alerts["MetalLBBGPSessionDown"]["labels"] == {"severity": "page"}
    assert alerts["MetalLBConfigNotLoaded"]["labels"] == {"severity": "warning"}
    exported = exported_metric_names()
    for name, alert in alerts.items():
        if name == "IronlbDown":
            continue
        assert alert["for"] == "1m"
        used = set(re.findall(r"\b((?:metallb|ironlb)_[a-z0-9_]+)", alert["expr"]))
        assert used, alert["expr"]
        assert used <= exported, f"{name} reads metrics ironlb does not export: {used - exported}"
        assert "{{ $labels." in alert["annotations"]["description"], name
    # Each alert can be turned off.
    docs = documents(
        helm.template(
            "--set",
            "prometheus.prometheusRule.enabled=true",
            "--set",
            "prometheus.prometheusRule.bgpSessionDown.enabled=false",
        )
    )
    (rule,) = of_kind(docs, "PrometheusRule")
    assert "MetalLBBGPSessionDown" not in {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}


def test_service_monitor_needs_the_metrics_services(helm: Helm) -> None:
    proc = helm.run(
        "template",
        "ironlb",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--set",
        "metrics.services=false",
        "--set",
        "prometheus.serviceMonitor.enabled=true",
    )
    assert proc.returncode != 0
    assert "metrics.services" in proc.stderr, proc.stderr
    docs = documents(helm.template("--set", "metrics.services=false"))
    assert not [d for d in of_kind(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]
