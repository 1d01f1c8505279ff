"""Network namespaces for the lab: create, run in, enter, probe from, and clean up.

Every namespace of one lab run is named `<prefix>-<role>`, with prefix `ilb-<6 hex>` and an owner
file `/run/ironlb-lab/<prefix>.owner` holding the owning PID (or `keep` for a lab started with
`ironlb lab up`, which outlives its command). `sweep_stale()` removes namespaces, and kills the
processes inside them, and the cgroups of its real nodes (`cgroups`), of every run whose owner is
dead: a crashed test run leaves nothing behind for long.

Safety: the lab never creates an interface in, or sends a packet from, the host's own network
namespace. Everything is inside namespaces created here, on the address ranges listed in
`topology`. Probes are bounded in count and time.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ironlb.lab import cgroups

RUN_DIR = Path(os.environ.get("IRONLB_LAB_RUN_DIR", "/run/ironlb-lab"))
NETNS_DIR = Path("/run/netns")
PREFIX_RE = re.compile(r"^(ilb-[0-9a-z]{3,12})-")
_CLONE_NEWNET = 0x40000000


class LabError(Exception):
    """A lab operation failed; the message says which command and why."""


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, stdin: str | None = None
) -> str:
    """Run a command in the current namespace, return stdout; raise LabError on failure."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=stdin
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout}s") from e
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def new_prefix() -> str:
    return f"ilb-{secrets.token_hex(3)}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(prefix: str, *, keep: bool = False) -> None:
    """Record who owns the namespaces of `prefix`, before creating any."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / f"{prefix}.owner").write_text("keep\n" if keep else f"{os.getpid()}\n")


def owner_alive(prefix: str) -> bool:
    try:
        owner = (RUN_DIR / f"{prefix}.owner").read_text().strip()
    except FileNotFoundError:
        return False
    return owner == "keep" or (owner.isdigit() and pid_alive(int(owner)))


def list_namespaces(prefix: str | None = None) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    names = sorted(p.name for p in NETNS_DIR.iterdir())
    if prefix is None:
        return [n for n in names if PREFIX_RE.match(n)]
    return [n for n in names if n.startswith(prefix + "-")]


def pids_in(name: str) -> list[int]:
    out = run(["ip", "netns", "pids", name], check=False, timeout=10)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_all_in(name: str, grace: float = 2.0) -> None:
    """SIGTERM every process in the namespace, then SIGKILL what is left after `grace`."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = pids_in(name)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)
        # Reap our own children so they do not linger as zombies (and count as alive).
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass


def destroy(prefix: str) -> None:
    """Kill every process in, and delete, every namespace of `prefix`; remove the cgroups of
    its real nodes; drop its owner file."""
    names = list_namespaces(prefix)
    for name in names:
        kill_all_in(name)
    for name in names:
        run(["ip", "netns", "del", name], check=False, timeout=10)
    # Pods of real nodes live in PID namespaces whose init was killed above: the kernel kills
    # them too, and their cgroups empty out shortly after.
    cgroups.remove(prefix)
    with contextlib.suppress(FileNotFoundError):
        (RUN_DIR / f"{prefix}.owner").unlink()


def sweep_stale() -> list[str]:
    """Destroy the namespaces of every lab run whose owner is gone. Returns the prefixes."""
    prefixes = {m.group(1) for n in list_namespaces() if (m := PREFIX_RE.match(n))}
    if RUN_DIR.is_dir():
        prefixes |= {p.name.removesuffix(".owner") for p in RUN_DIR.glob("ilb-*.owner")}
    prefixes |= cgroups.prefixes()
    stale = sorted(p for p in prefixes if not owner_alive(p))
    for prefix in stale:
        destroy(prefix)
    return stale


