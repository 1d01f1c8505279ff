"""Layer-2 failover benchmark in the lab, with default settings.

Three nodes run a speaker and a backend each (kube-proxy-like DNAT), the controller and the real
API server run on the control-plane host, a LAN client sends one HTTP request every 10 ms (each
a new TCP connection, bounded) to a LoadBalancer Service address:

- kills (20, --quick 5): the owner's speaker is SIGKILLed and its link set down; failover time
  is the time from the last answer of the old owner to the first answer of the new one. The
  node is then restored and the address settles back before the next round.
- graceful handovers (5, --quick 2): the owner's speaker gets SIGTERM and the node's link goes
  down the moment the speaker has exited (a node shutting down: nothing reaches it any more);
  the node comes back after the stream. Every failed request is counted, by kind (timeouts,
  resets, refusals, other errors, empty answers, non-200 answers): a handover that hands over
  nothing loses requests here, as the kills do.

Last line: `l2_failover_median_ms: <median> ms`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common  # first: it puts tests/ on the path, for support.traffic
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns
from support import traffic

NODES = (1, 2, 3)


class Bench:
    stream = 400
    """Requests per kill, one every 10 ms: 4 s of them, stopped at the failover."""

    def __init__(self, c: lab_cluster.Cluster) -> None:
        self.c = c
        self.hosts, self.client, self.procs = common.layer2_service(c, NODES)
        self.speakers: dict[int, components.Process] = {}
        self.lost_in_kills = 0
        self.sent_in_kills = 0
        self.start_speakers(NODES)
        self.ip = self.wait_for_address()

    def start_speakers(self, indexes: tuple[int, ...]) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(self.c, i, wait=False)
        for i in indexes:
            self.speakers[i].wait_ready()

    def wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ips = components.service_status(self.c, "default", "bench")
            if ips:
                return ips[0]
            time.sleep(0.1)
        raise SystemExit("the bench Service got no address")

    def owner(self, within: float = 10.0) -> str:
        """The node answering now (three answers in a row from the same node)."""
        deadline = time.monotonic() + within
        seen: list[str | None] = []
        with netns.entered(self.client.ns.name):
            while time.monotonic() < deadline:
                seen.append(traffic.get(self.ip, timeout=0.3))
                if len(seen) >= 3 and seen[-1] and seen[-3:] == [seen[-1]] * 3:
                    return str(seen[-1])
                time.sleep(0.05)
        raise SystemExit(f"no stable owner for {self.ip}: {seen[-10:]}")

    def kill_round(self) -> tuple[float, str, str]:
        old = self.owner()
        index = int(old.removeprefix("node-"))
        stream = traffic.Stream(
            self.client.ns.name, self.ip, count=self.stream, interval=0.01, timeout=0.3
        ).start()
        time.sleep(0.5)
        self.speakers.pop(index).kill()
        self.hosts[index].ns.ip("link", "set", "eth0", "down")
        deadline = time.monotonic() + 10
        gap = None
        while gap is None and time.monotonic() < deadline:
            time.sleep(0.1)
            new = next((b for _, b in list(stream.results) if b and b != old), None)
            gap = stream.failover(old, new) if new else None
        stream.stop()
        self.hosts[index].ns.ip("link", "set", "eth0", "up")
        self.start_speakers((index,))
        if gap is None:
            raise SystemExit(f"no failover from {old} within 10 s")
        self.lost_in_kills += stream.lost
        self.sent_in_kills += len(stream.results)
        time.sleep(1.5)  # the node is back: let the address settle before the next round
        return gap, old, str(new)

    def graceful_round(self) -> tuple[dict[str, int], int]:
        old = self.owner()
        index = int(old.removeprefix("node-"))
        time.sleep(1.5)  # past the takeover's gratuitous repeats: a steady state
        stream = traffic.Stream(
            self.client.ns.name, self.ip, count=300, interval=0.01, timeout=0.5
        ).start()
        time.sleep(0.5)
        self.speakers.pop(index).stop()
        self.hosts[index].ns.ip("link", "set", "eth0", "down")
        stream.join()
        self.hosts[index].ns.ip("link", "set", "eth0", "up")
        self.start_speakers((index,))
        time.sleep(1.5)
        if stream.lost != stream.failures:
            raise SystemExit(f"uncounted failures: {stream.errors} vs {stream.failures}")
        return dict(stream.errors), len(stream.results)

    def close(self) -> None:
        for proc in [*self.speakers.values(), *self.procs]:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 kills and 2 handovers")
    parser.add_argument("--kills", type=int, help="owner kills (default 20, --quick 5)")
    args = parser.parse_args()
    kills = args.kills or (5 if args.quick else 20)
    graceful = 2 if args.quick else 5
    with common.cluster() as c:
        bench = Bench(c)
        try:
            gaps = []
            for k in range(kills):
                gap, old, new = bench.kill_round()
                gaps.append(gap * 1000)
                print(f"kill {k + 1:2d}: {old} -> {new}: {gap * 1000:.0f} ms", flush=True)
            lost, sent = 0, 0
            for g in range(graceful):
                errors, total = bench.graceful_round()
                lost += sum(errors.values())
                sent += total
                print(
                    f"graceful {g + 1}: {total} requests, failures {errors or 'none'}", flush=True
                )
        finally:
            bench.close()
    print(
        f"failover over {kills} kills: median {statistics.median(gaps):.0f} ms, "
        f"p99 {common.pct(gaps, 0.99):.0f} ms, min {min(gaps):.0f} ms, max {max(gaps):.0f} ms"
    )
    print(
        f"requests lost (every kind of failure), node link down as its speaker exits: "
        f"SIGTERM {lost} of {sent} over {graceful} handovers; "
        f"SIGKILL {bench.lost_in_kills} of {bench.sent_in_kills} over {kills} kills"
    )
    print(f"l2_failover_median_ms: {statistics.median(gaps):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
