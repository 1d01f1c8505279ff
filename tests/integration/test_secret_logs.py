"""No Secret value ever appears in a log line, at debug level.

A controller and two speakers run at `--log-level=debug` with a membership key Secret (which
the speakers use to sign every membership packet), a BGP `passwordSecret` (the sessions to FRR
come up over TCP MD5 with it, so the speakers really read and used it) and the webhook's
serving certificate (whose private key the controller generates and stores). The password is
then rotated, so the Secret-change paths log too. Every line of every daemon's log is then
searched for every secret value, as it is, in base64 and in hex (both cases).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import yaml

from ironlb.bgp import fsm
from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, routers, topology
from support import kube

pytestmark = pytest.mark.integration

NS = lab_cluster.CONFIG_NAMESPACE
NODES = (1, 2)
ROUTER_AS, NODE_AS = 64500, 64510
ROUTER_V4 = topology.lan_addresses(topology.HOST_ROUTER)[0]
POOL = kube.pool("secret-logs", "203.0.113.200/30", module="test_secret_logs")
PASSWORD_SECRET = "router-md5-logs"


@dataclass
class Daemons:
    cluster: lab_cluster.Cluster
    hosts: dict[int, topology.Host]
    router_host: topology.Host
    procs: list[components.Process] = field(default_factory=list)
    router: routers.Router | None = None

    def start_router(self, password: str) -> routers.Router:
        if self.router is not None:
            self.router.stop()
        neighbors = tuple(
            routers.Neighbor(h.ipv4, NODE_AS, password=password) for h in self.hosts.values()
        )
        self.router = routers.Frr(self.router_host, self.cluster.lab.workdir / "router-logs")
        self.router.start(routers.RouterConfig(ROUTER_AS, neighbors))
        return self.router

    def established(self) -> bool:
        assert self.router is not None
        states = self.router.neighbors()
        return all(states.get(h.ipv4) is fsm.State.ESTABLISHED for h in self.hosts.values())


@pytest.fixture(scope="module")
def daemons(cluster: lab_cluster.Cluster) -> Iterator[Daemons]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    d = Daemons(cluster, hosts, cluster.lab.add_router())
    try:
        yield d
    finally:
        if d.router is not None:
            d.router.stop()
        for proc in d.procs:
            proc.kill()
        for kind, name in (
            ("bgpadvertisement", "secret-logs"),
            ("bgppeer", "secret-logs"),
            ("ipaddresspool", "secret-logs"),
            ("secret", PASSWORD_SECRET),
        ):
            cluster.kubectl("delete", kind, name, "-n", NS, "--ignore-not-found")
        components.uninstall_webhook(cluster)
        for role in ("remote", "router", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


def password_secret(value: str) -> k8s.Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {"name": PASSWORD_SECRET, "namespace": NS},
        "stringData": {"password": value},
    }


def forms(secret: bytes) -> set[str]:
    """How a secret could show up in a log line: as it is, base64 (standard and URL-safe,
    with and without padding) and hex (both cases)."""
    out = {
        base64.b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        secret.hex(),
        secret.hex().upper(),
    }
    with contextlib.suppress(UnicodeDecodeError):
        out.add(secret.decode())
    return out


def pem_body_lines(pem: bytes) -> set[str]:
    """The base64 lines of a PEM private key (each one is a piece of the key)."""
    lines = [ln.strip() for ln in pem.decode().splitlines()]
    return {ln for ln in lines if ln and not ln.startswith("-----") and len(ln) >= 16}


def leaks(text: str, values: dict[str, set[str]]) -> list[str]:
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for what, needles in values.items():
            found += [f"line {lineno}: {what} {n[:6]}..." for n in needles if n and n in line]
    return found


async def test_no_secret_value_in_any_debug_log_line(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str, daemons: Daemons
) -> None:
    # The secrets: long random values, so that a match cannot be a coincidence.
    member_key = secrets.token_hex(32)
    password, rotated = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    components.membership_secret(cluster, key=member_key)
    # A key of our own only if this one is used: the Secret may exist from an earlier module.
    stored = await admin.get(k8s.SECRETS, "memberlist", NS)
    member_key = base64.b64decode(stored["data"]["secretkey"]).decode()

    await asyncio.to_thread(daemons.start_router, password)
    for i, host in daemons.hosts.items():
        components.register_node(cluster, i, host)
    daemons.procs.append(components.start_controller(cluster))
    kube.apply(
        cluster,
        POOL,
        password_secret(password),
        {
            "apiVersion": "metallb.io/v1beta2",
            "kind": "BGPPeer",
            "metadata": {"name": "secret-logs", "namespace": NS},
            "spec": {
                "myASN": NODE_AS,
                "peerASN": ROUTER_AS,
                "peerAddress": ROUTER_V4,
                "holdTime": "9s",
                "connectTime": "2s",
                "passwordSecret": {"name": PASSWORD_SECRET},
            },
        },
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "BGPAdvertisement",
            "metadata": {"name": "secret-logs", "namespace": NS},
            "spec": {"ipAddressPools": ["secret-logs"]},
        },
    )
    speakers = [components.start_speaker(cluster, i, wait=False) for i in NODES]
    daemons.procs += speakers
    for s in speakers:
        s.wait_ready()
    await admin.create(k8s.SERVICES, kube.service("web"), namespace)
    components.endpoints(cluster, namespace, "web", [f"node-{i}" for i in NODES])
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "web"), what="address")
    # The password was used: the MD5 sessions are up.
    await kube.eventually(daemons.established, within=30, what="MD5 sessions", blocking=True)
    # The membership key is used: the speakers see each other as alive.
    for s in speakers:
        await kube.eventually(
            lambda s=s: s.metric("ironlb_membership_members", 'state="alive"') == len(NODES),
            within=20,
            what=f"{s.name} sees every member alive",
            blocking=True,
        )
        assert s.metric("ironlb_membership_key_missing_bool") == 0
    # Rotation: the Secret changes, and the speakers replan with the new value (whether the
    # sessions come back with it is not this test's business: only what gets logged).
    kube.apply(cluster, password_secret(rotated))
    await asyncio.sleep(5.0)  # a replan and a reconnection attempt or two, logged

    cert = await admin.get(k8s.SECRETS, "ironlb-webhook-cert", NS)
    key_pem = base64.b64decode(cert["data"]["tls.key"])
    values = {
        "membership key": forms(member_key.encode()),
        "BGP password": forms(password.encode()) | forms(rotated.encode()),
        "webhook private key": forms(key_pem) | pem_body_lines(key_pem),
    }
    total, debug = 0, {}
    for proc in daemons.procs:
        text = proc.log_text()
        lines = text.splitlines()
        total += len(lines)
        debug[proc.name] = sum(" DEBUG " in ln for ln in lines)
        assert leaks(text, values) == [], f"{proc.name} logged a secret"
    # Every log is at debug level (a line at that level is there): the search means something.
    assert all(debug.values()), debug
    speaker_text = "\n".join(s.log_text() for s in speakers)
    assert PASSWORD_SECRET in speaker_text or "password" in speaker_text.lower()
    print(f"searched {total} log lines of {len(daemons.procs)} daemons; debug lines {debug}")


def test_the_search_finds_a_logged_secret() -> None:
    """The search itself finds each form (a leak in any of them would be seen)."""
    value = secrets.token_hex(16)
    for form in forms(value.encode()):
        assert leaks(f"2026-01-01 DEBUG x: got {form}!", {"v": forms(value.encode())})
    assert not leaks("nothing here", {"v": forms(value.encode())})
    # YAML quoting is not a hiding place.
    assert leaks(yaml.safe_dump({"k": value}), {"v": forms(value.encode())})
