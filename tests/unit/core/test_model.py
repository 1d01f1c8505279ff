import ipaddress
from typing import Any

import pytest

from ironlb.core import model

SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "macula-bootstrap",
        "namespace": "macula",
        "uid": "6f1d",
        "resourceVersion": "4711",
        "creationTimestamp": "2025-11-07T10:00:00Z",
        "labels": {"app": "macula-bootstrap"},
        "annotations": {"metallb.io/allow-shared-ip": "bootstrap"},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.96.12.7",
        "clusterIPs": ["10.96.12.7", "fd00::7"],
        "ipFamilies": ["IPv4", "IPv6"],
        "ipFamilyPolicy": "PreferDualStack",
        "loadBalancerIP": "192.0.2.51",
        "loadBalancerClass": "ironlb.io/lb",
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 31999,
        "selector": {"app": "macula-bootstrap"},
        "ports": [
            {
                "name": "quic",
                "port": 4433,
                "targetPort": 4433,
                "protocol": "UDP",
                "nodePort": 30001,
            },
            {"name": "http", "port": 80, "targetPort": "http"},
        ],
        "sessionAffinity": "None",
    },
    "status": {
        "loadBalancer": {
            "ingress": [
                {"ip": "192.0.2.51", "ipMode": "VIP"},
                {"hostname": "lb.example"},
                {"ip": "2001:db8::51"},
            ]
        },
        "conditions": [],
    },
}


def test_service_fields_used_by_ironlb() -> None:
    service = model.parse_service(SERVICE)
    assert service.key == "macula/macula-bootstrap"
    assert (service.namespace, service.name) == ("macula", "macula-bootstrap")
    assert service.metadata.uid == "6f1d"
    assert service.metadata.resource_version == "4711"
    assert service.metadata.labels == {"app": "macula-bootstrap"}
    assert service.metadata.annotations["metallb.io/allow-shared-ip"] == "bootstrap"
    spec = service.spec
    assert spec.type == "LoadBalancer"
    assert spec.load_balancer_class == "ironlb.io/lb"
    assert spec.load_balancer_ip == "192.0.2.51"
    assert spec.cluster_ip == "10.96.12.7"
    assert spec.cluster_ips == ("10.96.12.7", "fd00::7")
    assert spec.ip_families == ("IPv4", "IPv6")
    assert spec.ip_family_policy == "PreferDualStack"
    assert spec.external_traffic_policy == "Local"
    assert spec.selector == {"app": "macula-bootstrap"}
    assert [(p.protocol, p.port, p.name) for p in spec.ports] == [
        ("UDP", 4433, "quic"),
        ("TCP", 80, "http"),  # protocol defaults to TCP
    ]
    assert service.ingress_ips == (
        ipaddress.IPv4Address("192.0.2.51"),
        ipaddress.IPv6Address("2001:db8::51"),
    )


def test_service_defaults_for_missing_fields() -> None:
    service = model.parse_service({"metadata": {"name": "s", "namespace": "default"}})
    spec = service.spec
    assert (spec.type, spec.ip_family_policy, spec.external_traffic_policy) == (
        "ClusterIP",
        "SingleStack",
        "Cluster",
    )
    assert spec.load_balancer_class is None
    assert spec.ports == ()
    assert service.ingress_ips == ()
    assert service.metadata.annotations == {}


def test_service_is_immutable() -> None:
    service = model.parse_service(SERVICE)
    with pytest.raises(AttributeError):
        service.spec = model.ServiceSpec()  # type: ignore[misc]


def test_wrong_types_are_reported() -> None:
    with pytest.raises(model.ModelError, match=r"Service web: .*\$\.spec\.ports\[0\]\.port"):
        model.parse_service({"metadata": {"name": "web"}, "spec": {"ports": [{"port": "eighty"}]}})


def test_namespace() -> None:
    namespace = model.parse_namespace(
        {"metadata": {"name": "team-a", "labels": {"team": "a"}}, "status": {"phase": "Active"}}
    )
    assert (namespace.name, namespace.metadata.labels) == ("team-a", {"team": "a"})


