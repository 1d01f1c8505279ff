"""Layer-2 ownership under 30 % frame loss, plain SWIM against Lifeguard, in the lab.

Three nodes run a speaker and a backend each, the controller and the API server run on the
control-plane host; one LoadBalancer Service. Every node drops 30 % of the frames it receives
(`ironlb.lab.faults.frame_loss`: nftables netdev ingress, `numgen random`). A LAN client asks
"who has <address>?" every 20 ms and records every answer and its MAC
(`support.ownership.ArpRecorder`). For each mode (speakers run with `--no-lifeguard`, then
with the default `--lifeguard`; `--no-plain`: Lifeguard only):

- false moves: for `--window` seconds (default 60, --quick 8) no node dies; every change of
  the answering MAC is a false move (an address that moved, resetting connections);
- failover: `--kills` times (default 10, --quick 1) the owner's speaker is SIGKILLed and its
  link set down; failover is the time from the last answer of the old owner to the first
  answer of another node (ARP answers are lost 30 % of the time too: add ~20 ms of sampling
  noise). The node then comes back and the address settles before the next kill.

Timeouts (no failover within 10 s) are counted and printed, not dropped. Last line:
`lossy_false_moves_per_min: <lifeguard> moves/min`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import common  # first: it puts tests/ on the path, for support.ownership
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, faults
from support import ownership

NODES = (1, 2, 3)
LOSS = 30.0


class Bench:
    def __init__(self, c: lab_cluster.Cluster) -> None:
        self.c = c
        self.hosts, self.client, self.procs = common.layer2_service(c, NODES)
        self.speakers: dict[int, components.Process] = {}
        self.extra: tuple[str, ...] = ()
        self.ip = ""
        self.node_of = {host.mac: i for i, host in self.hosts.items()}

    def start_speakers(self, indexes: tuple[int, ...]) -> None:
        for i in indexes:
            self.speakers[i] = components.start_speaker(self.c, i, extra=self.extra, wait=False)
        for i in indexes:
            self.speakers[i].wait_ready(timeout=60)

    def wait_for_address(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ips = components.service_status(self.c, "default", "bench")
            if ips:
                return ips[0]
            time.sleep(0.1)
        raise SystemExit("the bench Service got no address")

    def owner(self, rec: ownership.ArpRecorder, within: float = 15.0) -> int:
        """The node answering now: the last 10 answers, over at least 0.5 s, all from it."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            time.sleep(0.5)
            recent = rec.snapshot(time.monotonic() - 0.5)
            macs = {a.mac for a in recent}
            if len(recent) >= 10 and len(macs) == 1:
                return self.node_of[macs.pop()]
        raise SystemExit(f"no stable owner for {self.ip}")

    def false_moves(self, rec: ownership.ArpRecorder, window: float) -> tuple[int, int, int]:
        start = time.monotonic()
        time.sleep(window)
        answers = rec.snapshot(start)
        moves = ownership.owner_changes(answers, self.ip)
        doubles = ownership.double_owners(answers, self.ip, 0.05)
        return len(moves), len(doubles), len(answers)

    def kill_round(self, rec: ownership.ArpRecorder, restore: bool = True) -> float | None:
        index = self.owner(rec)
        old_mac = self.hosts[index].mac
        killed_at = time.monotonic()
        self.speakers.pop(index).kill()
        self.hosts[index].ns.ip("link", "set", "eth0", "down")
        gap = None
        deadline = killed_at + 10
        while gap is None and time.monotonic() < deadline:
            time.sleep(0.1)
            answers = rec.snapshot(killed_at - 2)
            new = next((a for a in answers if a.at > killed_at and a.mac != old_mac), None)
            if new is not None:
                last_old = max((a.at for a in answers if a.mac == old_mac), default=killed_at)
                gap = new.at - last_old
        self.hosts[index].ns.ip("link", "set", "eth0", "up")
        if restore:  # else the next mode starts every speaker again
            self.start_speakers((index,))
            time.sleep(2.0)  # the node is back: let the address settle before the next round
        return gap

    def stop_speakers(self) -> None:
        for proc in self.speakers.values():
            proc.stop()
        self.speakers.clear()

    def close(self) -> None:
        for proc in [*self.speakers.values(), *self.procs]:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 s windows and 1 kill per mode")
    parser.add_argument("--window", type=float, help="seconds without deaths per mode")
    parser.add_argument("--kills", type=int, help="owner kills per mode")
    parser.add_argument(
        "--no-plain", action="store_true", help="measure Lifeguard only (long windows)"
    )
    args = parser.parse_args()
    window = args.window or (8.0 if args.quick else 60.0)
    kills = args.kills or (1 if args.quick else 10)
    results: dict[str, tuple[int, float, list[float], int, int]] = {}
    with common.cluster() as c:
        bench = Bench(c)
        try:
            nss = [h.ns for h in bench.hosts.values()]
            modes = (("plain", ("--no-lifeguard",)), ("lifeguard", ()))
            for mode, extra in modes[1:] if args.no_plain else modes:
                bench.extra = extra
                bench.start_speakers(NODES)
                bench.ip = bench.ip or bench.wait_for_address()
                rec = ownership.ArpRecorder(
                    bench.client.ns.name,
                    "eth0",
                    bench.client.mac,
                    bench.client.ipv4,
                    [bench.ip],
                    # the window, then each kill (up to 10 s + 2 s to settle), with room
                    duration=window + 15.0 * kills + 60.0,
                )
                with ownership.recording(rec), faults.frame_loss(nss, LOSS):
                    bench.owner(rec)
                    moves, doubles, answers = bench.false_moves(rec, window)
                    print(
                        f"{mode}: {moves} false moves in {window:.0f} s at {LOSS:.0f} % loss"
                        f" ({answers} answers, {doubles} with two MACs within 50 ms)",
                        flush=True,
                    )
                    gaps: list[float] = []
                    timeouts = 0
                    for k in range(kills):
                        gap = bench.kill_round(rec, restore=k + 1 < kills)
                        if gap is None:
                            timeouts += 1
                            print(f"{mode} kill {k + 1}: no failover within 10 s", flush=True)
                        else:
                            gaps.append(gap * 1000)
                            print(f"{mode} kill {k + 1}: {gap * 1000:.0f} ms", flush=True)
                    dropped = sum(faults.dropped(ns) for ns in nss)
                print(f"{mode}: frames dropped by the loss rules: {dropped}", flush=True)
                bench.stop_speakers()
                results[mode] = (moves, window, gaps, timeouts, answers)
        finally:
            bench.close()
    for mode, (moves, win, gaps, timeouts, _) in results.items():
        median = f"{statistics.median(gaps):.0f} ms" if gaps else "n/a"
        spread = f"min {min(gaps):.0f}, max {max(gaps):.0f} ms" if gaps else ""
        print(
            f"{mode}: false moves {moves * 60 / win:.1f}/min ({moves} in {win:.0f} s);"
            f" failover median {median} over {len(gaps)} kills ({spread}), {timeouts} timeouts"
        )
    moves, win, *_ = results["lifeguard"]
    print(f"lossy_false_moves_per_min: {moves * 60 / win:.1f} moves/min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