@dataclass(frozen=True, slots=True)
class Netns:
    """One named network namespace."""

    name: str

    @classmethod
    def create(cls, name: str) -> Netns:
        run(["ip", "netns", "add", name])
        ns = cls(name)
        ns.ip("link", "set", "lo", "up")
        # Lab nodes must behave like hosts on a LAN, deterministically: no IPv6 DAD delays,
        # no router solicitations, no stray autoconfigured addresses.
        for key, value in (
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
            # Keep IPv6 addresses across link down/up, as a host's network manager would:
            # tests take links down to kill nodes and bring them back.
            ("net.ipv6.conf.all.keep_addr_on_down", "1"),
            ("net.ipv6.conf.default.keep_addr_on_down", "1"),
        ):
            ns.sysctl(key, value)
        return ns

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 30.0) -> str:
        return run(self.argv(argv), check=check, timeout=timeout)

    def ip(self, *args: str, check: bool = True) -> str:
        return run(["ip", "-n", self.name, *args], check=check)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def spawn(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process in this namespace, in its own process group."""
        out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                self.argv(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]

    def link_mac(self, dev: str) -> str:
        links = json.loads(self.ip("-j", "link", "show", "dev", dev))
        return str(links[0]["address"])

    def neighbours(self, dev: str | None = None) -> dict[str, tuple[str | None, str]]:
        """The neighbour table: address -> (MAC or None, state), IPv4 and IPv6."""
        args = ["neigh", "show"] + (["dev", dev] if dev else [])
        table: dict[str, tuple[str | None, str]] = {}
        for line in self.ip(*args).splitlines():
            parts = line.split()
            if not parts:
                continue
            mac = parts[parts.index("lladdr") + 1] if "lladdr" in parts else None
            table[parts[0]] = (mac, parts[-1])
        return table

    def flush_neighbours(self, dev: str) -> None:
        self.ip("neigh", "flush", "dev", dev)

    # --- bounded probes --------------------------------------------------------------------

    def ping(self, address: str, *, count: int = 1, timeout: float = 1.0) -> bool:
        """True if `address` answers one of `count` echo requests (0.2 s apart) within
        `timeout` seconds."""
        count = max(1, min(count, 100))
        wait = max(1, int(timeout + 0.999))
        proc = subprocess.run(
            self.argv(
                ["ping", "-n", "-q", "-i", "0.2", "-c", str(count), "-w", str(wait), address]
            ),
            capture_output=True,
            text=True,
            timeout=wait + 5,
            check=False,
        )
        # Not the exit status: with -c and -w, ping fails unless *every* reply came back.
        match = re.search(r"(\d+) (?:packets )?received", proc.stdout)
        return bool(match and int(match.group(1)) > 0)

    def arping(self, address: str, dev: str, *, count: int = 1, timeout: float = 1.0) -> str | None:
        """MAC that answers an ARP request for `address` on `dev`, or None."""
        count = max(1, min(count, 50))
        proc = subprocess.run(
            self.argv(
                ["arping", "-q", "-r", "-c", str(count), "-w", f"{timeout:.3f}", "-i", dev, address]
            ),
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
        lines = proc.stdout.split()
        return lines[0] if proc.returncode == 0 and lines else None

    def arping_all(
        self, address: str, dev: str, *, count: int = 3, timeout: float = 2.0
    ) -> set[str]:
        """Every MAC that answers any of `count` ARP requests for `address` on `dev` within
        `timeout` seconds (empty: nobody). For negative checks ("nobody answers", "only X
        answers"): unlike `arping`, a second answerer is not hidden behind the first, and the
        whole `timeout` is waited for."""
        count = max(1, min(count, 50))
        proc = subprocess.run(
            self.argv(
                ["arping", "-r", "-c", str(count), "-w", f"{timeout:.3f}", "-i", dev, address]
            ),
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
        return {w for w in proc.stdout.split() if _MAC.fullmatch(w)}

    def http_get(self, url: str, *, timeout: float = 2.0) -> str | None:
        """Body of one bounded HTTP GET, or None on any failure."""
        proc = subprocess.run(
            self.argv(
                [
                    "curl",
                    "-s",
                    "-g",
                    "--fail",
                    "--noproxy",
                    "*",
                    "--max-time",
                    f"{timeout:.3f}",
                    url,
                ]
            ),
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            check=False,
        )
        return proc.stdout if proc.returncode == 0 else None


def veth(a: Netns, a_dev: str, b: Netns, b_dev: str) -> None:
    """A veth pair with one end in each namespace; never touches the host namespace."""
    a.ip("link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)
    a.ip("link", "set", a_dev, "up")
    b.ip("link", "set", b_dev, "up")


# --- entering a namespace from this process ------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns: {os.strerror(err)}")


def socket_factory(name: str) -> Callable[[int, int], socket.socket]:
    """`socket.socket(family, kind)`, made inside namespace `name` (for shells that take a
    socket factory, such as the BGP speaker's, run from a test)."""

    def make(family: int, kind: int) -> socket.socket:
        with entered(name):
            return socket.socket(family, kind)

    return make


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the calling thread (and processes and sockets it creates) inside namespace `name`.

    The test harness uses this to reach the lab's API server, which lives on the lab LAN and
    not in the host's namespace. Sockets keep the namespace they were created in.
    """
    with open("/proc/thread-self/ns/net", "rb") as home, open(NETNS_DIR / name, "rb") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())
