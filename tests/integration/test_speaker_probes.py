"""A speaker whose caches cannot list (a slow API server, a missing CRD, a namespace it may not
read) is alive and unready, never a failing liveness probe: the kubelet must not kill it in a
loop while it waits."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import pytest

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components
from support import kube

pytestmark = pytest.mark.integration


async def test_probes_are_served_before_the_caches_have_listed(
    cluster: lab_cluster.Cluster,
) -> None:
    host = cluster.ctl
    kubeconfig = cluster.service_account_kubeconfig("ironlb-speaker")
    # The speaker's Role covers metallb-system only: its configuration caches never list here.
    forbidden = f"t-{uuid.uuid4().hex[:10]}"
    log = cluster.lab.workdir / f"speaker-unlisted-{forbidden}.log"
    argv = [
        sys.executable,
        "-m",
        "ironlb.cli",
        "speaker",
        f"--kubeconfig={kubeconfig}",
        "--node-name=nowhere",
        f"--namespace={forbidden}",
        f"--bind-address={host.ipv4}",
        "--metrics-port=7481",
        "--membership-port=7981",
    ]
    proc = components.Process(
        "speaker-unlisted",
        host.ns,
        host.ns.spawn(argv, log=log),
        log,
        f"http://{host.ipv4}:7481",
    )
    try:
        await kube.eventually(
            lambda: proc.get("/healthz")[0] == 200, within=20, what="/healthz", blocking=True
        )
        until = time.monotonic() + 3.0
        while time.monotonic() < until:
            assert proc.alive, proc.log_text()[-3000:]
            assert (await asyncio.to_thread(proc.get, "/healthz"))[0] == 200
            status, body = await asyncio.to_thread(proc.get, "/readyz")
            assert status == 503, body
            assert "caches not synced" in body, body
            await asyncio.sleep(0.2)
    finally:
        proc.kill()
