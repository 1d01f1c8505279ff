"""The controller against the real API server, running as its own service account.

Each test confines its pools to its own namespace (serviceAllocation.namespaces), so tests do not
hand each other's Services addresses, and uses its own address range.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import yaml

from ironlb.k8s import client as k8s
from ironlb.lab import cluster as lab_cluster
from ironlb.lab import components
from support import kube

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def controller(cluster: lab_cluster.Cluster) -> Iterator[components.Process]:
    proc = components.start_controller(cluster)
    yield proc
    assert proc.stop() == 0, proc.log_text()[-2000:]
    components.uninstall_webhook(cluster)


@pytest.fixture(autouse=True)
def _controller_running(controller: components.Process) -> None:
    assert controller.alive, controller.log_text()[-3000:]


async def test_service_gets_lowest_address_annotation_event_and_pool_status(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controller: components.Process,
) -> None:
    kube.apply(cluster, kube.pool("basic", "198.51.100.0/29", namespaces=(namespace,)))
    await admin.create(k8s.SERVICES, kube.service("web"), namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "web")) == ["198.51.100.0"]

    async def pool_annotation() -> str | None:
        # Written after the status (a separate request): awaited, not sampled.
        svc = await admin.get(k8s.SERVICES, "web", namespace)
        return (svc["metadata"].get("annotations") or {}).get("metallb.io/ip-allocated-from-pool")

    assert await kube.eventually(pool_annotation) == "basic"
    events = await kube.eventually(lambda: kube.events_for(admin, namespace, "web"))
    assert ("IPAllocated", 'Assigned IP ["198.51.100.0"]') in events

    async def counted() -> dict[str, int] | None:
        obj = await admin.get(k8s.IP_ADDRESS_POOLS, "basic", kube.CONFIG_NS)
        status = obj.get("status") or {}
        return status if status.get("assignedIPv4") == 1 else None

    status = await kube.eventually(counted)
    assert status["availableIPv4"] == 7
    assert controller.metric("metallb_allocator_addresses_in_use_total", 'pool="basic"') == 1
    assert controller.metric("metallb_allocator_ipv4_addresses_total", 'pool="basic"') == 8


async def test_requested_address_pool_annotation_and_sharing(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    kube.apply(
        cluster,
        kube.pool("share-a", "198.51.100.16/29", namespaces=(namespace,)),
        kube.pool("share-b", "198.51.100.24/29", namespaces=(namespace,), autoAssign=False),
    )
    wanted = {"metallb.io/loadBalancerIPs": "198.51.100.20"}
    await admin.create(k8s.SERVICES, kube.service("asks", annotations=wanted), namespace)
    named = {"metallb.io/address-pool": "share-b"}
    await admin.create(k8s.SERVICES, kube.service("names-pool", annotations=named), namespace)
    shared = {"metallb.io/allow-shared-ip": "key-1", **wanted}
    await admin.create(
        k8s.SERVICES, kube.service("dns-tcp", ports=(53,), annotations=shared), namespace
    )
    await admin.create(
        k8s.SERVICES,
        kube.service(
            "dns-udp",
            ports=(53,),
            protocol="UDP",
            annotations={
                "metallb.io/allow-shared-ip": "key-1",
                "metallb.io/loadBalancerIPs": "198.51.100.21",
            },
        ),
        namespace,
    )
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "asks")) == [
        "198.51.100.20"
    ]
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "names-pool")) == [
        "198.51.100.24"
    ]
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "dns-udp")) == [
        "198.51.100.21"
    ]
    # dns-tcp asked for .20, held by "asks" without a sharing key: refused, and told why.
    events = await kube.eventually(
        lambda: kube.reasons(admin, namespace, "dns-tcp", "AllocationFailed")
    )
    assert "asks" in events[0]
    # Sharing works when both carry the key and their ports do not overlap.
    await admin.patch(
        k8s.SERVICES,
        "dns-tcp",
        {"metadata": {"annotations": {"metallb.io/loadBalancerIPs": "198.51.100.21"}}},
        namespace,
    )
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "dns-tcp")) == [
        "198.51.100.21"
    ]


async def test_dual_stack_policies(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    kube.apply(
        cluster, kube.pool("dual", "198.51.100.32/29", "2001:db8:5::/125", namespaces=(namespace,))
    )
    await admin.create(
        k8s.SERVICES,
        kube.service("both", ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv4", "IPv6"]),
        namespace,
    )
    await admin.create(
        k8s.SERVICES,
        kube.service("six", ipFamilyPolicy="SingleStack", ipFamilies=["IPv6"]),
        namespace,
    )
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "both")) == [
        "198.51.100.32",
        "2001:db8:5::",
    ]
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "six")) == ["2001:db8:5::1"]


async def test_pending_service_is_served_when_an_address_frees_up(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    kube.apply(cluster, kube.pool("tiny", "198.51.100.40/32", namespaces=(namespace,)))
    await admin.create(k8s.SERVICES, kube.service("first"), namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "first"))
    await admin.create(k8s.SERVICES, kube.service("second"), namespace)
    failed = await kube.eventually(
        lambda: kube.reasons(admin, namespace, "second", "AllocationFailed")
    )
    assert "no IPAddressPool has a free IPv4 address" in failed[0]
    assert "tiny (0 of 1 IPv4 free)" in failed[0]
    await admin.delete(k8s.SERVICES, "first", namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "second")) == [
        "198.51.100.40"
    ]


async def test_pool_edited_to_exclude_an_address_reallocates_with_events(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    kube.apply(cluster, kube.pool("shrink", "198.51.100.48-198.51.100.51", namespaces=(namespace,)))
    await admin.create(k8s.SERVICES, kube.service("moved"), namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "moved")) == [
        "198.51.100.48"
    ]
    kube.apply(cluster, kube.pool("shrink", "198.51.100.50-198.51.100.51", namespaces=(namespace,)))
    assert await kube.eventually(
        lambda: kube.ingress_is(admin, namespace, "moved", ["198.51.100.50"])
    )
    cleared = await kube.eventually(
        lambda: kube.reasons(admin, namespace, "moved", "ClearAssignment")
    )
    assert "198.51.100.48" in cleared[0]

    # Events are written in the background: wait for both.
    async def allocated() -> list[str] | None:
        notes = await kube.reasons(admin, namespace, "moved", "IPAllocated")
        return notes if len(notes) >= 2 else None

    assert await kube.eventually(allocated) == [
        'Assigned IP ["198.51.100.48"]',
        'Assigned IP ["198.51.100.50"]',
    ]


async def test_other_classes_are_left_alone_and_type_change_clears_status(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    kube.apply(cluster, kube.pool("classes", "198.51.100.56/30", namespaces=(namespace,)))
    await admin.create(
        k8s.SERVICES, kube.service("theirs", loadBalancerClass="example.com/other"), namespace
    )
    await admin.create(k8s.SERVICES, kube.service("ours"), namespace)
    assert await kube.eventually(lambda: kube.ingress(admin, namespace, "ours"))
    assert await kube.ingress(admin, namespace, "theirs") == []
    await admin.patch(k8s.SERVICES, "ours", {"spec": {"type": "ClusterIP"}}, namespace)
    assert await kube.eventually(lambda: kube.ingress_is(admin, namespace, "ours", []))


async def test_a_refused_sharer_is_reconsidered_when_the_holder_changes(
    cluster: lab_cluster.Cluster, admin: k8s.Client, namespace: str
) -> None:
    """MetalLB's "should reconsider services when sharing the ip and conditions change"."""
    kube.apply(cluster, kube.pool("reconsider", "198.51.100.88/30", namespaces=(namespace,)))
    key = {"metallb.io/allow-shared-ip": "key-r"}
    await admin.create(
        k8s.SERVICES,
        kube.service("holder", annotations=key, externalTrafficPolicy="Local"),
        namespace,
    )
    (ip,) = await kube.eventually(lambda: kube.ingress(admin, namespace, "holder"))
    wanted = {**key, "metallb.io/loadBalancerIPs": ip}
    await admin.create(
        k8s.SERVICES,
        kube.service("sharer", ports=(443,), annotations=wanted, externalTrafficPolicy="Cluster"),
        namespace,
    )
    # Local and Cluster cannot share an address: refused, and told why.
    refused = await kube.eventually(
        lambda: kube.reasons(admin, namespace, "sharer", "AllocationFailed")
    )
    assert "holder" in refused[0]
    assert await kube.ingress(admin, namespace, "sharer") == []
    # The holder changes so that the two can share: the refused one is reconsidered at once.
    await admin.patch(
        k8s.SERVICES, "holder", {"spec": {"externalTrafficPolicy": "Cluster"}}, namespace
    )
    assert await kube.eventually(
        lambda: kube.ingress_is(admin, namespace, "sharer", [ip]), within=5
    )
    assert await kube.ingress(admin, namespace, "holder") == [ip]


