"""Real-nodes lab benchmark: how long a user waits, and how fast a node's death is survived.

Each round builds a fresh 3-node real cluster (kubelet, containerd, kube-proxy; binaries and
images cached), installs ironlb with its Helm chart, applies the demo configuration, Deployment
and Service, then kills the node announcing the demo address (every process, pods included, and
its link) while a LAN client sends one HTTP request every 20 ms (each a new connection, 0.5 s
at most). Figures per round: cluster Ready, chart installed (every pod Ready), demo answered,
and failover (from the kill to the first answer after it). Rounds: 3 (--quick 1).

Last line: `realnodes_failover_median_ms: <median> ms`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (first: it puts tests/ on the path, for support.traffic)
from ironlb.lab import nodes, playground, routers
from support import traffic


def round_once(workdir: Path) -> dict[str, float]:
    started = time.monotonic()
    rc = nodes.RealCluster.start(workdir)
    frr: routers.Frr | None = None
    try:
        c = rc.cluster
        client = c.lab.add_client()
        router = c.lab.add_router()
        frr = routers.Frr(router, workdir / "frr")
        frr.start(
            routers.RouterConfig(
                playground.ROUTER_AS,
                tuple(routers.Neighbor(n.host.ipv4, playground.NODE_AS) for n in rc.nodes.values()),
            )
        )
        install = rc.install_ironlb()
        playground.apply_demo(rc)
        ip = playground._wait_for_address(c, "default", "demo", within=60)
        playground._wait_for_answer(client, ip)
        demo = time.monotonic() - started
        owner = ""
        deadline = time.monotonic() + 30
        while not owner and time.monotonic() < deadline:
            out = rc.kubectl(
                "get",
                "servicel2statuses",
                "-n",
                "metallb-system",
                "-o",
                "jsonpath={.items[*].metadata.labels.metallb\\.io/node}",
            )
            owner = out.split()[0] if out.split() else ""
            time.sleep(0.2)
        stream = traffic.Stream(client.ns.name, ip, count=750, interval=0.02, timeout=0.5)
        stream.start()
        time.sleep(2.0)
        rc.kill_node(int(owner.removeprefix("node-")))
        killed = time.monotonic()  # dead: every process killed, link down
        stream.join()
        first = next((t for t, body in stream.results if t >= killed and body), None)
        return {
            "ready": rc.ready_seconds,
            "install": install,
            "demo": demo,
            "failover": (first - killed) if first is not None else float("nan"),
        }
    finally:
        if frr is not None:
            frr.stop()
        rc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, --quick 1)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    results = []
    for r in range(rounds):
        with tempfile.TemporaryDirectory(prefix="ironlb-bench-real-") as tmp:
            res = round_once(Path(tmp))
        results.append(res)
        print(
            f"round {r + 1}: cluster Ready {res['ready']:.1f} s, chart {res['install']:.1f} s,"
            f" demo answered {res['demo']:.1f} s after start,"
            f" failover {res['failover'] * 1000:.0f} ms",
            flush=True,
        )
    for key in ("ready", "install", "demo"):
        values = [r[key] for r in results]
        print(f"{key}: median {statistics.median(values):.1f} s (n={len(values)})")
    gaps = [r["failover"] for r in results]
    print(f"realnodes_failover_median_ms: {statistics.median(gaps) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
