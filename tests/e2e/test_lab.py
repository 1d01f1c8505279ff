"""The network lab itself: hosts reach each other, and nothing outlives a run."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from ironlb.lab import netns, topology

pytestmark = pytest.mark.e2e


@pytest.fixture
def lan(tmp_path: Path) -> topology.Lab:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run `make test`")
    return topology.Lab.create(tmp_path)


def test_three_nodes_and_a_client_reach_each_other(lan: topology.Lab) -> None:
    try:
        hosts = [lan.add_node(i) for i in (1, 2, 3)] + [lan.add_client()]
        for a, b in itertools.permutations(hosts, 2):
            assert a.ns.ping(b.ipv4, count=1, timeout=2), f"{a.name} -> {b.ipv4}"
            assert a.ns.ping(b.ipv6, count=1, timeout=2), f"{a.name} -> {b.ipv6}"
        client = hosts[-1]
        assert client.ns.neighbours(client.dev)[hosts[0].ipv4][0] == hosts[0].mac
        assert client.ns.arping(hosts[1].ipv4, client.dev, timeout=1) == hosts[1].mac
    finally:
        lan.destroy()
    assert netns.list_namespaces(lan.prefix) == []
    assert not (netns.RUN_DIR / f"{lan.prefix}.owner").exists()


def test_remote_client_reaches_the_lan_through_the_router(lan: topology.Lab) -> None:
    try:
        node = lan.add_node(1)
        lan.add_router()
        remote = lan.hosts["remote"]
        assert remote.ns.ping(node.ipv4, timeout=2)
        assert remote.ns.ping(node.ipv6, timeout=2)
    finally:
        lan.destroy()


def test_leftovers_of_a_crashed_run_are_swept(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root: run `make test`")
    prefix = netns.new_prefix()
    netns.claim(prefix)
    ns = netns.Netns.create(f"{prefix}-node-1")
    sleeper = ns.spawn(["sleep", "300"])
    # Pretend the owner crashed: hand ownership to a process that has exited.
    dead = subprocess.Popen(["true"])
    dead.wait()
    (netns.RUN_DIR / f"{prefix}.owner").write_text(f"{dead.pid}\n")
    assert prefix in netns.sweep_stale()
    assert netns.list_namespaces(prefix) == []
    assert sleeper.wait(timeout=5) is not None


def test_addresses_outside_the_lab_ranges_are_refused() -> None:
    topology.check_allowed("198.18.0.7")
    topology.check_allowed("2001:db8::1")
    with pytest.raises(netns.LabError, match="outside"):
        topology.check_allowed("100.64.1.30")  # carrier-grade NAT space: not a lab range
