"""A crashed run of the real-nodes lab leaves nothing behind once the next run sweeps: no
namespaces, no node processes (kubelet, containerd, pods), no node cgroups, and the host's
sysctls the kubelet would have rewritten are untouched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ironlb.lab import cgroups, netns, nodes

pytestmark = pytest.mark.e2e

SCRIPT = """
import sys, time
from pathlib import Path
from ironlb.lab import nodes
rc = nodes.RealCluster.start(Path(sys.argv[1]), sys.argv[2], node_count=1)
print("ready", flush=True)
time.sleep(600)
"""


def sysctls() -> dict[str, str]:
    return {k: (Path("/proc/sys") / k).read_text() for k in nodes.KERNEL_TUNABLES}


def node_processes(workdir: Path) -> list[int]:
    """PIDs whose command line names this run's workdir (kubelet, containerd, kube-proxy)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(workdir).encode() in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


def test_a_killed_run_is_swept_by_the_next(tmp_path: Path) -> None:
    before = sysctls()
    prefix = netns.new_prefix()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path), prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        assert netns.list_namespaces(prefix)
        assert cgroups.lab_roots(prefix)
        assert node_processes(tmp_path)
        assert sysctls() == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]

    assert prefix in netns.sweep_stale()
    assert netns.list_namespaces(prefix) == []
    assert cgroups.lab_roots(prefix) == []
    deadline = time.monotonic() + 10
    while node_processes(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node_processes(tmp_path) == []
    assert sysctls() == before
