"""ExternalDNS as a real client of ironlb's Service status, with PowerDNS, as seeds 002 and 004 run
them: a Service annotated with a hostname gets its LoadBalancer addresses (A, and AAAA when it is
dual-stack) in PowerDNS, a LAN client that looks the name up with dig reaches the Service at the
address it got, and the records go when the Service goes.

The process lab: three nodes with a speaker and a backend each, the controller, a LAN client, and
a DNS host (198.18.0.53) running PowerDNS; ExternalDNS v0.21.0 (built by dev/peers/build.sh) runs
on the control-plane host with only the rights its documentation gives it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field

import pytest

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components, dns, topology
from support import kube

pytestmark = pytest.mark.e2e

NODES = (1, 2, 3)
ZONE = "ironlb.test"
OWNER = "ironlb-lab"
HOSTNAME = "external-dns.alpha.kubernetes.io/hostname"
CONFIG = [
    kube.pool("dns", "198.18.0.236/30", "2001:db8::e4/126", module="test_external_dns"),
    {
        "apiVersion": "metallb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": {"name": "dns", "namespace": kube.CONFIG_NS},
        "spec": {"ipAddressPools": ["dns"]},
    },
]


@dataclass
class DnsLab:
    cluster: lab_cluster.Cluster
    client: topology.Host
    server: dns.PowerDns
    processes: list[components.Process] = field(default_factory=list)

    @property
    def external_dns(self) -> components.Process:
        return self.processes[-1]

    def lookup(self, name: str, rtype: str) -> dns.Answer | None:
        return dns.lookup(self.client, self.server.host.ipv4, name, rtype)

    def zone_rrsets(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, type, contents) of every RRset in the zone, read through the API."""
        status, zone = self.server.api("GET", f"/api/v1/servers/localhost/zones/{ZONE}.")
        assert status == 200, zone
        assert isinstance(zone, dict)
        return sorted(
            (r["name"], r["type"], tuple(sorted(x["content"] for x in r["records"])))
            for r in zone["rrsets"]
        )


@pytest.fixture(scope="module")
def dnslab(cluster: lab_cluster.Cluster) -> Iterator[DnsLab]:
    hosts = {i: cluster.lab.add_node(i) for i in NODES}
    client = cluster.lab.add_client()
    server = dns.PowerDns(cluster.lab.attach("dns", dns.HOST_DNS), cluster.lab.workdir / "pdns")
    lab = DnsLab(cluster, client, server)
    try:
        for i, host in hosts.items():
            components.register_node(cluster, i, host)
            lab.processes.append(components.start_backend(cluster, host))
        lab.processes.append(components.start_controller(cluster))
        kube.apply(cluster, *CONFIG)
        speakers = [components.start_speaker(cluster, i, wait=False) for i in NODES]
        lab.processes += speakers
        for speaker in speakers:
            speaker.wait_ready()
        server.start()
        server.create_zone(ZONE)
        lab.processes.append(dns.start_external_dns(cluster, server, domain=ZONE, owner_id=OWNER))
        yield lab
    finally:
        for proc in reversed(lab.processes):
            proc.kill()
        server.stop()
        for doc in CONFIG:
            cluster.kubectl(
                "delete",
                doc["kind"].lower(),
                doc["metadata"]["name"],
                "-n",
                kube.CONFIG_NS,
                "--ignore-not-found",
            )
        components.uninstall_webhook(cluster)
        for role in ("dns", "client", *(f"node-{i}" for i in NODES)):
            cluster.lab.remove(role)
        cluster.kubectl("delete", "node", "-l", "ironlb.io/lab=true", "--ignore-not-found")


async def published(lab: DnsLab, name: str, rtype: str, expected: list[str]) -> dns.Answer:
    """The authoritative answer for `name`/`rtype` once it carries exactly `expected`."""

    def probe() -> dns.Answer | None:
        answer = lab.lookup(name, rtype)
        ok = answer and answer.authoritative and list(answer.records) == sorted(expected)
        return answer if ok else None

    try:
        return await kube.eventually(
            probe, 30, f"{name} {rtype} {expected}", interval=0.2, blocking=True
        )
    except AssertionError as e:
        raise AssertionError(
            f"{e}; dig says {lab.lookup(name, rtype)}; zone {lab.zone_rrsets()};"
            f" ExternalDNS log:\n{lab.external_dns.log_text()[-3000:]}"
        ) from e


async def test_external_dns_publishes_the_loadbalancer_addresses_and_removes_them(
    dnslab: DnsLab, admin: k8s.Client, namespace: str
) -> None:
    web, legacy = f"web.{ZONE}", f"legacy.{ZONE}"
    await admin.create(
        k8s.SERVICES,
        kube.service(
            "web",
            annotations={HOSTNAME: web},
            ipFamilyPolicy="RequireDualStack",
            ipFamilies=["IPv4", "IPv6"],
        ),
        namespace,
    )
    await admin.create(
        k8s.SERVICES, kube.service("legacy", annotations={HOSTNAME: legacy}), namespace
    )
    for name in ("web", "legacy"):
        components.endpoints(dnslab.cluster, namespace, name, [f"node-{i}" for i in NODES])
    web_ips = await kube.eventually(
        lambda: _two(kube.ingress(admin, namespace, "web")), what="web's two addresses"
    )
    legacy_ips = await kube.eventually(lambda: kube.ingress(admin, namespace, "legacy"))
    v4 = [ip for ip in web_ips if ":" not in ip]
    v6 = [ip for ip in web_ips if ":" in ip]

    # What ironlb wrote in the status is what the name resolves to, family by family ...
    await published(dnslab, web, "A", v4)
    await published(dnslab, web, "AAAA", v6)
    await published(dnslab, legacy, "A", legacy_ips)
    # ... and an IPv4-only Service gets no AAAA: the records come from the status, nothing else.
    assert (await published(dnslab, legacy, "AAAA", [])).status == "NOERROR"
    # ExternalDNS marked them as its own (TXT registry, this owner), so it will also remove them.
    owned = [r for r in dnslab.zone_rrsets() if r[1] == "TXT" and f"owner={OWNER}" in str(r[2])]
    assert owned, dnslab.zone_rrsets()

    # PowerDNS is authoritative only: a name outside its zone is refused, never looked up.
    assert dnslab.lookup("example.com", "A") == dns.Answer("REFUSED", False, ())

    # A LAN client reaches the Service at the addresses the name resolved to (seed 002's check).
    for ip in (*v4, *v6, *legacy_ips):
        assert topology.answer(dnslab.client, ip, within=10) in {f"node-{i}" for i in NODES}, ip

    await admin.delete(k8s.SERVICES, "web", namespace)
    await admin.delete(k8s.SERVICES, "legacy", namespace)
    for name in (web, legacy):
        for rtype in ("A", "AAAA"):
            await published(dnslab, name, rtype, [])
    # Only what the zone had before ExternalDNS came (SOA and NS) is left.
    await kube.eventually(
        lambda: {r[1] for r in dnslab.zone_rrsets()} == {"SOA", "NS"},
        what="the zone back to SOA and NS",
        interval=0.2,
        blocking=True,
    )
    # With the rights the RBAC example gives, ExternalDNS was never refused anything.
    assert "forbidden" not in dnslab.external_dns.log_text()


async def _two(found: Awaitable[list[str]]) -> list[str] | None:
    ips = await found
    return ips if len(ips) == 2 else None
