"""`ironlb cpvip --mode bgp` for real: three control-plane hosts (etcd member + kube-apiserver +
two cpvips each, one per family, the IPv6 one with BFD) peering with FRR on the lab router,
which installs the VIPs' ECMP routes; a client behind the router sends GET /readyz through the
VIP in a bounded loop and every request is counted (errors, resets, timeouts, wrong answers)
while a node's cpvip gets SIGTERM, its apiserver is SIGSTOPped, it falls silent (BFD), and its
apiserver is killed: each time that node's next hop (only that one) leaves the router's FIB.

One module-scoped control plane (starting three apiservers is the slow part); the destructive
kill comes last. Runtime: 50-80 s on this 2-core machine (shared), most of it the control plane.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from ironlb.cpvip import manifest
from ironlb.lab import cpvip as lab_cpvip
from ironlb.lab import routers, topology
from support import vipclient

pytestmark = pytest.mark.e2e

V4, V6 = lab_cpvip.BGP_VIP_V4, lab_cpvip.BGP_VIP_V6
INTERVAL = 0.02
REQUEST_TIMEOUT = 1.0


@dataclass
class Lab:
    cp: lab_cpvip.ControlPlanes
    frr: routers.Frr

    def next_hops(self, vip: str) -> set[str]:
        return set(self.frr.fib_routes(f"{vip}/{128 if ':' in vip else 32}"))

    def addresses(self, vip: str, members: list[lab_cpvip.Member] | None = None) -> set[str]:
        return {m.host.ipv6 if ":" in vip else m.host.ipv4 for m in members or self.cp.members}


def client(lab: Lab, vip: str, limit: float) -> vipclient.ReadyzClient:
    """GET https://VIP:6443/readyz every INTERVAL from behind the router for `limit` s."""
    cp = lab.cp
    assert cp.client is not None
    host = f"[{vip}]" if ":" in vip else vip
    url = f"https://{host}:6443/readyz"
    return vipclient.ReadyzClient(
        cp.client.ns.name, url, cp.pki / "ca.crt", limit, INTERVAL, REQUEST_TIMEOUT
    )


wait_until = vipclient.wait_until


def all_advertised(lab: Lab, stable: float = 1.5) -> None:
    """Every apiserver ready and all six next hops in the FIB, unchanged for `stable` seconds
    (an apiserver cut off from etcd turns unready a little after its node comes back)."""
    deadline, since = time.monotonic() + 30, None
    while since is None or time.monotonic() - since < stable:
        assert time.monotonic() < deadline, {vip: lab.next_hops(vip) for vip in (V4, V6)}
        complete = all(lab.next_hops(vip) == lab.addresses(vip) for vip in (V4, V6))
        if complete and all(lab.cp.healthy(m) for m in lab.cp.members):
            since = since or time.monotonic()
        else:
            since = None
        time.sleep(0.1)


