"""BGP routers for the lab, tests and benches: FRR, GoBGP and BIRD inside a lab namespace.

    router = routers.Frr(lab.hosts["router"], workdir / "frr")
    router.start(routers.RouterConfig(64500, (routers.Neighbor("198.18.0.11", 65001),)))
    router.routes(families.Family.IPV4_UNICAST)  # {"203.0.113.10/32": [Path(...), ...]}
    router.neighbors()                           # {"198.18.0.11": fsm.State.ESTABLISHED}
    router.configure(other_config)               # replace the BGP configuration
    router.stop()                                # (or kill(): SIGKILL, as a crash)

Each router is "AS x on the router's LAN addresses, peering with these neighbours": it accepts
every route (FRR 8.4 would otherwise need a policy for eBGP, BIRD an import filter), announces
nothing, uses multipath (FRR installs ECMP routes in the router namespace's kernel table; GoBGP
and BIRD only hold routes in their RIB) and short timers so that tests stay fast.

Invariants:
- Daemons run inside the router's namespace, so `Lab.destroy()` kills them even after a crash,
  and every file they use (configuration, control sockets, pid files, logs) is under `workdir`:
  several labs and the host's own daemons never meet. FRR's daemons are started directly with
  their paths overridden (never /etc/frr or /run/frr); GoBGP's API listens on the router's LAN
  address, BIRD's on a unix socket.
- Every command has a timeout and every wait is bounded; failures raise `netns.LabError` with
  the daemon's log tail.
- Queries return one normalised shape whatever the daemon: routes as `Path`s (communities as
  "65000:100", large communities as "65000:1:2"), neighbour states as `fsm.State`.
"""

from __future__ import annotations

import abc
import contextlib
import ipaddress
import json
import pathlib
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ironlb.bgp import bfd, families, fsm
from ironlb.lab import netns, topology

COMMAND_TIMEOUT = 10.0
START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0
_POLL = 0.05
_PREFIXES_PER_RUN = 200
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Neighbor:
    address: str
    asn: int
    password: str = ""
    """TCP MD5 password; empty for none."""
    bfd_profile: str = ""
    """Name of a profile in `RouterConfig.bfd_profiles` (FRR only); empty for no BFD."""
    multihop: bool = False

    def __post_init__(self) -> None:
        topology.check_allowed(self.address)

    @property
    def family(self) -> families.Family:
        return families.Family.of(ipaddress.ip_network(self.address))


@dataclass(frozen=True, slots=True)
class ListenRange:
    """FRR only: a peer-group that accepts sessions from any address of `prefix` (`bgp listen
    range`), the usual router side for a cluster whose nodes come and go."""

    name: str
    prefix: str
    asn: int
    bfd_profile: str = ""

    def __post_init__(self) -> None:
        topology.check_allowed(self.prefix)

    @property
    def family(self) -> families.Family:
        return families.Family.of(ipaddress.ip_network(self.prefix))


