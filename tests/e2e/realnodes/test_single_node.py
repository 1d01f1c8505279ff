"""Seed 000: a single-node kubeadm cluster, whose only node carries
`node.kubernetes.io/exclude-from-external-load-balancers`. By default nothing is announced (as
with MetalLB); with the chart's `speaker.ignoreExcludeLB=true` the Service answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ironlb.lab import playground

from .conftest import RealLab, real_lab, udp_ask, wait

pytestmark = pytest.mark.e2e

EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLab]:
    with real_lab(tmp_path_factory.mktemp("single"), node_count=1, install=False) as lab:
        lab.kubectl("label", "node", "node-1", f"{EXCLUDE}=")
        lab.install_seconds = lab.rc.install_ironlb()
        yield lab


def test_an_excluded_single_node_announces_only_with_ignore_exclude_lb(single: RealLab) -> None:
    playground.apply_config(single.rc.cluster, playground.EXAMPLE_CONFIG, playground.BGP_CONFIG)
    deployment, service = playground.demo_manifests(single.rc.images["ironlb"])
    deployment["spec"]["replicas"] = 1
    single.apply(deployment, service)
    single.kubectl("rollout", "status", "deployment/demo", "--timeout=120s")
    (ip,) = wait(lambda: single.ingress("default", "demo"), 60, "an address")

    # Excluded: no ARP answer, no BGP route, no status, for long enough to be sure.
    time.sleep(5)
    assert single.client.ns.arping(ip, single.client.dev, count=3, timeout=3.0) is None
    assert single.bgp_next_hops(ip) == set()
    assert single.announcers("default", "demo") == set()
    assert udp_ask(single.client, ip, 4433) is None

    single.rc.install_ironlb("--set", "speaker.ignoreExcludeLB=true")
    assert wait(lambda: single.announcers("default", "demo") == {"node-1"}, 60, "announced")
    assert playground._wait_for_answer(single.client, ip) == "node-1"
    assert playground._wait_for_answer(single.remote, ip) == "node-1"
