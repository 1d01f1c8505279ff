"""Shared fixtures: one real API server per test session, inside the lab's namespaces.

The session's control plane lives on a lab LAN in namespaces this run created (never in the
host's network namespace); the test process enters the control-plane namespace for the whole
session, so API clients and kubectl reach it directly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import netns, topology
from support import kube

# Hypothesis' per-example deadline is a timing assertion: on a busy CI machine (the e2e suite
# beside it) a correct property fails with DeadlineExceeded. Properties are about results only.
settings.register_profile("ironlb", deadline=None)
settings.load_profile("ironlb")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Real-node modules first. They build their own clusters from the host's namespaces, while
    the session's shared API server (`cluster`) keeps this process inside its control-plane
    namespace from its first use to the end of the session (a real-node lab started from there
    fails). The order of everything else stays as collected."""
    items.sort(key=lambda item: "realnodes" not in item.path.parts)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("integration and e2e tests need root (network namespaces): run `make test`")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[topology.Lab]:
    """A LAN of this test's own (an empty switch): for tests that need no API server."""
    _require_root()
    lab = topology.Lab.create(tmp_path)
    try:
        yield lab
    finally:
        lab.destroy()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_cluster.Cluster]:
    _require_root()
    c = lab_cluster.Cluster.start(tmp_path_factory.mktemp("lab"))
    try:
        with netns.entered(c.ctl.ns.name):
            yield c
    finally:
        c.stop()


@pytest.fixture
async def admin(cluster: lab_cluster.Cluster) -> AsyncIterator[k8s.Client]:
    async with k8s.Client.from_config(cluster.control_plane.admin_kubeconfig) as client:
        yield client


@pytest.fixture
async def namespace(admin: k8s.Client, request: pytest.FixtureRequest) -> str:
    """A fresh Kubernetes namespace for one test (never finalised: the lab has no KCM),
    labelled with the test module's name so that a module's pools can serve only its own
    Services (serviceAllocation.namespaceSelectors on kube.MODULE_LABEL)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    module = request.module.__name__.rsplit(".", 1)[-1]
    await admin.create(
        k8s.NAMESPACES, {"metadata": {"name": name, "labels": {kube.MODULE_LABEL: module}}}
    )
    return name
