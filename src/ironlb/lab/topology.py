"""Lab topology: a LAN of network namespaces with nodes, clients, a router and a remote client.

    [node-1] [node-2] [node-3] [ctl: etcd + kube-apiserver] [client] [stranger]
        \\        |        |        /                            /        /
         +------ br0 in the "sw" namespace (the LAN switch) ------+-------+
                               |
                            [router] ---- [remote]   (a second LAN behind the router)

Address plan (only documentation/benchmarking ranges, never anything routable):

    LAN                198.18.0.0/24     2001:db8::/64      router .1, ctl .2, node-i .10+i,
                                                             client .100, stranger .50
    L2 service range   198.18.0.192/26   2001:db8::c0/122   (on the LAN: answered by ARP/NDP;
                                                             the example pool is the .240/28)
    remote LAN         198.18.1.0/24     2001:db8:1::/64    router .1, remote .100
    BGP service pool   203.0.113.0/24    2001:db8:100::/120 (routed by the router)
    Service ClusterIPs 198.19.128.0/17   2001:db8:fff0::/112 (never carry packets: no kube-proxy)
    Pod CIDRs          198.19.i.0/24     2001:db8:10:i::/64  (node-i, i < 128)
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ironlb.lab import netns

LAN_V4 = ipaddress.IPv4Network("198.18.0.0/24")
LAN_V6 = ipaddress.IPv6Network("2001:db8::/64")
REMOTE_V4 = ipaddress.IPv4Network("198.18.1.0/24")
REMOTE_V6 = ipaddress.IPv6Network("2001:db8:1::/64")
L2_POOL = ("198.18.0.192/26", "2001:db8::c0/122")
BGP_POOL = ("203.0.113.0/24", "2001:db8:100::/120")
SERVICE_CIDRS = ("198.19.128.0/17", "2001:db8:fff0::/112")
ALLOWED = tuple(
    ipaddress.ip_network(n)
    for n in ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)

HOST_ROUTER, HOST_CTL, HOST_CLIENT, HOST_STRANGER = 1, 2, 100, 50


def lan_addresses(host: int) -> tuple[str, str]:
    """IPv4 and IPv6 address of LAN host number `host`: .11 and ::11 for host 11."""
    return str(LAN_V4[host]), str(LAN_V6[int(str(host), 16)])


def pod_cidrs(index: int) -> tuple[str, str]:
    return f"198.19.{index}.0/24", f"2001:db8:10:{index:x}::/64"


BACKEND_PORT = 8080


def emulate_kube_proxy(host: Host, service_port: int = 80) -> None:
    """In a node, forward TCP `service_port` of every service pool address to the node's own
    backend on BACKEND_PORT, as kube-proxy would. The addresses stay off every interface, so
    the kernel never answers ARP/NDP for them: only the speaker does."""
    v4 = ", ".join((L2_POOL[0], BGP_POOL[0]))
    v6 = ", ".join((L2_POOL[1], BGP_POOL[1]))
    rules = f"""
table ip ironlb_lab {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {{ {v4} }} tcp dport {service_port} dnat to {host.ipv4}:{BACKEND_PORT}
  }}
}}
table ip6 ironlb_lab {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip6 daddr {{ {v6} }} tcp dport {service_port} dnat to [{host.ipv6}]:{BACKEND_PORT}
  }}
}}
"""
    netns.run(host.ns.argv(["nft", "-f", "/dev/stdin"]), stdin=rules)


def answer(host: Host, ip: str, within: float = 5.0) -> str | None:
    """What HTTP on `ip` (port 80) answers from `host` within `within` seconds, or None. Lab
    backends answer with their node's name, so this says which node took the traffic."""
    url_host = f"[{ip}]" if ":" in ip else ip
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body = host.ns.http_get(f"http://{url_host}/", timeout=0.5)
        if body:
            return body.strip()
        time.sleep(0.1)
    return None


@contextlib.contextmanager
def silenced(host: Host) -> Iterator[None]:
    """Drop every packet to and from `host`'s LAN interface while its link stays up: a node
    that died without a word (no carrier loss, no FIN, no NOTIFICATION)."""
    rules = (
        "add table inet ironlb_silence { "
        f"chain in {{ type filter hook input priority 0; policy accept; iif {host.dev} drop; }}; "
        f"chain out {{ type filter hook output priority 0; policy accept; oif {host.dev} drop; }}; "
        "}"
    )
    host.ns.run("nft", rules)
    try:
        yield
    finally:
        host.ns.run("nft", "delete table inet ironlb_silence")


def check_allowed(address: str) -> None:
    """Refuse, loudly, any address outside the lab's ranges."""
    ip = ipaddress.ip_address(address.split("/")[0])
    if not any(ip in net for net in ALLOWED):
        raise netns.LabError(f"{address} is outside the lab's address ranges")


@dataclass(frozen=True, slots=True)
class Host:
    """A namespace attached to a LAN: its interface, addresses and MAC."""

    ns: netns.Netns
    dev: str
    ipv4: str
    ipv6: str
    mac: str

    @property
    def name(self) -> str:
        return self.ns.name


