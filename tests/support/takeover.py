"""What the tests of a switch from the real MetalLB to ironlb share (layer 2 and BGP)."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable

import pytest

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import metallb, netns
from support import traffic


def require_metallb() -> None:
    """Fail (not skip) without root or without MetalLB's binaries and source, naming the fix."""
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root (network namespaces): run `make test`")
    try:
        metallb.binaries()
        metallb.source_dir()
    except netns.LabError as e:
        pytest.fail(f"{e} (`make peers` builds MetalLB)")


def ingress(cluster: lab_cluster.Cluster, namespace: str) -> dict[str, list[str]]:
    """Every Service of `namespace` -> the addresses in its status."""
    items = json.loads(cluster.kubectl("get", "services", "-n", namespace, "-o", "json"))
    return {
        s["metadata"]["name"]: [
            i["ip"]
            for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ]
        for s in items["items"]
    }


def wait_for(what: str, probe: Callable[[], object], within: float) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {within} s")
        time.sleep(0.2)


def longest_gap(stream: traffic.Stream, start: float, end: float) -> float:
    """The longest interval (by send time) in which no request to the address was answered,
    between `start` and `end`; every sample counted."""
    answered = [t for t, body in stream.results if body is not None and start <= t <= end]
    return max(b - a for a, b in itertools.pairwise([start, *answered, end]))
