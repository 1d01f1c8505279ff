"""The controller and the speakers run with exactly the RBAC of `deploy/rbac` (service account
tokens on the real API server, as `components` always runs them), do their work under it, and
hold no right beyond the ones listed here.

- The daemons: a controller and two speakers give a Service its address, announce it (a
  ServiceL2Status), publish their ConfigurationStates and Events; none of their log lines says
  they were refused anything.
- The sweep: every resource the API server serves (discovery, subresources included) x every
  verb x every scope (metallb-system, another namespace, all namespaces or cluster), plus each
  resourceName the manifests name and one they do not, asked as a SelfSubjectAccessReview with
  each identity's own token. What a service account with no binding at all may do (discovery,
  self-reviews) is the baseline; an ironlb identity may do exactly its baseline plus the rights
  listed in CONTROLLER / SPEAKER below, nothing more, nothing less. Adding a verb to
  `deploy/rbac` makes this test fail (the list here is written independently of the manifests).
- Real requests: each denied (resource, verb) of the resources that matter most (Secrets,
  ConfigMaps, Pods, Services, Nodes, Leases, RBAC objects, webhooks, service account tokens,
  ironlb's own kinds) is also sent as a real request in both namespaces, and must answer 403.

The chart's RBAC grants the same rights as `deploy/rbac` (test_deploy.py compares them), so
this sweep covers it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import yaml

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, topology
from support import kube

pytestmark = pytest.mark.integration

NS = lab_cluster.CONFIG_NAMESPACE
OTHER_NS = "default"
NODES = (1, 2)
POOL = kube.pool("rbac", "198.51.100.200/30", module="test_rbac")
L2ADV = {
    "apiVersion": "metallb.io/v1beta1",
    "kind": "L2Advertisement",
    "metadata": {"name": "rbac", "namespace": NS},
    "spec": {"ipAddressPools": ["rbac"]},
}
NOBODY = "ironlb-rbac-nobody"
PROBE_NAME = "x-rbac-probe"

VERBS = (
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
)
# The verbs that escalate, on the resources they apply to: none of them is ever ironlb's.
ESCALATING = {
    ("", "users"): ("impersonate",),
    ("", "groups"): ("impersonate",),
    ("", "serviceaccounts"): ("impersonate",),
    ("authentication.k8s.io", "uids"): ("impersonate",),
    ("authentication.k8s.io", "userextras"): ("impersonate",),
    ("rbac.authorization.k8s.io", "roles"): ("bind", "escalate"),
    ("rbac.authorization.k8s.io", "clusterroles"): ("bind", "escalate"),
    ("certificates.k8s.io", "certificatesigningrequests/approval"): ("approve",),
    ("certificates.k8s.io", "signers"): ("approve", "sign"),
}
ANY = "*"  # a grant valid in every namespace (ClusterRole + ClusterRoleBinding)
R = ("get", "list", "watch")


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str  # "services" or "services/status"
    verbs: tuple[str, ...]
    scope: str  # ANY or a namespace
    names: tuple[str, ...] = ()  # () = every name


METALLB_CONFIG = (
    "ipaddresspools",
    "l2advertisements",
    "bgpadvertisements",
    "bgppeers",
    "bfdprofiles",
    "communities",
)

# What each daemon needs, and nothing else (written from the code's use, not from the YAML).
CONTROLLER = (
    Grant("", "services", (*R, "patch"), ANY),
    Grant("", "services/status", ("patch",), ANY),
    Grant("", "namespaces", R, ANY),
    Grant("events.k8s.io", "events", ("create", "patch"), ANY),
    Grant(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        ("get", "patch"),
        ANY,
        ("ironlb-webhook",),
    ),
    *(Grant("metallb.io", r, R, NS) for r in METALLB_CONFIG),
    Grant("metallb.io", "ipaddresspools/status", ("patch",), NS),
    Grant("metallb.io", "configurationstates", ("get", "create", "patch"), NS),
    Grant("metallb.io", "configurationstates/status", ("get", "create", "patch"), NS),
    Grant("coordination.k8s.io", "leases", ("create",), NS),
    Grant("coordination.k8s.io", "leases", ("get", "update"), NS, ("ironlb-controller",)),
    Grant("", "secrets", ("create",), NS),
    Grant("", "secrets", ("get", "update"), NS, ("ironlb-webhook-cert",)),
    # A membership key left by MetalLB is adopted: its owner reference dropped (issue 13).
    Grant("", "secrets", ("get", "patch"), NS, ("memberlist",)),
)
SPEAKER = (
    Grant("", "services", R, ANY),
    Grant("", "nodes", R, ANY),
    Grant("discovery.k8s.io", "endpointslices", R, ANY),
    Grant("events.k8s.io", "events", ("create", "patch"), ANY),
    *(Grant("metallb.io", r, R, NS) for r in METALLB_CONFIG),
    *(
        Grant("metallb.io", r, (*R, "create", "patch", "delete"), NS)
        for r in ("servicel2statuses", "servicebgpstatuses")
    ),
    *(
        Grant("metallb.io", f"{r}/status", ("patch",), NS)
        for r in ("servicel2statuses", "servicebgpstatuses")
    ),
    Grant("metallb.io", "configurationstates", ("get", "create", "patch"), NS),
    Grant("metallb.io", "configurationstates/status", ("get", "create", "patch"), NS),
    Grant("", "secrets", R, NS),
    # This node's SpeakerReport, one apply per change (ironlb status / doctor).
    Grant("ironlb.io", "speakerreports", ("get", "create", "patch"), NS),
)

# Real requests for these resources (group, resource): the ones whose misuse would hurt most.
REAL = (
    ("", "secrets"),
    ("", "configmaps"),
    ("", "pods"),
    ("", "pods/exec"),
    ("", "services"),
    ("", "services/status"),
    ("", "serviceaccounts/token"),
    ("", "nodes"),
    ("", "nodes/status"),
    ("", "namespaces"),
    ("coordination.k8s.io", "leases"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
    ("discovery.k8s.io", "endpointslices"),
    ("metallb.io", "ipaddresspools"),
    ("metallb.io", "servicel2statuses"),
    ("metallb.io", "configurationstates"),
)
HTTP_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    resource: str  # with "/sub" for a subresource
    namespaced: bool


@dataclass(frozen=True)
class Check:
    group: str
    resource: str
    verb: str
    namespace: str  # "" = cluster-scoped or all namespaces
    name: str  # "" = no name


def expected(grants: tuple[Grant, ...], c: Check) -> bool:
    for g in grants:
        if (g.group, g.resource) != (c.group, c.resource) or c.verb not in g.verbs:
            continue
        if g.scope != ANY and c.namespace != g.scope:
            continue
        if g.names and c.name not in g.names:
            continue
        return True
    return False


async def discover(admin: k8s.Client) -> list[ApiResource]:
    """Every resource and subresource the API server serves, in every version of every group
    (a resource served in several versions counts once, in its group's preferred version)."""
    core = await admin.request("GET", "/api/v1")
    versions = [("", "v1", core)]
    groups = await admin.request("GET", "/apis")
    for group in groups["groups"]:
        preferred = group["preferredVersion"]["groupVersion"]
        ordered = [preferred] + [
            v["groupVersion"] for v in group["versions"] if v["groupVersion"] != preferred
        ]
        for gv in ordered:
            listing = await admin.request("GET", f"/apis/{gv}")
            versions.append((group["name"], gv.split("/", 1)[1], listing))
    found: dict[tuple[str, str], ApiResource] = {}
    for group_name, version, listing in versions:
        for r in listing["resources"]:
            key = (group_name, r["name"])
            found.setdefault(key, ApiResource(group_name, version, r["name"], r["namespaced"]))
    return list(found.values())


def resource_names_in_manifests() -> dict[tuple[str, str], set[str]]:
    """resourceNames the deploy RBAC names, per (group, resource): probed by name as well."""
    names: dict[tuple[str, str], set[str]] = {}
    for path in sorted((lab_cluster.DEPLOY / "rbac").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for rule in (doc or {}).get("rules") or []:
                for group in rule.get("apiGroups", []):
                    for res in rule.get("resources", []):
                        names.setdefault((group, res), set()).update(rule.get("resourceNames", []))
    return names


def checks(resources: list[ApiResource], grants: tuple[Grant, ...]) -> list[Check]:
    named = resource_names_in_manifests()
    for g in grants:
        named.setdefault((g.group, g.resource), set()).update(g.names)
    out = []
    for key, verbs in ESCALATING.items():  # not served as resources: asked all the same
        for verb in verbs:
            out.append(Check(*key, verb, "", ""))
            if key == ("", "serviceaccounts"):
                out.append(Check(*key, verb, NS, ""))
    for r in resources:
        scopes = (NS, OTHER_NS, "") if r.namespaced else ("",)
        names = {""}
        if named.get((r.group, r.resource)):
            names |= named[(r.group, r.resource)] | {PROBE_NAME}
        for verb in VERBS:
            for ns in scopes:
                for name in sorted(names):
                    out.append(Check(r.group, r.resource, verb, ns, name))
    return out


async def review(client: k8s.Client, c: Check) -> bool:
    resource, _, sub = c.resource.partition("/")
    attrs = {"group": c.group, "resource": resource, "verb": c.verb}
    if sub:
        attrs["subresource"] = sub
    if c.namespace:
        attrs["namespace"] = c.namespace
    if c.name:
        attrs["name"] = c.name
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attrs},
    }
    out = await client.request(
        "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=body
    )
    return bool(out["status"]["allowed"])


