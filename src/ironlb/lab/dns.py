"""DNS in the lab: PowerDNS as the LAN's authoritative server, and ExternalDNS publishing Services'
LoadBalancer addresses in it from their `status.loadBalancer.ingress`, as users run them (seeds 002
and 004).

    server = dns.PowerDns(c.lab.attach("dns", dns.HOST_DNS), workdir / "pdns")
    server.start()
    server.create_zone("ironlb.test")
    extdns = dns.start_external_dns(c, server, domain="ironlb.test", owner_id="lab")
    dns.lookup(client, server.host.ipv4, "web.ironlb.test", "A")   # Answer("NOERROR", (...))
    extdns.stop(); server.stop()

Invariants:
- PowerDNS is Debian's `pdns_server` with the sqlite3 backend, run inside a lab host's namespace
  with `--config-dir` pointing at its own directory: its configuration, database (created from the
  schema Debian ships) and control socket are all under `workdir`; /etc/powerdns is never read.
- It listens only on its host's lab addresses (DNS on port 53, the HTTP API with a key) and never
  sends a query of its own: it is authoritative only (pdns-server has no recursor), with no
  resolver, no security poll, no notifications and no zone transfers. Its caches are off, so an
  answer reflects the database the moment ExternalDNS writes it.
- Both run as processes the lab started and stops by PID; destroying the lab's namespaces kills
  them after a crash. ExternalDNS runs with only the rights of its ServiceAccount (the RBAC of
  ExternalDNS's own manifests, `deploy/examples/external-dns-rbac.yaml`) and an environment
  without proxies, and reaches nothing but the lab's API server and PowerDNS.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, netns, peers, topology

HOST_DNS = 53
"""LAN host number of the DNS server: 198.18.0.53, 2001:db8::53."""
DNS_PORT = 53
API_PORT = 8081
PDNS_SERVER = "/usr/sbin/pdns_server"
SQLITE_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")
EXTERNAL_DNS_RBAC = lab_cluster.DEPLOY / "examples" / "external-dns-rbac.yaml"
EXTERNAL_DNS_ACCOUNT = ("external-dns", "external-dns")
"""(namespace, name) of ExternalDNS's ServiceAccount in EXTERNAL_DNS_RBAC."""
EXTERNAL_DNS_METRICS_PORT = 7979
START_TIMEOUT = 15.0
_STOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PdnsConfig:
    """What makes one lab PowerDNS: where it listens, its API key, where its files are."""

    ipv4: str
    ipv6: str
    api_key: str
    workdir: Path
    api_allow_from: tuple[str, ...] = (str(topology.LAN_V4), str(topology.LAN_V6))

    def __post_init__(self) -> None:
        for address in (self.ipv4, self.ipv6, *self.api_allow_from):
            topology.check_allowed(address)
        if not re.fullmatch(r"[A-Za-z0-9_-]{8,}", self.api_key):
            raise ValueError("the PowerDNS API key must be 8 or more of [A-Za-z0-9_-]")

    @property
    def database(self) -> Path:
        return self.workdir / "pdns.sqlite3"


def render(config: PdnsConfig) -> str:
    """pdns.conf for `config` (pure)."""
    lines = [
        "launch=gsqlite3",
        f"gsqlite3-database={config.database}",
        f"local-address={config.ipv4}, {config.ipv6}",
        f"local-port={DNS_PORT}",
        "api=yes",
        f"api-key={config.api_key}",
        "webserver=yes",
        f"webserver-address={config.ipv4}",
        f"webserver-port={API_PORT}",
        f"webserver-allow-from={','.join(config.api_allow_from)}",
        # Every file of this server under its workdir; it runs in the foreground, by PID.
        f"socket-dir={config.workdir}",
        "write-pid=no",
        "daemon=no",
        "guardian=no",
        "disable-syslog=yes",
        "loglevel=5",
        # Nothing leaves the lab: no security-status query to secpoll.powerdns.com, no resolver
        # for ALIAS expansion, no NOTIFY, no AXFR.
        "security-poll-suffix=",
        "expand-alias=no",
        "primary=no",
        "secondary=no",
        "only-notify=",
        "disable-axfr=yes",
        # No caches: a test polls until ExternalDNS's write shows, and a cached NXDOMAIN
        # (negquery-cache-ttl is 60 s by default) would hide it.
        "cache-ttl=0",
        "negquery-cache-ttl=0",
        "query-cache-ttl=0",
        "zone-cache-refresh-interval=0",
        # The SOA of zones created through the API names the zone's own ns1 (the default names
        # a.misconfigured.dns.server.invalid).
        "default-soa-content=ns1.@ hostmaster.@ 0 10800 3600 604800 3600",
    ]
    return "\n".join(lines) + "\n"


