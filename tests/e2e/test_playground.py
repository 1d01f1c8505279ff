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


def test_lab_up_control_plane_serves_the_api_through_the_vip_and_moves_it() -> None:
    """`ironlb lab up --control-plane` (issue 11): three control-plane hosts behind the VIP;
    what the printed next steps tell the user to do (the holder's link down) moves it."""
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run `make test`")
    both = ironlb("lab", "up", "--name", "tbad", "--process", "--control-plane")
    assert both.returncode == 1
    assert both.stderr.strip() == "ironlb lab: choose one: --process or --control-plane"
    name = "t" + secrets.token_hex(4)
    try:
        up = ironlb("lab", "up", "--name", name, "--control-plane")
        assert up.returncode == 0, up.stderr
        state = json.loads(playground.handle(name).state_file.read_text())
        assert state["kind"] == "control-plane"
        assert state["vip"] == "198.18.0.30"
        holder = state["holder"]
        assert holder in {"cp-1", "cp-2", "cp-3"}
        assert f"held by {holder}" in up.stdout
        assert "ironlb lab kubectl get --raw /readyz" in up.stdout
        readyz = ironlb("lab", "kubectl", "--name", name, "get", "--raw", "/readyz")
        assert (readyz.returncode, readyz.stdout.strip()) == (0, "ok"), readyz.stderr
        status = ironlb("lab", "status", "--name", name)
        assert "kube-apiserver https://198.18.0.30:6443: ready" in status.stdout
        for role in ("cp-1", "cp-2", "cp-3", "client"):
            assert f"  {role} " in status.stdout, status.stdout
        # The holder's link down, as the next steps say: another host takes the VIP and the
        # API answers through it again.
        ns = state["hosts"][holder]["netns"]
        netns.run(["ip", "-n", ns, "link", "set", "eth0", "down"])
        try:
            answers = []
            for _ in range(20):
                got = ironlb(
                    "lab",
                    "kubectl",
                    "--name",
                    name,
                    "--request-timeout=1s",
                    "get",
                    "--raw",
                    "/readyz",
                )
                answers.append(got.stdout.strip() or got.stderr.strip()[-80:])
                if answers[-1] == "ok" and len(answers) > 1:
                    break
            assert answers[-1] == "ok", answers
        finally:
            netns.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        holders = [
            role
            for role, host in state["hosts"].items()
            if role != "client"
            and f" {state['vip']}/" in netns.run(["ip", "-n", host["netns"], "-o", "addr"])
        ]
        assert holders, "nobody holds the VIP"
    finally:
        down = ironlb("lab", "down", "--name", name)
    assert down.returncode == 0
    assert netns.list_namespaces(f"ilb-{name}") == []
    assert not playground.handle(name).workdir.exists()