async def allowed_set(client: k8s.Client, all_checks: list[Check]) -> set[Check]:
    limit = asyncio.Semaphore(32)

    async def one(c: Check) -> tuple[Check, bool]:
        async with limit:
            return c, await review(client, c)

    results = await asyncio.gather(*(one(c) for c in all_checks))
    return {c for c, ok in results if ok}


# --- the daemons, running under these accounts ---------------------------------------------------


@dataclass
class Daemons:
    controller: components.Process
    speakers: list[components.Process]

    @property
    def all(self) -> list[components.Process]:
        return [self.controller, *self.speakers]


@pytest.fixture(scope="module")
def daemons(cluster: lab_cluster.Cluster) -> Iterator[Daemons]:
    hosts: dict[int, topology.Host] = {i: cluster.lab.add_node(i) for i in NODES}
    procs: list[components.Process] = []
    try:
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
        controller = components.start_controller(cluster)
        procs.append(controller)
        kube.apply(cluster, POOL, L2ADV)
        speakers = [components.start_speaker(cluster, i, wait=False) for i in NODES]
        procs.extend(speakers)
        for s in speakers:
            s.wait_ready()
        yield Daemons(controller, speakers)
    finally:
        for proc in procs:
            proc.kill()
        for kind, name in (("l2advertisement", "rbac"), ("ipaddresspool", "rbac")):
            cluster.kubectl("delete", kind, name, "-n", NS, "--ignore-not-found")
        components.uninstall_webhook(cluster)
        for i in NODES:
            cluster.lab.remove(f"node-{i}")
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


