"""The lab's cgroups: the real nodes' kubelets put their pods under `/<prefix>-<node>` in every
cgroup hierarchy of this machine (cgroup v1 controllers and the v2 unified tree side by side).

`remove(prefix)` deletes those trees, deepest first, once their processes are gone: a cgroup
directory can only be removed when it has no processes and no children. It never touches a
cgroup whose name does not start with a lab prefix (`ilb-...-`).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
_LAB_RE = re.compile(r"^ilb-[0-9a-z]{3,12}-")


def hierarchies() -> list[Path]:
    """The mount points of every cgroup hierarchy (v1 controllers and v2) of this process."""
    found: list[Path] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype in ("cgroup", "cgroup2"):
                found.append(Path(fields[4]))
    return found


def mount_commands() -> list[str]:
    """Shell commands that mount every cgroup hierarchy of this machine again under
    /sys/fs/cgroup, as it is mounted here: for a new mount namespace whose /sys was replaced
    by the sysfs of another network namespace. Same hierarchies, same cgroups."""
    cmds = ["mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup"]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, superopts = fields[sep + 1], fields[sep + 3]
            target = fields[4]
            if fstype not in ("cgroup", "cgroup2") or not target.startswith(str(ROOT) + "/"):
                continue
            opts = [o for o in superopts.split(",") if o not in ("rw", "ro")]
            if fstype == "cgroup" and all(o.startswith("name=") for o in opts):
                opts = ["none", *opts]
            mount_opts = f" -o {','.join(opts)}" if opts else ""
            cmds.append(f"mkdir -p {target} && mount -t {fstype}{mount_opts} {fstype} {target}")
    return cmds


def lab_roots(prefix: str | None = None) -> list[Path]:
    """Top-level cgroups of lab nodes (of `prefix`, or of every lab run), in every hierarchy."""
    roots: list[Path] = []
    for h in hierarchies():
        with contextlib.suppress(OSError):
            for entry in h.iterdir():
                if not entry.is_dir() or not _LAB_RE.match(entry.name):
                    continue
                if prefix is None or entry.name.startswith(prefix + "-"):
                    roots.append(entry)
    return roots


def prefixes() -> set[str]:
    return {m.group(0).rstrip("-") for r in lab_roots() if (m := _LAB_RE.match(r.name))}


def remove(prefix: str, timeout: float = 10.0) -> list[Path]:
    """Remove every cgroup of lab run `prefix`, deepest first, waiting up to `timeout` seconds
    for processes that are still exiting. Returns what could not be removed."""
    if not _LAB_RE.match(prefix + "-"):
        raise ValueError(f"{prefix!r} is not a lab prefix")
    deadline = time.monotonic() + timeout
    while True:
        left: list[Path] = []
        for root in lab_roots(prefix):
            dirs = sorted(
                (Path(d) for d, _, _ in os.walk(root)), key=lambda p: len(p.parts), reverse=True
            )
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
