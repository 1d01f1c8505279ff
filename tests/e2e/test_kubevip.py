"""kube-vip (the peer `bench/cpvip_failover.py` compares `ironlb cpvip` with) runs in the
control-plane lab as its users run it: it takes the VIP by its Lease and the API answers through
the VIP. A smoke test, so that the side-by-side bench cannot rot silently (~25-40 s, most of it
starting three etcd members and kube-apiservers).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from ironlb.lab import cpvip as lab_cpvip
from ironlb.lab import kubevip, netns, topology

pytestmark = pytest.mark.e2e


@pytest.fixture
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[lab_cpvip.ControlPlanes]:
    if os.geteuid() != 0:
        pytest.fail("e2e tests need root (network namespaces): run `make test`")
    try:
        kubevip.binary()
    except netns.LabError as e:
        pytest.fail(f"{e} (`make peers` builds kube-vip)")
    workdir = tmp_path_factory.mktemp("kubevip")
    lab = topology.Lab.create(workdir / "lab")
    try:
        planes = lab_cpvip.ControlPlanes.create(lab, workdir / "cp")
        try:
            planes.start()
            yield planes
        finally:
            # Thrown away: SIGKILL, no graceful apiserver shutdowns to wait for.
            for m in planes.members:
                for name in list(m.procs):
                    m.kill(name)
    finally:
        lab.destroy()


def test_kube_vip_takes_the_vip_by_its_lease_and_the_api_answers_through_it(
    cp: lab_cpvip.ControlPlanes,
) -> None:
    kv = kubevip.KubeVip(cp, kubevip.RECOMMENDED)
    kv.start()
    try:
        holder = kubevip.wait_for_holder(cp, within=20.0)
        # The holder is the Lease's: the VIP is kube-vip's doing, not a leftover.
        lease = subprocess.run(
            holder.host.ns.argv(
                [
                    str(cp.bin_dir / "kubectl"),
                    f"--kubeconfig={kv.kubeconfig(holder)}",
                    "-n",
                    kubevip.LEASE_NAMESPACE,
                    "get",
                    "lease",
                    kubevip.LEASE_NAME,
                    "-o",
                    "jsonpath={.spec.holderIdentity}",
                ]
            ),
            capture_output=True,
            timeout=30,
            check=True,
        )
        assert lease.stdout.decode() == holder.name
        assert cp.client is not None
        tls = ssl.create_default_context(cafile=str(cp.pki / "ca.crt"))
        with (
            netns.entered(cp.client.ns.name),
            urllib.request.urlopen(cp.vip_url(), context=tls, timeout=5.0) as resp,
        ):
            assert resp.status == 200
        # Answered by the holder's MAC: the address is on the holder's interface.
        assert cp.client.ns.neighbours(cp.client.dev)[cp.vip][0] == holder.host.mac
        assert cp.holders() == [holder]
        assert all(kv.running(m) for m in cp.members)
    finally:
        kv.stop()
    assert cp.holders() == []
