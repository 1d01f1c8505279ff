"""A throwaway containerd for tests: import OCI archives, run containers with runc.

containerd runs in a private mount and network namespace of its own (`unshare -m -n`) with a
tmpfs over /run there, its root, state, socket and opt directories under one run directory, and
the CRI plugin off: it never touches the host's /run/containerd or /var/lib/containerd, and its
containers have no network at all. `ctr` runs inside the same namespaces (`nsenter`), so its
FIFOs land on that private /run too. Containers get the cgroup `<prefix>/<id>` relative to this
process's own cgroup (runc's reading of a relative cgroupsPath).

Every run has a prefix `ironlb-image-<hex>`: its directory `<tmp>/ironlb-image/<prefix>` records
the owning PID, and `sweep_stale()` kills (by PID) the containerd, shims and container processes
of any run whose owner is dead, then removes its cgroups and directory: a crashed run leaves
nothing behind for long.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ironlb.lab import netns

RUNS = Path(tempfile.gettempdir()) / "ironlb-image"
NAMESPACE = "k8s.io"

CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"""


class ContainerdError(Exception):
    """A containerd or ctr step failed; the message has the command and its stderr."""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _pids_mentioning(needle: str) -> list[int]:
    """PIDs whose command line contains `needle` (a run directory: containerd, its shims)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _own_cgroup_dirs() -> list[Path]:
    """This process's cgroup directory in every mounted hierarchy (v1 and v2)."""
    memberships: dict[frozenset[str], str] = {}
    unified = None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers:
            memberships[frozenset(controllers.split(","))] = path
        else:
            unified = path
    dirs = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        fields, (fstype, _, options) = left.split(), right.split(None, 2)
        mount_root, mount_point = fields[3], Path(fields[4])
        path = None
        if fstype == "cgroup2":
            path = unified
        elif fstype == "cgroup":
            opts = set(options.split(","))
            path = next((p for c, p in memberships.items() if c <= opts), None)
        if path is not None and path.startswith(mount_root):
            dirs.append(mount_point / path[len(mount_root) :].lstrip("/"))
    return dirs


def _remove_cgroups(prefix: str) -> None:
    for own in _own_cgroup_dirs():
        top = own / prefix
        if not top.is_dir():
            continue
        # Deepest first; a cgroup with processes cannot be removed, so kill those by PID.
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _kill_procs_of(d)
            with contextlib.suppress(OSError):
                d.rmdir()
        _kill_procs_of(top)
        with contextlib.suppress(OSError):
            top.rmdir()


def _kill_procs_of(cgroup: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (cgroup / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _kill(pids: Sequence[int], within: float = 5.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + within
    while any(netns.pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _destroy(run_dir: Path) -> None:
    prefix = run_dir.name
    _remove_cgroups(prefix)  # container processes first: their shims then exit
    _kill(_pids_mentioning(str(run_dir)))
    _remove_cgroups(prefix)
    subprocess.run(["rm", "-rf", str(run_dir)], check=False, timeout=120)


def sweep_stale() -> list[str]:
    """Destroy every run whose owner is dead. Returns their prefixes."""
    swept = []
    for run_dir in sorted(RUNS.glob("ironlb-image-*")):
        try:
            owner = int((run_dir / "owner").read_text())
        except (OSError, ValueError):
            owner = 0
        if owner and netns.pid_alive(owner):
            continue
        _destroy(run_dir)
        swept.append(run_dir.name)
    return swept


class Containerd:
    """One running containerd; use `start()` as a context manager."""

    def __init__(self, run_dir: Path, proc: subprocess.Popen[bytes]) -> None:
        self.dir = run_dir
        self.prefix = run_dir.name
        self.proc = proc

    @classmethod
    @contextlib.contextmanager
    def start(cls, within: float = 30.0) -> Iterator[Containerd]:
        sweep_stale()
        run_dir = RUNS / f"ironlb-image-{secrets.token_hex(4)}"
        run_dir.mkdir(parents=True)
        (run_dir / "owner").write_text(f"{os.getpid()}\n")
        (run_dir / "config.toml").write_text(CONFIG.format(d=run_dir))
        log = (run_dir / "containerd.log").open("wb")
        # `unshare` without --fork and `exec`: the Popen PID is containerd's own.
        script = 'mount -t tmpfs -o mode=0755 tmpfs /run && exec containerd --config "$1"'
        unshare = ["unshare", "-m", "-n", "--propagation", "private"]
        proc = subprocess.Popen(
            [*unshare, "sh", "-euc", script, "-", str(run_dir / "config.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        c = cls(run_dir, proc)
        try:
            deadline = time.monotonic() + within
            while c.ctr("version", check=False).returncode != 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise ContainerdError(f"containerd did not start: {c.log_tail()}")
                time.sleep(0.1)
            yield c
        finally:
            c.stop()

    def log_tail(self, lines: int = 15) -> str:
        text = (self.dir / "containerd.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def ctr(self, *args: str, check: bool = True, timeout: float = 120.0) -> Result:
        argv = ["nsenter", "-t", str(self.proc.pid), "-m", "-n", "--"]
        argv += ["ctr", "--address", str(self.dir / "containerd.sock"), "-n", NAMESPACE, *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise ContainerdError(f"ctr {' '.join(args)}: timed out after {timeout} s") from e
        if check and p.returncode != 0:
            raise ContainerdError(f"ctr {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
        return Result(p.returncode, p.stdout, p.stderr)

    def import_archive(self, archive: Path) -> list[str]:
        """Import an OCI archive under the names it carries; return every image name after."""
        self.ctr("images", "import", str(archive))
        return self.ctr("images", "ls", "--quiet").stdout.split()

    def run(self, image: str, *argv: str, read_only: bool = True, timeout: float = 60.0) -> Result:
        """Run `argv` (the image's entrypoint when empty) to completion in a fresh container
        with the image's own user, runc, no network, and (by default) a read-only root."""
        cid = f"c{secrets.token_hex(4)}"
        args = ["run", "--rm", "--cgroup", f"{self.prefix}/{cid}"]
        if read_only:
            args.append("--read-only")
        return self.ctr(*args, image, cid, *argv, check=False, timeout=timeout)

    def stop(self) -> None:
        _destroy(self.dir)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