@pytest.fixture
async def identities(
    cluster: lab_cluster.Cluster,
) -> AsyncIterator[dict[str, k8s.Client]]:
    cluster.kubectl("create", "serviceaccount", NOBODY, "-n", NS, check=False)
    clients = {
        name: k8s.Client.from_config(cluster.service_account_kubeconfig(name))
        for name in ("ironlb-controller", "ironlb-speaker", NOBODY)
    }
    try:
        yield clients
    finally:
        for c in clients.values():
            await c.close()
        cluster.kubectl("delete", "serviceaccount", NOBODY, "-n", NS, "--ignore-not-found")


async def test_daemons_work_under_their_accounts(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str, daemons: Daemons
) -> None:
    await admin.create(k8s.SERVICES, kube.service("web"), namespace)
    components.endpoints(cluster, namespace, "web", [f"node-{i}" for i in NODES])
    ips = await kube.eventually(lambda: kube.ingress(admin, namespace, "web"), what="address")
    assert ips[0].startswith("198.51.100.20")

    async def announced() -> list[k8s.Obj]:
        items, _ = await admin.list_all(k8s.SERVICE_L2_STATUSES, NS)
        return [s for s in items if namespace in json.dumps(s) and '"web"' in json.dumps(s)]

    statuses = await kube.eventually(announced, within=20, what="a ServiceL2Status for web")
    assert len(statuses) == 1, statuses

    wanted = {"controller", *(f"speaker-node-{i}" for i in NODES)}

    async def states() -> bool:
        items, _ = await admin.list_all(k8s.CONFIGURATION_STATES, NS)
        return wanted <= {s["metadata"]["name"] for s in items}

    await kube.eventually(states, within=20, what=f"ConfigurationStates {wanted}")
    assert await kube.eventually(lambda: kube.reasons(admin, namespace, "web", "IPAllocated"))
    # Served by the daemons, with nothing refused along the way.
    for proc in daemons.all:
        assert proc.alive, proc.log_text()[-3000:]
        refused = [
            line
            for line in proc.log_text().splitlines()
            if "forbidden" in line.lower() or " 403" in line
        ]
        assert refused == [], f"{proc.name}: {refused[:5]}"


