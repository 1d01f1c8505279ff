"""Typed, immutable views of the Kubernetes core objects ironlb reads.

Job: parse a Service, Namespace, Node or EndpointSlice (a dict from the API server's JSON) once,
at the `k8s/` boundary, into a frozen struct holding only the fields ironlb uses. These objects
come from the API server, not from users, so every other field is ignored and missing optional
fields take Kubernetes' defaults; only a wrong type is an error.

Invariants: parsing is msgspec's C decoder, not per-field Python (a controller restart parses
10 000 Services); models are frozen; lists are tuples. Values the API server may extend (service
types, protocols, families) stay strings so a new Kubernetes release cannot break parsing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, NewType, TypeVar

import msgspec

from ironlb.core import addresses

ServiceKey = NewType("ServiceKey", str)
"""`namespace/name`, the controller's key for a Service."""

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ModelError(ValueError):
    """A core object the API server sent in a shape ironlb cannot read."""


def service_key(namespace: str, name: str) -> ServiceKey:
    return ServiceKey(f"{namespace}/{name}")


class _Model(msgspec.Struct, frozen=True, rename="camel", kw_only=True):
    pass


class ObjectMeta(_Model, frozen=True):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    labels: Mapping[str, str] = {}
    annotations: Mapping[str, str] = {}


class ServicePort(_Model, frozen=True):
    port: int
    protocol: str = "TCP"
    name: str = ""


class ServiceSpec(_Model, frozen=True):
    type: str = "ClusterIP"
    load_balancer_class: str | None = None
    load_balancer_ip: str = msgspec.field(default="", name="loadBalancerIP")
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str = "SingleStack"
    cluster_ip: str = msgspec.field(default="", name="clusterIP")
    cluster_ips: tuple[str, ...] = msgspec.field(default=(), name="clusterIPs")
    ports: tuple[ServicePort, ...] = ()
    external_traffic_policy: str = "Cluster"
    selector: Mapping[str, str] = {}


class LoadBalancerIngress(_Model, frozen=True):
    ip: str = ""
    hostname: str = ""


class LoadBalancerStatus(_Model, frozen=True):
    ingress: tuple[LoadBalancerIngress, ...] = ()


class ServiceStatus(_Model, frozen=True):
    load_balancer: LoadBalancerStatus = msgspec.field(default_factory=LoadBalancerStatus)


class Service(_Model, frozen=True):
    metadata: ObjectMeta
    spec: ServiceSpec = msgspec.field(default_factory=ServiceSpec)
    status: ServiceStatus = msgspec.field(default_factory=ServiceStatus)

    @property
    def key(self) -> ServiceKey:
        return service_key(self.metadata.namespace, self.metadata.name)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def ingress_ips(self) -> tuple[addresses.IP, ...]:
        """`status.loadBalancer.ingress` addresses; hostname-only or unreadable entries skipped."""
        found = []
        for ingress in self.status.load_balancer.ingress:
            try:
                found.append(addresses.parse_ip(ingress.ip))
            except ValueError:
                continue
        return tuple(found)


class Namespace(_Model, frozen=True):
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name


class NodeCondition(_Model, frozen=True):
    type: str
    status: str = "Unknown"


class NodeAddress(_Model, frozen=True):
    type: str
    address: str


class NodeSpec(_Model, frozen=True):
    pod_cidrs: tuple[str, ...] = msgspec.field(default=(), name="podCIDRs")
    unschedulable: bool = False


class NodeStatus(_Model, frozen=True):
    conditions: tuple[NodeCondition, ...] = ()
    addresses: tuple[NodeAddress, ...] = ()


class Node(_Model, frozen=True):
    metadata: ObjectMeta
    spec: NodeSpec = msgspec.field(default_factory=NodeSpec)
    status: NodeStatus = msgspec.field(default_factory=NodeStatus)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def internal_ips(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        """The node's InternalIPs in their listed order (an entry that is not an address is
        skipped): where BGP listens, the router ID's fallback, the start of `host_ips`."""
        return self._ips("InternalIP")

    @property
    def ips(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        """Every address the node reports, of any type (a Hostname entry is skipped)."""
        return self._ips(None)

    def _ips(self, wanted: str | None) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        found = []
        for a in self.status.addresses:
            if wanted is None or a.type == wanted:
                try:
                    found.append(ipaddress.ip_address(a.address))
                except ValueError:
                    continue
        return tuple(found)

    def host_ips(self) -> tuple[str, ...]:
        """The node's primary address, then the first address of the other family, chosen as
        the kubelet chooses a host-network pod's podIPs (InternalIPs in their listed order,
        then ExternalIPs): the address the kubelet probes such a pod on."""
        found = [*self.internal_ips, *self._ips("ExternalIP")]
        if not found:
            return ()
        primary = found[0]
        other = next((ip for ip in found if ip.version != primary.version), None)
        return tuple(str(ip) for ip in (primary, other) if ip is not None)

    def condition(self, condition_type: str) -> str | None:
        """ "True", "False", "Unknown", or None when the node does not report it."""
        for condition in self.status.conditions:
            if condition.type == condition_type:
                return condition.status
        return None

    @property
    def network_unavailable(self) -> bool:
        return self.condition("NetworkUnavailable") == "True"

    @property
    def ready(self) -> bool:
        return self.condition("Ready") == "True"


class EndpointConditions(_Model, frozen=True):
    """Kubernetes: an absent condition is unknown (None), and unknown `ready` counts as ready."""

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(_Model, frozen=True):
    addresses: tuple[str, ...] = ()
    conditions: EndpointConditions = msgspec.field(default_factory=EndpointConditions)
    node_name: str | None = None


class EndpointSlice(_Model, frozen=True):
    metadata: ObjectMeta
    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def service_key(self) -> ServiceKey | None:
        """The Service this slice belongs to (its `kubernetes.io/service-name` label)."""
        name = self.metadata.labels.get(SERVICE_NAME_LABEL)
        return service_key(self.metadata.namespace, name) if name else None


M = TypeVar("M", bound=_Model)


def _parse(raw: Mapping[str, Any], cls: type[M]) -> M:
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as e:
        metadata = raw.get("metadata")
        name = metadata.get("name", "?") if isinstance(metadata, Mapping) else "?"
        raise ModelError(f"{cls.__name__} {name}: {e}") from None


def parse_service(raw: Mapping[str, Any]) -> Service:
    return _parse(raw, Service)


def parse_namespace(raw: Mapping[str, Any]) -> Namespace:
    return _parse(raw, Namespace)


def parse_node(raw: Mapping[str, Any]) -> Node:
    return _parse(raw, Node)


def parse_endpoint_slice(raw: Mapping[str, Any]) -> EndpointSlice:
    return _parse(raw, EndpointSlice)