def test_node_conditions_and_addresses() -> None:
    node = model.parse_node(
        {
            "metadata": {
                "name": "k8s-node1",
                "labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""},
            },
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24", "fd00:10::/64"]},
            "status": {
                "conditions": [
                    {"type": "NetworkUnavailable", "status": "False", "reason": "CalicoIsUp"},
                    {"type": "Ready", "status": "True", "lastHeartbeatTime": "..."},
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "192.0.2.11"},
                    {"type": "Hostname", "address": "k8s-node1"},
                ],
                "nodeInfo": {"kubeletVersion": "v1.31.0"},
            },
        }
    )
    assert node.name == "k8s-node1"
    assert node.ready
    assert not node.network_unavailable
    assert node.condition("MemoryPressure") is None
    assert node.spec.pod_cidrs == ("10.244.0.0/24", "fd00:10::/64")
    assert [(a.type, a.address) for a in node.status.addresses] == [
        ("InternalIP", "192.0.2.11"),
        ("Hostname", "k8s-node1"),
    ]
    assert "node.kubernetes.io/exclude-from-external-load-balancers" in node.metadata.labels


def test_node_without_status_is_not_ready() -> None:
    node = model.parse_node({"metadata": {"name": "new"}})
    assert not node.ready
    assert not node.network_unavailable


def test_endpoint_slice() -> None:
    slice_ = model.parse_endpoint_slice(
        {
            "metadata": {
                "name": "web-abc12",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "endpoints": [
                {
                    "addresses": ["10.244.1.5"],
                    "conditions": {"ready": True, "serving": True, "terminating": False},
                    "nodeName": "node-1",
                    "targetRef": {"kind": "Pod", "name": "web-1"},
                },
                {"addresses": ["10.244.2.9"], "conditions": {}},
            ],
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }
    )
    assert slice_.service_key == "default/web"
    assert slice_.address_type == "IPv4"
    first, second = slice_.endpoints
    assert (first.conditions.ready, first.conditions.serving, first.node_name) == (
        True,
        True,
        "node-1",
    )
    # Absent conditions are unknown, not false.
    assert (second.conditions.ready, second.conditions.serving, second.node_name) == (
        None,
        None,
        None,
    )
    orphan = model.parse_endpoint_slice({"metadata": {"name": "x", "namespace": "default"}})
    assert orphan.service_key is None


def _node_with(*addresses: tuple[str, str]) -> model.Node:
    return model.parse_node(
        {
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]},
        }
    )


@pytest.mark.parametrize(
    ("addresses", "expected"),
    [
        # IPv6-primary dual-stack: the kubelet's order, not IPv4 first.
        (
            [("InternalIP", "2001:db8::11"), ("InternalIP", "192.0.2.11")],
            ("2001:db8::11", "192.0.2.11"),
        ),
        (
            [("InternalIP", "192.0.2.11"), ("InternalIP", "2001:db8::11")],
            ("192.0.2.11", "2001:db8::11"),
        ),
        # One address per family, the first of each.
        (
            [
                ("InternalIP", "192.0.2.11"),
                ("InternalIP", "192.0.2.12"),
                ("InternalIP", "2001:db8::1"),
            ],
            ("192.0.2.11", "2001:db8::1"),
        ),
        ([("InternalIP", "2001:db8::11")], ("2001:db8::11",)),
        # InternalIPs before ExternalIPs, whatever the listed order.
        ([("ExternalIP", "203.0.113.5"), ("InternalIP", "192.0.2.11")], ("192.0.2.11",)),
        ([("Hostname", "n"), ("ExternalIP", "203.0.113.5")], ("203.0.113.5",)),
        ([("Hostname", "n")], ()),
        ([("InternalIP", "not-an-ip"), ("InternalIP", "192.0.2.11")], ("192.0.2.11",)),
    ],
)
def test_host_ips_are_the_kubelets_choice(
    addresses: list[tuple[str, str]], expected: tuple[str, ...]
) -> None:
    """A host-network pod's podIPs, which the kubelet probes: the first InternalIP (else
    ExternalIP), then the first address of the other family."""
    assert _node_with(*addresses).host_ips() == expected


def test_internal_ips_are_the_internal_addresses_in_order() -> None:
    """Where BGP listens and the router ID's fallback: InternalIPs only, in their listed order,
    an entry that is not an address skipped; `ips` is every address of any type."""
    node = _node_with(
        ("ExternalIP", "203.0.113.5"),
        ("InternalIP", "2001:db8::11"),
        ("Hostname", "n"),
        ("InternalIP", "not-an-ip"),
        ("InternalIP", "192.0.2.11"),
    )
    assert node.internal_ips == (
        ipaddress.ip_address("2001:db8::11"),
        ipaddress.ip_address("192.0.2.11"),
    )
    assert node.ips == (
        ipaddress.ip_address("203.0.113.5"),
        ipaddress.ip_address("2001:db8::11"),
        ipaddress.ip_address("192.0.2.11"),
    )