@dataclass(frozen=True, slots=True)
class RouterConfig:
    asn: int
    neighbors: tuple[Neighbor, ...] = ()
    listen_ranges: tuple[ListenRange, ...] = ()
    """FRR only: peer-groups the nodes may connect to (passive: the router never connects)."""
    router_id: str = topology.lan_addresses(topology.HOST_ROUTER)[0]
    hold_time: int = 3
    """Proposed hold time in seconds; keepalives every third of it."""
    connect_retry: int = 1
    bfd_profiles: Mapping[str, bfd.Profile] = field(default_factory=dict)
    graceful_restart: int = 0
    """FRR only: Graceful Restart (RFC 4724) on every session, preserving forwarding state, and
    the seconds a restarted zebra keeps the kernel routes its killed predecessor installed
    before sweeping those bgpd has not installed again (`zebra -K`; taken at `start()`, not by
    `configure()`); 0: no Graceful Restart (FRR stays a helper) and routes swept at once."""

    def __post_init__(self) -> None:
        if not 0 <= self.graceful_restart <= 4095:
            raise ValueError(f"graceful restart time {self.graceful_restart} out of 0-4095 s")
        for n in self.neighbors:
            if n.bfd_profile and n.bfd_profile not in self.bfd_profiles:
                raise ValueError(f"neighbour {n.address}: no BFD profile {n.bfd_profile!r}")
        for g in self.listen_ranges:
            if g.bfd_profile and g.bfd_profile not in self.bfd_profiles:
                raise ValueError(f"peer-group {g.name}: no BFD profile {g.bfd_profile!r}")

    @property
    def keepalive(self) -> int:
        return max(1, self.hold_time // 3)


@dataclass(frozen=True, slots=True)
class Path:
    """One path to a prefix in a router's RIB."""

    next_hop: str
    as_path: tuple[int, ...] = ()
    local_pref: int | None = None
    communities: frozenset[str] = frozenset()
    large_communities: frozenset[str] = frozenset()
    stale: bool = False
    """Kept for a peer that is restarting (Graceful Restart); BIRD does not say."""


Routes = dict[str, list[Path]]


def wait_until(check: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll `check` until it returns something other than None or False; LabError after
    `timeout` seconds, naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() >= deadline:
            raise netns.LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(_POLL)


def _json_documents(text: str) -> Iterator[Any]:
    """The JSON documents in `text`, one after another (vtysh prints one per command)."""
    decoder = json.JSONDecoder()
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return
        document, index = decoder.raw_decode(text, index)
        yield document


def _state(name: str) -> fsm.State:
    """A daemon's session state name as an `fsm.State` (transitional states count as Idle)."""
    wanted = name.replace("_", "").replace("-", "").lower()
    for state in fsm.State:
        if state.value.lower() == wanted:
            return state
    return fsm.State.IDLE


class Router(abc.ABC):
    """One BGP daemon in `host`'s namespace. Always `stop()` it (or use `with`)."""

    name: str

    def __init__(self, host: topology.Host, workdir: pathlib.Path) -> None:
        self.host = host
        self.workdir = workdir
        self.config: RouterConfig | None = None
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, config: RouterConfig) -> None:
        """Start the daemon with `config` and return once it answers queries."""
        if self._processes:
            raise netns.LabError(f"{self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        try:
            self._start(config)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and reap it."""
        processes, self._processes = self._processes, []
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=_STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL every daemon by its PID, as a crash would (no NOTIFICATION, no cleanup), and
        reap them; `start()` may run again (chaos tests: a router restart)."""
        processes, self._processes = self._processes, []
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        for process in processes:
            process.wait(timeout=_STOP_TIMEOUT)

    def configure(self, config: RouterConfig) -> None:
        """Replace the BGP configuration (sessions not in `config` are torn down)."""
        self.config = config
        self._configure(config)

    @abc.abstractmethod
    def routes(self, family: families.Family) -> Routes:
        """Every path of every prefix in the RIB, best or not."""

    @abc.abstractmethod
    def neighbors(self) -> dict[str, fsm.State]:
        """The session state of every configured neighbour, by address."""

    @abc.abstractmethod
    def _start(self, config: RouterConfig) -> None: ...

    @abc.abstractmethod
    def _configure(self, config: RouterConfig) -> None: ...

    # -- helpers ----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        process = self.host.ns.spawn(argv, log=self.workdir / f"{name}.out")
        self._processes.append(process)
        return process

    def _run(self, argv: Sequence[str], *, check: bool = True) -> str:
        return self.host.ns.run(*argv, check=check, timeout=COMMAND_TIMEOUT)

    def _wait_answering(self, probe: Callable[[], object]) -> None:
        def answers() -> bool:
            if any(p.poll() is not None for p in self._processes):
                return True  # no use waiting: reported below
            try:
                probe()
            except (netns.LabError, OSError):
                return False
            return True

        try:
            wait_until(answers, START_TIMEOUT, f"{self.name} to answer")
        except netns.LabError as e:
            raise netns.LabError(f"{e}; log: {self.log_tail()}") from e
        for process in self._processes:
            if process.returncode is not None:
                raise netns.LabError(
                    f"{self.name} exited with {process.returncode}: {self.log_tail()}"
                )

    def log_tail(self, size: int = 2000) -> str:
        """The end of the daemon's logs, for error messages."""
        text = ""
        for log in sorted(self.workdir.glob("*.log")) + sorted(self.workdir.glob("*.out")):
            with contextlib.suppress(OSError):
                text += f"\n--- {log.name}\n" + log.read_text(errors="replace")[-size:]
        return text


class Frr(Router):
    """FRR 8.4: zebra (installs routes in the router's kernel table), bfdd and bgpd."""

    name = "FRR"
    DAEMONS = ("zebra", "bfdd", "bgpd")
    BINARIES = pathlib.Path("/usr/lib/frr")

    def _start(self, config: RouterConfig) -> None:
        d = self.workdir
        # Sockets of an earlier run would pass for ready daemons.
        for stale in [*d.glob("*.vty"), d / "zserv.api", d / "bfdd.sock"]:
            stale.unlink(missing_ok=True)
        for daemon in self.DAEMONS:
            argv = [
                str(self.BINARIES / daemon),
                # privs_init insists that the user be in the vty group: naming it as our group
                # satisfies that as root without touching /etc/group.
                *("-u", "root", "-g", "frrvty"),
                *("-f", "/dev/null", "-i", str(d / f"{daemon}.pid")),
                *("-z", str(d / "zserv.api"), "--vty_socket", str(d)),
                *("--log", f"file:{d / daemon}.log", "-P", "0"),
            ]
            if daemon == "bfdd":
                argv += ["--bfdctl", str(d / "bfdd.sock")]
            if daemon == "zebra" and config.graceful_restart:
                argv += ["-K", str(config.graceful_restart)]
            self._spawn(daemon, argv)
            # bgpd and bfdd need zebra's socket; vtysh needs every daemon's.
            vty = d / f"{daemon}.vty"
            self._wait_answering(vty.stat)
        # bgpd reaches bfdd through zebra: BFD sessions registered before both are connected
        # to zebra are lost, not retried.
        self._wait_answering(self._zebra_clients_ready)
        self._configure(config)

    def _zebra_clients_ready(self) -> None:
        out = self.vtysh("show zebra client summary")
        clients = {line.split()[0] for line in out.splitlines() if line.strip()}
        if not {"bgp", "bfd"} <= clients:
            raise netns.LabError(f"zebra clients: {sorted(clients)}")

    def _configure(self, config: RouterConfig) -> None:
        # Replacing the whole `router bgp` and `bfd` blocks is the simplest exact replacement.
        self.vtysh("configure terminal", "no router bgp", "no bfd", check=False)
        path = self.workdir / "frr.conf"
        path.write_text(self.render(config, self.host))
        self._run(["vtysh", "--vty_socket", str(self.workdir), "-f", str(path)])

    @staticmethod
    def render(config: RouterConfig, host: topology.Host) -> str:
        lines = ["bfd"]
        for name, p in config.bfd_profiles.items():
            lines += [
                f" profile {name}",
                f"  receive-interval {p.receive_interval}",
                f"  transmit-interval {p.transmit_interval}",
                f"  detect-multiplier {p.detect_multiplier}",
                f"  minimum-ttl {p.minimum_ttl}",
                "  passive-mode" if p.passive_mode else "  no passive-mode",
                " exit",
            ]
        lines += [
            "exit",
            f"router bgp {config.asn}",
            f" bgp router-id {config.router_id}",
            " no bgp ebgp-requires-policy",
            " no bgp default ipv4-unicast",
            " bgp bestpath as-path multipath-relax",
            f" timers bgp {config.keepalive} {config.hold_time}",
        ]
        if config.graceful_restart:
            lines += [
                " bgp graceful-restart",
                " bgp graceful-restart preserve-fw-state",
                # A restarted bgpd selects routes once every neighbour has sent End-of-RIB (or
                # after half the sweep time), not as each comes up: the kernel routes change
                # once, to every next hop, instead of losing those of the later sessions a
                # while (connections the kernel rehashes meanwhile are reset).
                f" update-delay {max(1, config.graceful_restart // 2)}",
            ]
        for n in config.neighbors:
            a = n.address
            source = host.ipv4 if n.family is families.Family.IPV4_UNICAST else host.ipv6
            lines += [
                f" neighbor {a} remote-as {n.asn}",
                f" neighbor {a} timers connect {config.connect_retry}",
                # Without it bgpd registers the BFD session before the session is up, then
                # replaces it (a BFD flap) once it learns its own address from the connection.
                f" neighbor {a} update-source {source}",
            ]
            if n.password:
                lines.append(f" neighbor {a} password {n.password}")
            if n.multihop:
                lines.append(f" neighbor {a} ebgp-multihop 255")
            if n.bfd_profile:
                lines.append(f" neighbor {a} bfd profile {n.bfd_profile}")
        for group in config.listen_ranges:
            lines += [
                f" neighbor {group.name} peer-group",
                f" neighbor {group.name} remote-as {group.asn}",
                f" bgp listen range {group.prefix} peer-group {group.name}",
            ]
            if group.bfd_profile:
                lines.append(f" neighbor {group.name} bfd profile {group.bfd_profile}")
        for family in families.Family:
            afi = "ipv4" if family is families.Family.IPV4_UNICAST else "ipv6"
            lines.append(f" address-family {afi} unicast")
            lines += [
                f"  neighbor {n.address} activate" for n in config.neighbors if n.family is family
            ]
            lines += [
                f"  neighbor {g.name} activate" for g in config.listen_ranges if g.family is family
            ]
            lines += ["  maximum-paths 16", "  maximum-paths ibgp 16", " exit-address-family"]
        lines.append("exit")
        return "\n".join(lines) + "\n"

    def vtysh(self, *commands: str, check: bool = True) -> str:
        argv = ["vtysh", "--vty_socket", str(self.workdir)]
        for command in commands:
            argv += ["-c", command]
        return self._run(argv, check=check)

    def routes(self, family: families.Family) -> Routes:
        afi = "ipv4" if family is families.Family.IPV4_UNICAST else "ipv6"
        table = json.loads(self.vtysh(f"show bgp {afi} unicast json"))
        prefixes = sorted(table.get("routes", {}))
        if not prefixes:
            return {}
        # The table lacks communities and local preference: ask for each prefix's details, a
        # bounded number per vtysh run.
        routes: Routes = {}
        for start in range(0, len(prefixes), _PREFIXES_PER_RUN):
            batch = prefixes[start : start + _PREFIXES_PER_RUN]
            details = self.vtysh(*(f"show bgp {afi} unicast {p} json" for p in batch))
            for detail in _json_documents(details):
                if "prefix" in detail:
                    routes[detail["prefix"]] = [self._path(p) for p in detail.get("paths", [])]
        return routes

    @staticmethod
    def _path(path: dict[str, Any]) -> Path:
        hops = [h["ip"] for h in path.get("nexthops", []) if h.get("scope") != "link-local"]
        segments = path.get("aspath", {}).get("segments", [])
        return Path(
            next_hop=hops[0] if hops else "",
            as_path=tuple(asn for s in segments for asn in s.get("list", [])),
            local_pref=path.get("locPrf"),
            communities=frozenset(path.get("community", {}).get("list", [])),
            large_communities=frozenset(path.get("largeCommunity", {}).get("list", [])),
            stale=bool(path.get("stale", False)),
        )

    def neighbors(self) -> dict[str, fsm.State]:
        table = json.loads(self.vtysh("show bgp neighbors json"))
        return {address: _state(n.get("bgpState", "")) for address, n in table.items()}

    def bfd_peers(self) -> dict[str, tuple[str, bool]]:
        """BFD sessions by peer address: status ("up", "down", "init" ...) and multihop."""
        peers = json.loads(self.vtysh("show bfd peers json"))
        return {p["peer"]: (p["status"], bool(p.get("multihop"))) for p in peers}

    def fib_routes(self, prefix: str) -> tuple[str, ...]:
        """Next hops of the kernel route zebra installed for `prefix` (empty if none)."""
        network = ipaddress.ip_network(prefix)
        version = f"-{network.version}"
        routes = json.loads(self.host.ns.ip(version, "-j", "route", "show", "exact", prefix))
        hops: list[str] = []
        for route in routes:
            if "gateway" in route:
                hops.append(route["gateway"])
            hops += [h["gateway"] for h in route.get("nexthops", []) if "gateway" in h]
        return tuple(sorted(hops))


class GoBgp(Router):
    """GoBGP 3: its RIB only (it installs nothing without zebra); it has no BFD."""

    name = "GoBGP"
    API_PORT = 50051

    @property
    def _api(self) -> list[str]:
        return ["-u", self.host.ipv4, "-p", str(self.API_PORT)]

    def _start(self, config: RouterConfig) -> None:
        path = self.workdir / "gobgpd.toml"
        path.write_text(self.render(config, self.host))
        api = f"{self.host.ipv4}:{self.API_PORT}"
        self._spawn(
            "gobgpd",
            ["gobgpd", "-f", str(path), "-t", "toml", "--api-hosts", api, "--pprof-disable", "-p"],
        )
        self._wait_answering(lambda: self._run(["gobgp", *self._api, "global"]))

    def _configure(self, config: RouterConfig) -> None:
        # gobgpd cannot change its global settings on reload: a restart covers every change.
        self.stop()
        self.start(config)

    @staticmethod
    def render(config: RouterConfig, host: topology.Host) -> str:
        lines = [
            "[global.config]",
            f"  as = {config.asn}",
            f'  router-id = "{config.router_id}"',
            f'  local-address-list = ["{host.ipv4}", "{host.ipv6}"]',
            "[global.use-multiple-paths.config]",
            "  enabled = true",
        ]
        for n in config.neighbors:
            afi_safi = (
                "ipv4-unicast" if n.family is families.Family.IPV4_UNICAST else "ipv6-unicast"
            )
            lines += [
                "[[neighbors]]",
                "  [neighbors.config]",
                f'    neighbor-address = "{n.address}"',
                f"    peer-as = {n.asn}",
            ]
            if n.password:
                lines.append(f'    auth-password = "{n.password}"')
            lines += [
                "  [neighbors.timers.config]",
                f"    connect-retry = {config.connect_retry}",
                f"    hold-time = {config.hold_time}",
                f"    keepalive-interval = {config.keepalive}",
                # Default 30 s: a session torn down between tests would stay down that long.
                "    idle-hold-time-after-reset = 1",
            ]
            if n.multihop:
                lines += [
                    "  [neighbors.ebgp-multihop.config]",
                    "    enabled = true",
                    "    multihop-ttl = 255",
                ]
            lines += [
                "  [[neighbors.afi-safis]]",
                "    [neighbors.afi-safis.config]",
                f'      afi-safi-name = "{afi_safi}"',
            ]
        return "\n".join(lines) + "\n"

    def routes(self, family: families.Family) -> Routes:
        afi = "ipv4" if family is families.Family.IPV4_UNICAST else "ipv6"
        table = json.loads(self._run(["gobgp", *self._api, "-j", "global", "rib", "-a", afi]))
        return {prefix: [self._path(p) for p in paths] for prefix, paths in table.items()}

    @staticmethod
    def _path(path: dict[str, Any]) -> Path:
        next_hop = ""
        as_path: tuple[int, ...] = ()
        local_pref: int | None = None
        communities: frozenset[str] = frozenset()
        large: frozenset[str] = frozenset()
        for attr in path.get("attrs", []):
            match attr.get("type"):
                case 2:  # AS_PATH
                    as_path = tuple(a for s in attr.get("as_paths", []) for a in s.get("asns", []))
                case 3 | 14:  # NEXT_HOP, MP_REACH_NLRI
                    next_hop = attr.get("nexthop", "")
                case 5:
                    local_pref = attr.get("value")
                case 8:
                    communities = frozenset(
                        f"{c >> 16}:{c & 0xFFFF}" for c in attr.get("communities", [])
                    )
                case 32:
                    large = frozenset(
                        f"{c['ASN']}:{c['LocalData1']}:{c['LocalData2']}"
                        for c in attr.get("value", [])
                    )
        stale = bool(path.get("stale", False))
        return Path(next_hop, as_path, local_pref, communities, large, stale)

    # gobgp's numeric session states (api.PeerState_SessionState).
    _STATES = {
        1: fsm.State.IDLE,
        2: fsm.State.CONNECT,
        3: fsm.State.ACTIVE,
        4: fsm.State.OPEN_SENT,
        5: fsm.State.OPEN_CONFIRM,
        6: fsm.State.ESTABLISHED,
    }

    def neighbors(self) -> dict[str, fsm.State]:
        table = json.loads(self._run(["gobgp", *self._api, "-j", "neighbor"]))
        states: dict[str, fsm.State] = {}
        for n in table:
            state = n.get("state", {}).get("session_state", 1)
            address = n["conf"]["neighbor_address"]
            states[address] = (
                self._STATES.get(state, fsm.State.IDLE) if isinstance(state, int) else _state(state)
            )
        return states


class Bird(Router):
    """BIRD 2: its RIB only (no kernel protocol); BFD is not configured."""

    name = "BIRD"

    @property
    def _socket(self) -> str:
        return str(self.workdir / "bird.ctl")

    def _start(self, config: RouterConfig) -> None:
        path = self.workdir / "bird.conf"
        path.write_text(self.render(config, self.workdir))
        pid = str(self.workdir / "bird.pid")
        self._spawn("bird", ["bird", "-f", "-c", str(path), "-s", self._socket, "-P", pid])
        self._wait_answering(lambda: self.birdc("show status"))

    def _configure(self, config: RouterConfig) -> None:
        path = self.workdir / "bird.conf"
        path.write_text(self.render(config, self.workdir))
        out = self.birdc("configure")
        if "Reconfigured" not in out and "in progress" not in out:
            raise netns.LabError(f"BIRD refused its configuration: {out.strip()}")

    def birdc(self, command: str) -> str:
        return self._run(["birdc", "-s", self._socket, command])

    @staticmethod
    def protocol_name(neighbor: Neighbor) -> str:
        return "peer_" + re.sub(r"[^0-9a-zA-Z]", "_", neighbor.address)

    @classmethod
    def render(cls, config: RouterConfig, workdir: pathlib.Path) -> str:
        lines = [
            f'log "{workdir / "bird.log"}" all;',
            f"router id {config.router_id};",
            "protocol device { }",
        ]
        for n in config.neighbors:
            ibgp = n.asn == config.asn
            channel = "ipv4" if n.family is families.Family.IPV4_UNICAST else "ipv6"
            lines += [
                f"protocol bgp {cls.protocol_name(n)} {{",
                f"  local as {config.asn};",
                f"  neighbor {n.address} as {n.asn};",
                f"  hold time {config.hold_time};",
                f"  keepalive time {config.keepalive};",
                f"  connect retry time {config.connect_retry};",
                "  connect delay time 1;",
                # Defaults 60-300 s: a session torn down between tests would stay down that long.
                "  error wait time 1, 5;",
                "  multihop;" if n.multihop else "  direct;",
            ]
            if n.password:
                lines.append(f'  password "{n.password}";')
            # iBGP next hops are resolved recursively by default; the lab's are on the LAN.
            gateway = " gateway direct;" if ibgp else ""
            lines += [f"  {channel} {{ import all; export none;{gateway} }};", "}"]
        return "\n".join(lines) + "\n"

    _ROUTE = re.compile(r"^(\S+)\s+unicast\s+\[(\S+)")
    _ALTERNATIVE = re.compile(r"^\s+unicast\s+\[(\S+)")

    def routes(self, family: families.Family) -> Routes:
        table = "master4" if family is families.Family.IPV4_UNICAST else "master6"
        return self.parse_routes(self.birdc(f"show route all table {table}"))

    @classmethod
    def parse_routes(cls, text: str) -> Routes:
        """`show route all`: a line per path ("prefix unicast [proto ...]", or only "unicast
        [..." for further paths of the same prefix), then its tab-indented attributes."""
        routes: Routes = {}
        prefix = ""
        attrs: dict[str, str] | None = None

        def flush() -> None:
            if attrs is not None:
                routes.setdefault(prefix, []).append(cls._path(attrs))

        for line in text.splitlines():
            if m := cls._ROUTE.match(line):
                flush()
                prefix, attrs = m.group(1), {}
            elif cls._ALTERNATIVE.match(line):
                flush()
                attrs = {}
            elif attrs is not None and line.startswith("\t") and ":" in line:
                key, _, value = line.strip().partition(":")
                attrs[key] = value.strip()
        flush()
        return routes

    @staticmethod
    def _path(attrs: dict[str, str]) -> Path:
        pairs = re.findall(r"\((\d+),\s*(\d+)\)", attrs.get("BGP.community", ""))
        triples = re.findall(r"\((\d+),\s*(\d+),\s*(\d+)\)", attrs.get("BGP.large_community", ""))
        local_pref = attrs.get("BGP.local_pref")
        return Path(
            next_hop=attrs.get("BGP.next_hop", "").split(" ")[0],
            as_path=tuple(int(a) for a in re.findall(r"\d+", attrs.get("BGP.as_path", ""))),
            local_pref=int(local_pref) if local_pref else None,
            communities=frozenset(":".join(p) for p in pairs),
            large_communities=frozenset(":".join(t) for t in triples),
        )

    def neighbors(self) -> dict[str, fsm.State]:
        assert self.config is not None, "started"
        by_name = {self.protocol_name(n): n.address for n in self.config.neighbors}
        states: dict[str, fsm.State] = {}
        for line in self.birdc("show protocols").splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] in by_name:
                # name proto table state since info: "up" means Established; otherwise the
                # info column names the BGP state ("Active", "Connect", "Idle" ...).
                info = fields[5] if len(fields) > 5 else ""
                states[by_name[fields[0]]] = (
                    fsm.State.ESTABLISHED if fields[3] == "up" else _state(info)
                )
        return states


ROUTERS: dict[str, type[Router]] = {"frr": Frr, "gobgp": GoBgp, "bird": Bird}
"""Every router kind by name, for tests and benches parametrised over them."""