def test_webhook_rejects_an_overlapping_pool_via_kubectl(
    cluster: lab_cluster.Cluster, namespace: str
) -> None:
    kube.apply(cluster, kube.pool("webhook-a", "198.51.100.64/29", namespaces=(namespace,)))
    out = cluster.control_plane.run_kubectl(
        "apply",
        "-f",
        "-",
        check=False,
        stdin=yaml.safe_dump(kube.pool("webhook-b", "198.51.100.70/31")),
    )
    assert out.returncode != 0
    assert 'admission webhook "config.ironlb.io" denied the request' in out.stderr
    assert "IPAddressPool metallb-system/webhook-b: spec.addresses[0]" in out.stderr
    assert "IPAddressPool metallb-system/webhook-a" in out.stderr


async def test_invalid_configuration_is_reported_and_the_last_valid_one_stays(
    cluster: lab_cluster.Cluster,
    admin: k8s.Client,
    namespace: str,
    controller: components.Process,
) -> None:
    kube.apply(cluster, kube.pool("stays", "198.51.100.80/29", namespaces=(namespace,)))
    # With the webhook out of the way (as if it were not installed), store an overlap.
    components.uninstall_webhook(cluster)
    try:
        kube.apply(cluster, kube.pool("clash", "198.51.100.84/30", namespaces=(namespace,)))

        async def invalid() -> str:
            state = await admin.get(k8s.CONFIGURATION_STATES, "controller", kube.CONFIG_NS)
            status = state.get("status") or {}
            return "" if status.get("validConfig", True) else str(status.get("lastError"))

        error = await kube.eventually(invalid)
        assert "clash" in error
        assert "overlaps" in error
        assert controller.metric("metallb_k8s_client_config_stale_bool") == 1
        assert "configuration not applied" in controller.log_text()
        # The last valid configuration still serves new Services.
        await admin.create(k8s.SERVICES, kube.service("still-served"), namespace)
        assert await kube.eventually(lambda: kube.ingress(admin, namespace, "still-served")) == [
            "198.51.100.80"
        ]
        await admin.delete(k8s.IP_ADDRESS_POOLS, "clash", kube.CONFIG_NS)
        await kube.eventually(lambda: _valid(admin))
        assert controller.metric("metallb_k8s_client_config_stale_bool") == 0
    finally:
        components.install_webhook(cluster, cluster.ctl.ipv4)


async def _valid(admin: k8s.Client) -> bool:
    state = await admin.get(k8s.CONFIGURATION_STATES, "controller", kube.CONFIG_NS)
    return bool((state.get("status") or {}).get("validConfig"))


async def test_the_speakers_membership_key_is_created_once_and_kept(
    admin: k8s.Client, controller: components.Process
) -> None:
    async def key() -> str:
        try:
            secret = await admin.get(k8s.SECRETS, "memberlist", kube.CONFIG_NS)
        except k8s.ApiError:
            return ""
        return str(secret["data"]["secretkey"])

    first = await kube.eventually(key)
    assert len(base64.b64decode(first)) >= 32
    assert await key() == first  # never replaced: speakers would lose each other
