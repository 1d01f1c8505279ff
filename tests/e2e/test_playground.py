"""`ironlb lab up` / `down`: the interactive lab a user starts with `make lab`."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest

from ironlb.lab import netns, playground

pytestmark = pytest.mark.e2e


def ironlb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ironlb.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_lab_up_shows_the_crds_through_the_printed_kubeconfig() -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run `make test`")
    name = "t" + secrets.token_hex(4)
    try:
        up = ironlb("lab", "up", "--name", name)
        assert up.returncode == 0, up.stderr
        assert "ironlb lab kubectl get svc -A" in up.stdout
        state = json.loads(playground.handle(name).state_file.read_text())
        assert state["kubeconfig"] in up.stdout
        # What the user is told to type, typed.
        crds = ironlb("lab", "kubectl", "--name", name, "get", "crd", "-o", "name")
        assert crds.returncode == 0, crds.stderr
        assert "ipaddresspools.metallb.io" in crds.stdout
        assert "bgppeers.metallb.io" in crds.stdout
        # The controller gave the demo Service an address from the example pool; the LAN client
        # reached it by ARP, the remote client over BGP: both answered by a node's backend.
        assert state["demo"] == "198.18.0.240"
        assert state["demo_from_client"] in {"node-1", "node-2", "node-3"}
        assert state["demo_from_remote"] in {"node-1", "node-2", "node-3"}
        demo = ironlb("lab", "kubectl", "--name", name, "get", "svc", "demo", "--no-headers")
        assert "198.18.0.240" in demo.stdout
        nodes = ironlb("lab", "kubectl", "--name", name, "get", "nodes", "-o", "name")
        assert nodes.stdout.split() == ["node/node-1", "node/node-2", "node/node-3"]
        status = ironlb("lab", "status", "--name", name)
        assert ": ready" in status.stdout
        again = ironlb("lab", "up", "--name", name)
        assert again.returncode == 1
        assert "already running" in again.stderr
    finally:
        down = ironlb("lab", "down", "--name", name)
    assert down.returncode == 0
    assert netns.list_namespaces(f"ilb-{name}") == []
    assert not playground.handle(name).workdir.exists()
