"""The controller's probes tell the truth: Ready only once a metallb.io write would be validated
(webhook listening, its CA trusted by the published ValidatingWebhookConfiguration), so that
`kubectl wait` followed by applying configuration never meets "failed calling webhook"; and
served over IPv6 as well as IPv4 (IPv6-only clusters probe and call the webhook over IPv6)."""

from __future__ import annotations

import asyncio
import functools
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns
from support import kube

pytestmark = pytest.mark.integration


@pytest.fixture
def controllers(cluster: lab_cluster.Cluster) -> Iterator[list[components.Process]]:
    procs: list[components.Process] = []
    yield procs
    for p in procs:
        p.kill()
    components.uninstall_webhook(cluster)


def get(ns: netns.Netns, url: str) -> tuple[int, str]:
    try:
        with netns.entered(ns.name), urllib.request.urlopen(url, timeout=2.0) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except OSError as e:
        return 0, str(e)


def answers(ns: netns.Netns, url: str) -> bool:
    return get(ns, url)[0] == 200


def refused_pool(cluster: lab_cluster.Cluster, namespace: str) -> str:
    """Apply a pool overlapping another; return kubectl's complaint."""
    kube.apply(cluster, kube.pool("ready-a", "198.51.100.96/29", namespaces=(namespace,)))
    out = cluster.control_plane.run_kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        stdin=yaml.safe_dump(kube.pool("ready-b", "198.51.100.100/31")),
    )
    assert out.returncode != 0, "the overlapping pool was stored"
    return out.stderr


async def test_ready_only_once_the_webhook_serves_with_a_published_ca(
    cluster: lab_cluster.Cluster, namespace: str, controllers: list[components.Process]
) -> None:
    components.uninstall_webhook(cluster)
    ctl = components.start_controller(
        cluster, name="ready", metrics_port=7475, wait=False, register_webhook=False
    )
    controllers.append(ctl)
    # Alive at once; not Ready while no ValidatingWebhookConfiguration trusts its certificate.
    await kube.eventually(
        lambda: ctl.get("/healthz")[0] == 200, within=20, what="/healthz", blocking=True
    )
    until = time.monotonic() + 4.0
    while time.monotonic() < until:
        status, body = await asyncio.to_thread(ctl.get, "/readyz")
        assert status == 503, (status, body)
        await asyncio.sleep(0.1)
    assert "ValidatingWebhookConfiguration" in body, body

    components.install_webhook(cluster, cluster.ctl.ipv4)
    await kube.eventually(
        lambda: ctl.get("/readyz")[0] == 200, within=10, what="/readyz 200", blocking=True
    )
    # Right after readiness, the webhook judges (not "failed calling webhook").
    complaint = refused_pool(cluster, namespace)
    assert 'admission webhook "config.ironlb.io" denied the request' in complaint, complaint


async def test_probes_and_webhook_answer_over_ipv6_and_ipv4(
    cluster: lab_cluster.Cluster, controllers: list[components.Process]
) -> None:
    host = cluster.ctl
    ctl = components.start_controller(
        cluster, name="dual", metrics_port=7476, listen_address="", wait=False
    )
    controllers.append(ctl)
    assert host.ipv6.startswith("2001:db8:")
    for address in (f"[{host.ipv6}]", host.ipv4):
        url = f"http://{address}:7476/readyz"
        await kube.eventually(
            functools.partial(answers, host.ns, url), within=20, what=url, blocking=True
        )

    def webhook_accepts(family: socket.AddressFamily, address: str) -> bool:
        with netns.entered(host.ns.name), socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            return s.connect_ex((address, components.WEBHOOK_PORT)) == 0

    assert await asyncio.to_thread(webhook_accepts, socket.AF_INET6, host.ipv6)
    assert await asyncio.to_thread(webhook_accepts, socket.AF_INET, host.ipv4)
    assert ctl.alive, ctl.log_text()[-3000:]
