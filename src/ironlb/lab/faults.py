"""Faults for chaos tests and benches, confined to the lab's own namespaces and cgroups.

- `frame_loss(ns, percent)`: every frame arriving on the node's LAN interface is dropped with
  probability `percent` % (this kernel has no netem: an nftables `netdev` ingress rule with
  `numgen random`), and the drops are counted.
- `partitioned(ns)`: every frame in and out of the node's LAN interface is dropped (nftables
  `netdev` ingress and egress hooks: raw ARP/NDP sockets cannot slip past, as they would past
  an `inet` filter), until the block exits.
- `cpu_limited(prefix, name, pids, millicores)`: the processes `pids` (with every thread) run in
  a cgroup v1 `cpu` group of their own under the lab's prefix, with a CFS quota of `millicores`
  per 100 ms period; on exit they move back to where they were and the group is removed (the
  lab's teardown removes it too, by prefix, if the test dies).

The nftables table is named `ironlb_chaos` and only ever created inside a lab namespace (a
namespace whose name starts with a lab prefix); the cgroup only under a lab-prefixed name.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ironlb.lab import cgroups, netns

TABLE = "ironlb_chaos"
CPU_ROOT = cgroups.ROOT / "cpu"
CFS_PERIOD_US = 100_000
_LAB_NS = re.compile(r"^ilb-[0-9a-z]{3,12}-")
_COUNTER = re.compile(r"counter packets (\d+) bytes \d+")


def _check_lab(ns: netns.Netns) -> None:
    if not _LAB_NS.match(ns.name):
        raise ValueError(f"{ns.name!r} is not a lab namespace: faults only go into the lab's own")


def _nft(ns: netns.Netns, script: str) -> None:
    netns.run(ns.argv(["nft", "-f", "-"]), stdin=script)


def clear(ns: netns.Netns) -> None:
    """Remove every fault of this module from `ns` (nothing if there is none)."""
    _check_lab(ns)
    _nft(ns, f"table netdev {TABLE}\ndelete table netdev {TABLE}\n")


def set_loss(ns: netns.Netns, percent: float, dev: str = "eth0") -> None:
    """Drop `percent` % of the frames arriving on `dev`, at random, from now on (replaces any
    earlier fault of this module in `ns`)."""
    _check_lab(ns)
    if not 0 <= percent <= 100:
        raise ValueError(f"loss must be in [0, 100] %, not {percent}")
    # numgen yields 0..9999 uniformly; drop when below percent * 100 (0.01 % resolution).
    threshold = round(percent * 100)
    _nft(
        ns,
        f"table netdev {TABLE}\ndelete table netdev {TABLE}\n"
        f"table netdev {TABLE} {{\n"
        f"  chain loss {{\n"
        f"    type filter hook ingress device {dev} priority -500; policy accept;\n"
        f"    numgen random mod 10000 < {threshold} counter drop\n"
        f"  }}\n"
        f"}}\n",
    )


def set_partition(ns: netns.Netns, dev: str = "eth0") -> None:
    """Drop every frame in and out of `dev` from now on (replaces any earlier fault)."""
    _check_lab(ns)
    _nft(
        ns,
        f"table netdev {TABLE}\ndelete table netdev {TABLE}\n"
        f"table netdev {TABLE} {{\n"
        f"  chain in {{\n"
        f"    type filter hook ingress device {dev} priority -500; policy accept;\n"
        f"    counter drop\n"
        f"  }}\n"
        f"  chain out {{\n"
        f"    type filter hook egress device {dev} priority -500; policy accept;\n"
        f"    counter drop\n"
        f"  }}\n"
        f"}}\n",
    )


def dropped(ns: netns.Netns) -> int:
    """Frames dropped by this module's rules in `ns` since they were set."""
    _check_lab(ns)
    text = ns.run("nft", "list", "table", "netdev", TABLE, check=False)
    return sum(int(n) for n in _COUNTER.findall(text))


@contextlib.contextmanager
def frame_loss(
    nss: Iterable[netns.Netns], percent: float, dev: str = "eth0"
) -> Iterator[list[netns.Netns]]:
    """`set_loss` in every namespace of `nss` for the block, cleared after."""
    done: list[netns.Netns] = []
    try:
        for ns in nss:
            set_loss(ns, percent, dev)
            done.append(ns)
        yield done
    finally:
        for ns in done:
            clear(ns)


@contextlib.contextmanager
def partitioned(ns: netns.Netns, dev: str = "eth0") -> Iterator[netns.Netns]:
    """`set_partition` for the block, healed after."""
    set_partition(ns, dev)
    try:
        yield ns
    finally:
        clear(ns)


def _cpu_cgroup_of(pid: int) -> Path:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return CPU_ROOT / path.lstrip("/")
    raise netns.LabError(f"process {pid} is in no cgroup v1 'cpu' hierarchy")


@contextlib.contextmanager
def cpu_limited(prefix: str, name: str, pids: Iterable[int], millicores: int) -> Iterator[Path]:
    """Run `pids` under a CFS quota of `millicores` (1000 = one core) for the block."""
    if not _LAB_NS.match(prefix + "-"):
        raise ValueError(f"{prefix!r} is not a lab prefix")
    if millicores < 1:
        raise ValueError("millicores must be at least 1")
    if not (CPU_ROOT / "cpu.cfs_quota_us").exists():
        raise netns.LabError(f"no cgroup v1 cpu controller at {CPU_ROOT}")
    group = CPU_ROOT / f"{prefix}-chaos-{name}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(CFS_PERIOD_US * millicores // 1000))
    homes: dict[int, Path] = {}
    try:
        for pid in pids:
            homes[pid] = _cpu_cgroup_of(pid)
            (group / "cgroup.procs").write_text(str(pid))
        yield group
    finally:
        for pid, home in homes.items():
            with contextlib.suppress(OSError):  # the process may have exited meanwhile
                (home / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()


def throttled_seconds(group: Path) -> float:
    """Seconds the processes of `group` were held back by the quota (cpu.stat)."""
    for line in (group / "cpu.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "throttled_time":
            return int(value) / 1e9
    return 0.0