class PowerDns:
    """PowerDNS authoritative server on `host`, its files under `workdir`. Always `stop()` it."""

    def __init__(self, host: topology.Host, workdir: Path, api_key: str | None = None) -> None:
        self.host = host
        self.config = PdnsConfig(
            host.ipv4, host.ipv6, api_key or secrets.token_urlsafe(24), workdir
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://{self.host.ipv4}:{API_PORT}"

    @property
    def log(self) -> Path:
        return self.config.workdir / "pdns.log"

    def start(self) -> None:
        """Write a fresh configuration and database, start the server, return once its API
        answers."""
        if self.process is not None:
            raise netns.LabError("PowerDNS is already running")
        workdir = self.config.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.database.unlink(missing_ok=True)
        try:
            schema = SQLITE_SCHEMA.read_text()
        except FileNotFoundError as e:
            raise netns.LabError(f"{SQLITE_SCHEMA} is missing: install pdns-backend-sqlite3") from e
        with contextlib.closing(sqlite3.connect(self.config.database)) as db:
            db.executescript(schema)
        (workdir / "pdns.conf").write_text(render(self.config))
        self.process = self.host.ns.spawn(
            [PDNS_SERVER, f"--config-dir={workdir}"], log=self.log, env=_clean_env(workdir)
        )
        try:
            self._wait_answering()
        except BaseException:
            self.stop()
            raise

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process is None or self.process.poll() is not None:
                raise netns.LabError(f"PowerDNS exited: {self.log_tail()}")
            status, _ = self.api("GET", "/api/v1/servers/localhost")
            if status == 200:
                return
            if time.monotonic() > deadline:
                raise netns.LabError(
                    f"PowerDNS API not answering after {START_TIMEOUT:g} s: {self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; reaps the process."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(_STOP_TIMEOUT)

    def api(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """One bounded call to the HTTP API, from inside the server's namespace: (status,
        decoded JSON or None). Status 0 if it could not be reached."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"X-API-Key": self.config.api_key, "Content-Type": "application/json"},
        )
        # Never through a proxy named by the environment: the request stays on the lab LAN.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with netns.entered(self.host.ns.name), opener.open(request, timeout=2.0) as resp:
                raw = resp.read()
                return int(resp.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return int(e.code), json.loads(raw) if raw else None
            except ValueError:
                return int(e.code), raw.decode(errors="replace")
        except OSError:
            return 0, None

    def create_zone(self, zone: str) -> None:
        """An empty native zone `zone` (SOA and NS only), as an operator creates it before
        pointing ExternalDNS at it."""
        name = zone.rstrip(".") + "."
        body = {"name": name, "kind": "Native", "nameservers": [f"ns1.{name}"]}
        status, answer = self.api("POST", "/api/v1/servers/localhost/zones", body)
        if status != 201:
            raise netns.LabError(f"PowerDNS refused zone {name}: {status} {answer}")

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return "(no log)"


def _clean_env(home: Path) -> dict[str, str]:
    """The environment of a lab peer: nothing inherited (no proxies, no cloud credentials)."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}


# --- asking: dig from a lab host -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What a DNS server said: the response code, whether it was authoritative, and the data
    of the records of the type asked for (sorted)."""

    status: str
    authoritative: bool
    records: tuple[str, ...]


_HEADER = re.compile(r"->>HEADER<<-.*status: ([A-Z]+)")
_FLAGS = re.compile(r";; flags: ([a-z ]*);")


def parse_dig(text: str, rtype: str) -> Answer | None:
    """`dig +noall +comments +answer` output as an Answer; None when there was no response
    (timeout, unreachable), so that "no records" is never mistaken for "no server"."""
    header = _HEADER.search(text)
    if header is None:
        return None
    flags = _FLAGS.search(text)
    records = []
    for line in text.splitlines():
        if not line or line.startswith(";"):
            continue
        fields = line.split(None, 4)
        if len(fields) == 5 and fields[2] == "IN" and fields[3] == rtype:
            records.append(fields[4])
    return Answer(
        header.group(1),
        bool(flags and "aa" in flags.group(1).split()),
        tuple(sorted(records)),
    )


def lookup(host: topology.Host, server: str, name: str, rtype: str) -> Answer | None:
    """Ask `server` for `name`/`rtype` with dig from `host`: one query, one second, no
    recursion asked for. None if there was no answer."""
    topology.check_allowed(server)
    out = host.ns.run(
        "dig",
        "+noall",
        "+comments",
        "+answer",
        "+norecurse",
        "+time=1",
        "+tries=1",
        "-p",
        str(DNS_PORT),
        f"@{server}",
        name,
        rtype,
        check=False,
        timeout=5.0,
    )
    return parse_dig(out, rtype)


# --- ExternalDNS --------------------------------------------------------------------------


def install_external_dns_rbac(c: lab_cluster.Cluster) -> None:
    c.kubectl("apply", "--server-side", "-f", str(EXTERNAL_DNS_RBAC))


def start_external_dns(
    c: lab_cluster.Cluster,
    server: PowerDns,
    *,
    domain: str,
    owner_id: str,
    interval: str = "1s",
    host: topology.Host | None = None,
) -> components.Process:
    """Run ExternalDNS (service source, PowerDNS provider, TXT registry, sync policy) on `host`
    (the control-plane host by default, where a cluster's workloads would reach it from), as its
    ServiceAccount; return once it serves its health endpoint."""
    host = host or c.ctl
    # Never built here: a cold build takes minutes (`make peers` or `make test` does it first).
    binary = peers.bin_dir("external-dns", build=False) / "external-dns"
    install_external_dns_rbac(c)
    namespace, account = EXTERNAL_DNS_ACCOUNT
    kubeconfig = c.service_account_kubeconfig(account, namespace)
    workdir = c.lab.workdir / "external-dns"
    workdir.mkdir(parents=True, exist_ok=True)
    log = c.lab.workdir / "external-dns.log"
    argv = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--source=service",
        "--provider=pdns",
        f"--pdns-server={server.api_url}",
        f"--pdns-api-key={server.config.api_key}",
        f"--domain-filter={domain}",
        "--policy=sync",
        "--registry=txt",
        f"--txt-owner-id={owner_id}",
        f"--interval={interval}",
        f"--metrics-address={host.ipv4}:{EXTERNAL_DNS_METRICS_PORT}",
        "--log-level=debug",
    ]
    proc = host.ns.spawn(argv, log=log, env=_clean_env(workdir))
    process = components.Process(
        "external-dns", host.ns, proc, log, f"http://{host.ipv4}:{EXTERNAL_DNS_METRICS_PORT}"
    )
    deadline = time.monotonic() + START_TIMEOUT
    while process.get("/healthz")[0] != 200:
        if not process.alive or time.monotonic() > deadline:
            process.kill()
            raise netns.LabError(f"ExternalDNS did not start:\n{process.log_text()[-3000:]}")
        time.sleep(0.2)
    return process
