"""`ironlb doctor` diagnose time: the pure rules over a synthetic snapshot (no API server).

The snapshot is what a large cluster looks like to the doctor: 20 pools, 10 nodes each with a
speaker report announcing its share of the addresses, one L2Advertisement, N LoadBalancer
Services (10 000, --quick 1 000) with a ready endpoint each, of which 1 % are broken (no ready
endpoint) and 1 % pending (requesting an address outside every pool). The whole-cluster
`diagnose` is run R times (--rounds); every run is a sample (wall time, and the process's CPU
time, which a busy machine inflates less), and each run must find exactly the broken and
pending Services (a wrong answer is counted as an error, not timed away).

Last line: `diagnose_ms: <p50 of whole-cluster diagnose at the largest N> ms`.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time

from ironlb.core import config, diagnosis, election, model

POOLS = 20
NODES = 10
NS = "metallb-system"


def snapshot(n: int) -> tuple[diagnosis.Snapshot, int]:
    pools = [
        config.parse(
            {
                "apiVersion": "metallb.io/v1beta1",
                "kind": "IPAddressPool",
                "metadata": {"name": f"pool-{i:02d}", "namespace": NS},
                "spec": {"addresses": [f"198.18.{64 + 2 * i}.0/23"]},
            }
        )
        for i in range(POOLS)
    ]
    adv = config.parse(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": {"name": "all", "namespace": NS},
            "spec": {},
        }
    )
    nodes = [
        model.parse_node(
            {
                "metadata": {"name": f"node-{i}", "labels": {}},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": f"198.18.0.{10 + i}"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )
        for i in range(NODES)
    ]
    services = []
    endpoints = {}
    announced: dict[str, dict[str, str]] = {n.name: {} for n in nodes}
    expected = 0
    names = [election.NodeName(n.name) for n in nodes]
    for i in range(n):
        ip = str(ipaddress.IPv4Address("198.18.64.0") + i + 1)
        pending = i % 100 == 1
        broken = i % 100 == 2
        expected += pending or broken
        svc = model.parse_service(
            {
                "metadata": {"name": f"s{i:05d}", "namespace": "bench"},
                "spec": {
                    "type": "LoadBalancer",
                    "clusterIP": "198.18.96.1",
                    "ports": [{"port": 80}],
                    "selector": {"app": f"s{i}"},
                    **({"loadBalancerIP": "203.0.113.1"} if pending else {}),
                },
                "status": ({} if pending else {"loadBalancer": {"ingress": [{"ip": ip}]}}),
            }
        )
        services.append(svc)
        node = names[i % NODES]
        endpoints[svc.key] = (
            model.parse_endpoint_slice(
                {
                    "metadata": {
                        "name": f"s{i}-x",
                        "namespace": "bench",
                        "labels": {model.SERVICE_NAME_LABEL: f"s{i:05d}"},
                    },
                    "endpoints": [
                        {
                            "addresses": ["198.19.0.1"],
                            "nodeName": node,
                            "conditions": {"ready": not broken},
                        }
                    ],
                }
            ),
        )
        if not pending and not broken:
            owner = election.announcer_for(ipaddress.ip_address(ip), names)
            assert owner is not None
            announced[owner][ip] = "eth0"
    speakers = {
        n.name: diagnosis.SpeakerReport(
            n.name,
            key_id="k",
            live=tuple(names),
            interfaces=(diagnosis.InterfaceReport("eth0", ("198.18.0.0/16",)),),
            announced=announced[n.name],
        )
        for n in nodes
    }
    snap = diagnosis.Snapshot(
        services=tuple(services),
        endpoints=endpoints,
        nodes=tuple(nodes),
        config=config.Config.from_objects([*pools, adv]),
        namespace=NS,
        speakers=speakers,
        now=time.time(),
    )
    return snap, expected


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 000 Services only (< 60 s)")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    sizes = (1000,) if args.quick else (1000, 10000)
    result = 0.0
    for n in sizes:
        snap, expected = snapshot(n)
        samples: list[float] = []
        cpu: list[float] = []
        errors = 0
        for _ in range(args.rounds):
            start, start_cpu = time.perf_counter(), time.process_time()
            found = diagnosis.diagnose(snap)
            samples.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
            if len(found) != expected:
                errors += 1
        one = []
        for svc in snap.services[:: max(1, n // 50)]:
            start = time.perf_counter()
            diagnosis.diagnose(snap, svc.key)
            one.append((time.perf_counter() - start) * 1000)
        print(
            f"{n} Services: whole-cluster diagnose p50 {pct(samples, 0.5):.0f} ms, "
            f"p99 {pct(samples, 0.99):.0f} ms, max {max(samples):.0f} ms, "
            f"CPU p50 {pct(cpu, 0.5):.0f} ms "
            f"({len(samples)} runs, {expected} findings expected, {errors} wrong answers); "
            f"one Service p50 {pct(one, 0.5):.0f} ms ({len(one)} runs)"
        )
        if errors:
            print(f"error: {errors} runs found the wrong number of findings", file=sys.stderr)
            return 1
        result = pct(samples, 0.5)
    print(f"diagnose_ms: {result:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