_baseline: dict[str, set[Check]] = {}


@pytest.mark.parametrize(
    ("account", "grants"), [("ironlb-controller", CONTROLLER), ("ironlb-speaker", SPEAKER)]
)
async def test_no_right_beyond_what_the_daemon_needs(
    admin: k8s.Client,
    identities: dict[str, k8s.Client],
    account: str,
    grants: tuple[Grant, ...],
) -> None:
    resources = await discover(admin)
    # Sanity: the sweep covers what matters (a broken discovery would sweep nothing).
    served = {(r.group, r.resource) for r in resources}
    for g in (*CONTROLLER, *SPEAKER):
        assert (g.group, g.resource) in served, g
    all_checks = checks(resources, (*CONTROLLER, *SPEAKER))
    if "baseline" not in _baseline:  # the same for both accounts: asked once
        _baseline["baseline"] = await allowed_set(identities[NOBODY], all_checks)
    baseline = _baseline["baseline"]
    allowed = await allowed_set(identities[account], all_checks)
    want = {c for c in all_checks if expected(grants, c)}
    extra = sorted(allowed - baseline - want, key=repr)
    missing = sorted(want - allowed, key=repr)
    assert extra == [], f"{account} may do more than it needs ({len(extra)}): {extra[:20]}"
    assert missing == [], f"{account} lacks rights it needs ({len(missing)}): {missing[:20]}"
    # The baseline is small: what any authenticated identity may do (self reviews).
    assert {c.resource for c in baseline} <= {
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
        "selfsubjectreviews",
    }, sorted({c.resource for c in baseline})
    print(f"{account}: {len(all_checks)} reviews, {len(allowed)} allowed")


def real_request(r: ApiResource, verb: str, namespace: str) -> tuple[str, str, dict[str, str]]:
    """(method, path, params) of a real request for `verb` on `r` (named PROBE_NAME)."""
    base = f"/apis/{r.group}/{r.version}" if r.group else f"/api/{r.version}"
    if r.namespaced:
        base += f"/namespaces/{namespace}"
    resource, _, sub = r.resource.partition("/")
    collection = f"{base}/{resource}"
    item = f"{collection}/{PROBE_NAME}" + (f"/{sub}" if sub else "")
    nothing = {"labelSelector": "ironlb.io/rbac-probe=none"}
    return {
        "get": ("GET", item, {}),
        "list": ("GET", collection, nothing),
        "watch": ("GET", collection, {**nothing, "watch": "1", "timeoutSeconds": "1"}),
        "create": ("POST", item if sub else collection, {}),
        "update": ("PUT", item, {}),
        "patch": ("PATCH", item, {}),
        "delete": ("DELETE", item, {}),
        "deletecollection": ("DELETE", collection, nothing),
    }[verb]


@pytest.mark.parametrize(
    ("account", "grants"), [("ironlb-controller", CONTROLLER), ("ironlb-speaker", SPEAKER)]
)
async def test_real_requests_beyond_the_rights_are_refused(
    admin: k8s.Client,
    identities: dict[str, k8s.Client],
    account: str,
    grants: tuple[Grant, ...],
) -> None:
    resources = {(r.group, r.resource): r for r in await discover(admin)}
    client = identities[account]
    sent = 0
    answers: dict[str, list[str]] = {}
    for key in REAL:
        r = resources[key]
        for verb in HTTP_VERBS:
            if (r.resource.partition("/")[2] and verb in ("list", "watch", "deletecollection")) or (
                key == ("", "pods/exec") and verb not in ("create", "get")
            ):
                continue
            for ns in (NS, OTHER_NS) if r.namespaced else ("",):
                check = Check(r.group, r.resource, verb, ns, PROBE_NAME)
                unnamed = Check(r.group, r.resource, verb, ns, "")
                if expected(grants, check) or expected(grants, unnamed):
                    continue
                method, path, params = real_request(r, verb, ns)
                content_type = (
                    "application/merge-patch+json" if method == "PATCH" else "application/json"
                )
                sent += 1
                try:
                    await client.request(
                        method, path, params=params, body={}, content_type=content_type
                    )
                    answer = "200"
                except k8s.ApiError as e:
                    answer = str(e.status)
                answers.setdefault(answer, []).append(f"{verb} {path}")
    assert sent > 100, sent
    assert set(answers) == {"403"}, {k: v[:10] for k, v in answers.items() if k != "403"}