@contextlib.contextmanager
def watching_next_hops(lab: Lab, vip: str, gone: lab_cpvip.Member) -> Iterator[list[float]]:
    """Poll the router's FIB every 50 ms: every sample must hold the other members' next hops;
    yields a list that receives the time `gone`'s next hop was first seen missing."""
    others = lab.addresses(vip, [m for m in lab.cp.members if m is not gone])
    seen: list[float] = []
    samples: list[set[str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            hops = lab.next_hops(vip)
            samples.append(hops)
            if not seen and lab.addresses(vip, [gone]).isdisjoint(hops):
                seen.append(time.monotonic())
            stop.wait(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(15)
    assert samples
    assert all(others <= s for s in samples), [s for s in samples if not others <= s][:3]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("cpvipbgp")
    lab = topology.Lab.create(workdir / "lab")
    try:
        cp = lab_cpvip.ControlPlanes.create(lab, workdir / "cp", vip=V4)
        frr = cp.start_router(workdir / "frr", bfd_v6=True)
        try:
            cp.start()
            for m in cp.members:
                cp.start_cpvip_bgp(m, V4)
                cp.start_cpvip_bgp(m, V6, "--bgp-bfd")
            yield Lab(cp, frr)
        finally:
            cp.stop()
            frr.stop()
    finally:
        lab.destroy()


def test_every_healthy_node_advertises_and_the_client_reaches_readyz(lab: Lab) -> None:
    started = time.monotonic()
    all_advertised(lab)
    print(f"all six next hops in the FIB {time.monotonic() - started:.2f}s after the wait began")

    def bfd_up() -> bool:
        peers = lab.frr.bfd_peers()
        return {peers.get(a, ("none",))[0] for a in lab.addresses(V6)} == {"up"}

    wait_until(bfd_up, 10)
    for m in lab.cp.members:
        # Accepted locally on lo (host route), not on the LAN interface (no ARP/NDP for it).
        assert m.holds(V4, "lo")
        assert m.holds(V6, "lo")
        assert not m.holds(V4)
    for vip in (V4, V6):
        with client(lab, vip, limit=5.0) as c:
            time.sleep(1.0)
        assert c.buckets()["ok"] >= 5, c.buckets()
        assert not c.failed(), c.buckets()


def test_sigterm_withdraws_first_and_loses_at_most_the_request_in_flight(lab: Lab) -> None:
    """SIGTERM: withdrawal (the apiserver still answers meanwhile), VIP kept on lo for the
    handover time, Cease, exit 0. The router rehashes flows when a next hop leaves: the one
    connection in flight at that instant may be sent to another node and reset, so <= 1."""
    all_advertised(lab)
    m = lab.cp.members[0]
    with watching_next_hops(lab, V4, m) as gone, client(lab, V4, limit=20.0) as c:
        time.sleep(0.5)
        sent = time.monotonic()
        m.signal("cpvip", signal.SIGTERM)
        rc = m.procs.pop("cpvip").wait(10)
        wait_until(lambda: gone, 5)
        time.sleep(0.5)
    assert rc == 0
    assert not m.holds(V4, "lo")
    print(f"sigterm: next hop gone after {gone[0] - sent:.3f}s; buckets {dict(c.buckets())}")
    assert len(c.failed()) <= 1, c.failed()
    assert c.buckets()["ok"] > 20
    lab.cp.start_cpvip_bgp(m, V4)
    all_advertised(lab)


def test_sigstopped_apiserver_is_withdrawn_and_comes_back(lab: Lab) -> None:
    """IPv6 this time. A stopped apiserver still completes TCP handshakes (the kernel does), so
    a request hashed to it before the withdrawal times out; after it, none."""
    all_advertised(lab)
    m = lab.cp.members[1]
    with watching_next_hops(lab, V6, m) as gone, client(lab, V6, limit=20.0) as c:
        time.sleep(0.5)
        stopped = time.monotonic()
        with lab.cp.paused(m):
            wait_until(lambda: gone, 5)
            time.sleep(1.5)
            assert not m.holds(V6, "lo")  # the drain time (1 s) is over
    withdrawn = gone[0]
    print(f"sigstop: next hop gone after {withdrawn - stopped:.3f}s; buckets {dict(c.buckets())}")
    # Each failure is a request sent to the stopped node before its next hop left the FIB (or
    # the one in flight when it did), and they run one at a time, each taking at most
    # REQUEST_TIMEOUT: bounded by the withdrawal time.
    late = [(t - withdrawn, b) for t, b in c.failed() if t > withdrawn]
    assert not late, late
    assert len(c.failed()) <= (withdrawn - stopped) / REQUEST_TIMEOUT + 2, c.buckets()
    assert c.buckets()["ok"] > 20
    # SIGCONT: healthy again, advertised again, without a restart.
    all_advertised(lab)
    assert m.holds(V6, "lo")


def test_bgp_mode_refuses_a_vip_inside_a_node_subnet(lab: Lab) -> None:
    m = lab.cp.members[2]
    argv = [sys.executable, "-m", "ironlb.cli", "cpvip", "--mode=bgp", "--address=198.18.0.99"]
    argv += ["--bgp-peers=198.18.0.1", "--bgp-peer-asn=64500", "--bgp-local-asn=64520"]
    out = subprocess.run(m.host.ns.argv(argv), capture_output=True, timeout=30, check=False)
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 2
    assert len(lines) == 1, lines
    assert "outside the nodes' subnets" in lines[0]


def test_bgp_manifest_passes_a_server_side_dry_run_through_the_vip(lab: Lab) -> None:
    cp = lab.cp
    assert cp.client is not None
    pod = manifest.static_pod(
        V4,
        mode="bgp",
        bgp_args=["--bgp-peers=198.18.0.1", "--bgp-peer-asn=64500", "--bgp-local-asn=64520"],
        bgp_password_path="/etc/kubernetes/ironlb-bgp-password",
    )
    kubectl = [str(cp.bin_dir / "kubectl"), f"--kubeconfig={cp.workdir / 'vip.kubeconfig'}"]
    # No kube-controller-manager in this lab to create the service account.
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    for doc, extra in ((sa, ["-n", "kube-system"]), (pod, ["--dry-run=server"])):
        out = subprocess.run(
            cp.client.ns.argv([*kubectl, "apply", *extra, "-f", "-"]),
            input=yaml.safe_dump(doc).encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr.decode()
    assert b"created (server dry run)" in out.stdout


def test_silent_node_death_bfd_withdraws_before_the_hold_time(lab: Lab) -> None:
    """Every packet of a node's LAN interface dropped, link up (a node dead without a word):
    the router notices by BFD (300 ms x 3) on the IPv6 sessions, by the hold time (3 s) on the
    IPv4 ones. The node comes back and advertises again by itself."""
    all_advertised(lab)
    m = lab.cp.members[0]
    with (
        watching_next_hops(lab, V6, m) as gone6,
        watching_next_hops(lab, V4, m) as gone4,
        topology.silenced(m.host),
    ):
        dead = time.monotonic()
        wait_until(lambda: gone6 and gone4, 8)
    by_bfd, by_hold = gone6[0] - dead, gone4[0] - dead
    print(f"silent death: IPv6 (BFD) gone after {by_bfd:.3f}s, IPv4 (hold) after {by_hold:.3f}s")
    assert by_bfd < 2.0
    assert by_bfd < by_hold
    all_advertised(lab, stable=3.0)


def test_killed_apiserver_is_withdrawn_while_the_others_stay(lab: Lab) -> None:
    """SIGKILL: the node refuses connections at once (the VIP is still on lo during the drain
    time), so requests hashed to it fail fast until its next hop leaves the FIB; none after."""
    all_advertised(lab)
    m = lab.cp.members[2]
    with watching_next_hops(lab, V4, m) as gone, client(lab, V4, limit=20.0) as c:
        time.sleep(0.5)
        killed = time.monotonic()
        m.kill("kube-apiserver")
        wait_until(lambda: gone, 5)
        time.sleep(1.5)
    withdrawn = gone[0]
    print(f"kill: next hop gone after {withdrawn - killed:.3f}s; buckets {dict(c.buckets())}")
    assert lab.next_hops(V6) == lab.addresses(V6, lab.cp.members[:2])
    late = [(t - withdrawn, b) for t, b in c.failed() if t > withdrawn]
    assert not late, late
    # At most every request sent between the kill and the withdrawal (one per INTERVAL).
    assert len(c.failed()) <= (withdrawn - killed) / INTERVAL + 1, c.buckets()
    assert all(b == "ok" for _, b in c.results[-10:]), c.results[-10:]
    assert not m.holds(V4, "lo")