@dataclass
class Lab:
    """One lab run. Build with `Lab.create()`, always end with `destroy()`."""

    prefix: str
    workdir: Path
    switch: netns.Netns
    hosts: dict[str, Host] = field(default_factory=dict)

    @classmethod
    def create(cls, workdir: Path, prefix: str | None = None, *, keep: bool = False) -> Lab:
        """A fresh LAN (an empty switch). Sweeps the leftovers of crashed runs first."""
        netns.sweep_stale()
        prefix = prefix or netns.new_prefix()
        if netns.list_namespaces(prefix):
            raise netns.LabError(f"a lab named {prefix} is already running")
        netns.claim(prefix, keep=keep)
        try:
            switch = netns.Netns.create(f"{prefix}-sw")
            switch.ip("link", "add", "br0", "type", "bridge", "stp_state", "0")
            # Forward immediately (no STP learning delay) and never age MACs out mid-test.
            switch.ip("link", "set", "br0", "type", "bridge", "forward_delay", "0")
            switch.ip("link", "set", "br0", "up")
        except netns.LabError:
            netns.destroy(prefix)
            raise
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(prefix, workdir, switch)

    def ns_name(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def attach(
        self,
        role: str,
        host: int,
        *,
        dev: str = "eth0",
        ns: netns.Netns | None = None,
        port: str | None = None,
    ) -> Host:
        """Create namespace `role` (unless given) and plug `dev` into the LAN switch."""
        ns = ns or netns.Netns.create(self.ns_name(role))
        port = port or role[:15]
        # A port of the same name left on the switch (an earlier host of this role whose
        # namespace outlived its deletion, held by some process) would make the new link fail:
        # deleting it takes the old pair down with it.
        self.switch.ip("link", "del", port, check=False)
        netns.veth(ns, dev, self.switch, port)
        self.switch.ip("link", "set", port, "master", "br0")
        ipv4, ipv6 = lan_addresses(host)
        ns.ip("addr", "add", f"{ipv4}/{LAN_V4.prefixlen}", "dev", dev)
        ns.ip("addr", "add", f"{ipv6}/{LAN_V6.prefixlen}", "dev", dev, "nodad")
        ns.ip(
            "route", "add", "default", "via", lan_addresses(HOST_ROUTER)[0], "dev", dev, check=False
        )
        ns.ip(
            "-6",
            "route",
            "add",
            "default",
            "via",
            lan_addresses(HOST_ROUTER)[1],
            "dev",
            dev,
            check=False,
        )
        h = Host(ns, dev, ipv4, ipv6, ns.link_mac(dev))
        self.hosts[role] = h
        return h

    def add_control_plane_host(self) -> Host:
        return self.attach("ctl", HOST_CTL)

    def add_node(self, index: int) -> Host:
        return self.attach(f"node-{index}", 10 + index, port=f"n{index}")

    def add_client(self) -> Host:
        return self.attach("client", HOST_CLIENT)

    def add_stranger(self) -> Host:
        """A host that is not part of the cluster (it may squat on a service address)."""
        return self.attach("stranger", HOST_STRANGER)

    def add_router(self) -> Host:
        """The router: on the LAN and on the remote LAN, forwarding between them."""
        router = self.attach("router", HOST_ROUTER)
        router.ns.sysctl("net.ipv4.ip_forward", "1")
        router.ns.sysctl("net.ipv6.conf.all.forwarding", "1")
        remote = netns.Netns.create(self.ns_name("remote"))
        netns.veth(router.ns, "eth1", remote, "eth0")
        router.ns.ip("addr", "add", f"{REMOTE_V4[1]}/{REMOTE_V4.prefixlen}", "dev", "eth1")
        router.ns.ip("addr", "add", f"{REMOTE_V6[1]}/{REMOTE_V6.prefixlen}", "dev", "eth1", "nodad")
        remote.ip("addr", "add", f"{REMOTE_V4[100]}/{REMOTE_V4.prefixlen}", "dev", "eth0")
        remote.ip(
            "addr", "add", f"{REMOTE_V6[0x100]}/{REMOTE_V6.prefixlen}", "dev", "eth0", "nodad"
        )
        remote.ip("route", "add", "default", "via", str(REMOTE_V4[1]))
        remote.ip("-6", "route", "add", "default", "via", str(REMOTE_V6[1]))
        self.hosts["remote"] = Host(
            remote, "eth0", str(REMOTE_V4[100]), str(REMOTE_V6[0x100]), remote.link_mac("eth0")
        )
        return router

    def remove(self, role: str) -> None:
        """Take one host off the LAN and delete its namespace (and its processes)."""
        host = self.hosts.pop(role)
        netns.kill_all_in(host.ns.name)
        netns.run(["ip", "netns", "del", host.ns.name], check=False)

    def destroy(self) -> None:
        with contextlib.suppress(netns.LabError):
            netns.destroy(self.prefix)
        self.hosts.clear()
