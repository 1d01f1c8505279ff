"""Every cause `ironlb doctor` names, each from a healthy snapshot with one thing broken."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ironlb.core import config, diagnosis, model

NS = "metallb-system"
NOW = 1_000_000.0
IP = "198.18.0.241"
KEY = model.service_key("default", "web")


def obj(kind: str, name: str, spec: dict[str, Any], version: str = "v1beta1", **meta: Any) -> Any:
    return config.parse(
        {
            "apiVersion": f"metallb.io/{version}",
            "kind": kind,
            "metadata": {"name": name, "namespace": NS, **meta},
            "spec": spec,
        }
    )


def pool(name: str = "lan", *addrs: str, **spec: Any) -> Any:
    return obj("IPAddressPool", name, {"addresses": list(addrs or ("198.18.0.240/28",)), **spec})


def l2(name: str = "lan", **spec: Any) -> Any:
    return obj("L2Advertisement", name, spec)


def bgpadv(name: str = "bgp", **spec: Any) -> Any:
    return obj("BGPAdvertisement", name, spec)


def peer(name: str = "router", **spec: Any) -> Any:
    return obj(
        "BGPPeer",
        name,
        {"myASN": 64512, "peerASN": 64513, "peerAddress": "198.18.0.1", **spec},
        version="v1beta2",
    )


def svc(
    name: str = "web",
    *ips: str,
    etp: str = "Cluster",
    annotations: dict[str, str] | None = None,
    **spec: Any,
) -> model.Service:
    return model.parse_service(
        {
            "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
            "spec": {
                "type": "LoadBalancer",
                "externalTrafficPolicy": etp,
                "clusterIP": "10.96.0.10",
                "ports": [{"port": 80}],
                "selector": {"app": name},
                **spec,
            },
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}},
        }
    )


def slice_(service: str = "web", *nodes: str, ready: bool = True) -> model.EndpointSlice:
    return model.parse_endpoint_slice(
        {
            "metadata": {
                "name": f"{service}-x",
                "namespace": "default",
                "labels": {model.SERVICE_NAME_LABEL: service},
            },
            "endpoints": [
                {"addresses": [f"10.244.0.{i + 1}"], "nodeName": n, "conditions": {"ready": ready}}
                for i, n in enumerate(nodes or ("a",))
            ],
        }
    )


def node(name: str, ip: str, labels: dict[str, str] | None = None, **status: Any) -> model.Node:
    return model.parse_node(
        {
            "metadata": {
                "name": name,
                "labels": {"kubernetes.io/hostname": name, **(labels or {})},
            },
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": "True"}],
                **status,
            },
        }
    )


def report(name: str, **kw: Any) -> diagnosis.SpeakerReport:
    base: dict[str, Any] = {
        "node": name,
        "key_id": "k1",
        "live": ("a", "b"),
        "interfaces": (diagnosis.InterfaceReport("eth0", ("198.18.0.11/24",)),),
    }
    base.update(kw)
    return diagnosis.SpeakerReport(**base)


def healthy(**changes: Any) -> diagnosis.Snapshot:
    snap = diagnosis.Snapshot(
        services=(svc("web", IP),),
        endpoints={KEY: (slice_("web", "a"),)},
        nodes=(node("a", "198.18.0.11"), node("b", "198.18.0.12")),
        namespaces={"default": {}},
        config=config.Config.from_objects([pool(), l2()]),
        namespace=NS,
        config_states=(diagnosis.ConfigState("controller", NS, True),),
        speakers={"a": report("a", announced={IP: "eth0"}), "b": report("b")},
        kube_proxy=diagnosis.KubeProxy("iptables", False),
        webhook=diagnosis.Webhook("ironlb-webhook", f"{NS}/ironlb-webhook", True, 1),
        controller=diagnosis.Controller(f"{NS}/ironlb-controller", "ctl-1", NOW - 2, 15),
        now=NOW,
    )
    return dataclasses.replace(snap, **changes)


def causes(snap: diagnosis.Snapshot, only: model.ServiceKey | None = None) -> list[str]:
    return [f.cause for f in diagnosis.diagnose(snap, only)]


def only_finding(snap: diagnosis.Snapshot) -> diagnosis.Finding:
    found = diagnosis.diagnose(snap)
    assert len(found) == 1, [f.line() for f in found]
    return found[0]


def test_healthy_setup_has_no_finding() -> None:
    assert diagnosis.diagnose(healthy()) == []


def test_healthy_bgp_setup_has_no_finding() -> None:
    cfg = config.Config.from_objects([pool(), bgpadv(), peer()])
    session = diagnosis.SessionReport(
        "router", "198.18.0.1", "Established", NOW - 60, 1, (f"{IP}/32",), "Up"
    )
    speakers = {"a": report("a", sessions=(session,)), "b": report("b", sessions=(session,))}
    assert diagnosis.diagnose(healthy(config=cfg, speakers=speakers)) == []


def test_every_finding_names_objects_and_a_fix() -> None:
    snap = healthy(
        services=(svc("web"), svc("api", "198.18.0.242")),
        kube_proxy=diagnosis.KubeProxy("ipvs", False),
        deprecated=(f"AddressPool/{NS}/old",),
    )
    found = diagnosis.diagnose(snap)
    assert len(found) >= 3
    for f in found:
        assert f.objects
        assert f.fix
        assert f.why
        assert f.what
        assert all(o.count("/") >= 1 for o in f.objects)


# Cause 1: no pool can serve the Service.


def test_no_pool_at_all() -> None:
    f = only_finding(healthy(services=(svc(),), config=config.Config()))
    assert f.cause == diagnosis.NO_POOL
    assert "no IPAddressPool" in f.what
    assert f.subject == "Service/default/web"


def test_requested_address_outside_every_pool() -> None:
    f = only_finding(healthy(services=(svc("web", loadBalancerIP="203.0.113.5"),)))
    assert f.cause == diagnosis.NO_POOL
    assert "203.0.113.5" in f.what
    assert "203.0.113.5" in f.fix
    assert "IPAddressPool/metallb-system/lan" in f.objects


def test_auto_assign_false() -> None:
    cfg = config.Config.from_objects([pool(autoAssign=False), l2()])
    f = only_finding(healthy(services=(svc(),), config=cfg))
    assert f.cause == diagnosis.NO_POOL
    assert "autoAssign" in f.fix


def test_selectors_exclude_the_service() -> None:
    cfg = config.Config.from_objects([pool(serviceAllocation={"namespaces": ["prod"]}), l2()])
    f = only_finding(healthy(services=(svc(),), config=cfg))
    assert f.cause == diagnosis.NO_POOL
    assert "serviceAllocation" in f.fix


def test_pool_exhausted() -> None:
    cfg = config.Config.from_objects([pool("lan", "198.18.0.241/32"), l2()])
    snap = healthy(services=(svc("web", IP), svc("api")), config=cfg)
    found = diagnosis.diagnose(snap)
    assert [(f.cause, f.subject) for f in found] == [(diagnosis.NO_POOL, "Service/default/api")]
    assert "free" in found[0].what
    assert "add addresses" in found[0].fix


def test_sharing_conflict() -> None:
    other = svc("web", IP)
    wants = svc("api", loadBalancerIP=IP)
    f = only_finding(healthy(services=(other, wants)))
    assert f.subject == "Service/default/api"
    assert "allow-shared-ip" in f.fix


def test_family_the_pools_lack() -> None:
    six = svc("web", clusterIP="fd00::10", ipFamilies=["IPv6"])
    f = only_finding(healthy(services=(six,)))
    assert f.cause == diagnosis.NO_POOL
    assert "IPv6" in f.fix


def test_load_balancer_class_not_ours() -> None:
    f = only_finding(healthy(services=(svc("web", loadBalancerClass="other.io/lb"),)))
    assert f.cause == diagnosis.CLASS_NOT_OURS
    assert "other.io/lb" in f.what


def test_not_a_load_balancer_is_ignored() -> None:
    assert causes(healthy(services=(svc("web", type="ClusterIP"),))) == []


def test_free_address_but_no_assignment_points_at_the_controller() -> None:
    f = only_finding(healthy(services=(svc(),)))
    assert f.cause == diagnosis.NO_POOL
    assert "controller" in f.why


# Cause 2: no advertisement covers the pool, or it selects no node / interface.


def test_no_advertisement() -> None:
    f = only_finding(healthy(config=config.Config.from_objects([pool()])))
    assert f.cause == diagnosis.NO_ADVERTISEMENT
    assert "IPAddressPool/metallb-system/lan" in f.objects


def test_advertisement_for_another_pool() -> None:
    cfg = config.Config.from_objects(
        [pool(), pool("other", "203.0.113.0/28"), l2(ipAddressPools=["other"])]
    )
    assert causes(healthy(config=cfg)) == [diagnosis.NO_ADVERTISEMENT]


def test_advertisement_selects_no_node() -> None:
    adv = l2(nodeSelectors=[{"matchLabels": {"role": "edge"}}])
    f = only_finding(healthy(config=config.Config.from_objects([pool(), adv])))
    assert f.cause == diagnosis.NO_NODE_SELECTED
    assert "L2Advertisement/metallb-system/lan" in f.objects


def test_interfaces_select_nothing() -> None:
    adv = l2(interfaces=["bond0"])
    speakers = {"a": report("a"), "b": report("b")}
    f = only_finding(healthy(config=config.Config.from_objects([pool(), adv]), speakers=speakers))
    assert f.cause == diagnosis.NO_INTERFACE
    assert "bond0" in f.what


# Cause 3 and 4: endpoints.


def test_no_endpoint() -> None:
    f = only_finding(healthy(endpoints={}, speakers={"a": report("a"), "b": report("b")}))
    assert f.cause == diagnosis.NO_ENDPOINT
    assert "kubectl get pods -n default -l app=web" in f.fix


def test_no_ready_endpoint() -> None:
    snap = healthy(endpoints={KEY: (slice_("web", "a", ready=False),)})
    assert diagnosis.NO_ENDPOINT in causes(snap)


def test_local_policy_without_local_endpoint_on_eligible_nodes() -> None:
    adv = l2(nodeSelectors=[{"matchLabels": {"kubernetes.io/hostname": "b"}}])
    snap = healthy(
        services=(svc("web", IP, etp="Local"),),
        config=config.Config.from_objects([pool(), adv]),
    )
    f = only_finding(snap)
    assert f.cause == diagnosis.LOCAL_NO_ENDPOINT
    assert "Node/b" in f.objects


def test_local_policy_with_local_endpoint_is_fine() -> None:
    assert causes(healthy(services=(svc("web", IP, etp="Local"),))) == []


# Cause 5: excluded nodes, no speaker.

EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


def test_only_node_is_excluded() -> None:
    snap = healthy(nodes=(node("a", "198.18.0.11", {EXCLUDE: ""}),), speakers={"a": report("a")})
    f = only_finding(snap)
    assert f.cause == diagnosis.EXCLUDED
    assert f"kubectl label node a {EXCLUDE}-" in f.fix


def test_excluded_node_with_ignore_exclude_lb_is_fine() -> None:
    snap = healthy(
        nodes=(node("a", "198.18.0.11", {EXCLUDE: ""}),),
        speakers={"a": report("a", ignore_exclude_lb=True, announced={IP: "eth0"})},
    )
    assert causes(snap) == []


def test_network_unavailable_nodes() -> None:
    bad = node("a", "198.18.0.11", conditions=[{"type": "NetworkUnavailable", "status": "True"}])
    f = only_finding(healthy(nodes=(bad,), speakers={"a": report("a")}))
    assert f.cause == diagnosis.EXCLUDED
    assert "NetworkUnavailable" in f.what


def test_unknown_speakers_are_no_finding() -> None:
    # SpeakerReports not readable (CRD missing): their absence says nothing.
    assert causes(healthy(speakers={}, speakers_known=False)) == []
    snap = healthy(speakers={}, speakers_known=False, endpoints={})
    assert causes(snap) == [diagnosis.NO_ENDPOINT]


def test_no_speaker_on_eligible_nodes() -> None:
    f = only_finding(healthy(speakers={}))
    assert f.cause == diagnosis.NO_SPEAKER
    assert "Node/a" in f.objects


# Cause 6: off-subnet.


def test_address_off_the_announcing_nodes_subnet() -> None:
    cfg = config.Config.from_objects([pool("lan", "203.0.113.0/28"), l2()])
    addr = "203.0.113.1"
    snap = healthy(
        services=(svc("web", addr),),
        config=cfg,
        speakers={"a": report("a", announced={addr: "eth0"}), "b": report("b")},
    )
    f = only_finding(snap)
    assert f.cause == diagnosis.OFF_SUBNET
    assert f"ip route add {addr}/32 via 198.18.0.11" in f.fix
    assert "198.18.0.11/24" in f.what


def test_not_announced_gives_node_problems() -> None:
    speakers = {"a": report("a", problems=("isolated: key differs",)), "b": report("b")}
    f = only_finding(healthy(speakers=speakers))
    assert f.cause == diagnosis.NOT_ANNOUNCED
    assert "a: isolated: key differs" in f.what


def test_not_announced_by_anyone_gives_the_nodes_reasons() -> None:
    speakers = {"a": report("a", not_announced={IP: "eth0 has no carrier"}), "b": report("b")}
    f = only_finding(healthy(speakers=speakers))
    assert f.cause == diagnosis.NOT_ANNOUNCED
    assert "a: eth0 has no carrier" in f.what


# Cause 7: IPVS without strictARP.


def test_ipvs_without_strict_arp() -> None:
    f = only_finding(healthy(kube_proxy=diagnosis.KubeProxy("ipvs", False)))
    assert f.cause == diagnosis.STRICT_ARP
    assert f.subject == "ConfigMap/kube-system/kube-proxy"


@pytest.mark.parametrize(
    "proxy", [diagnosis.KubeProxy("ipvs", True), diagnosis.KubeProxy("", False), None]
)
def test_strict_arp_or_iptables_is_fine(proxy: diagnosis.KubeProxy | None) -> None:
    assert causes(healthy(kube_proxy=proxy)) == []


# Cause 8: deprecated configuration.


def test_deprecated_objects() -> None:
    snap = healthy(deprecated=(f"AddressPool/{NS}/old", f"ConfigMap/{NS}/config"))
    found = diagnosis.diagnose(snap)
    assert [(f.cause, f.subject) for f in found] == [
        (diagnosis.DEPRECATED, f"AddressPool/{NS}/old"),
        (diagnosis.DEPRECATED, f"ConfigMap/{NS}/config"),
    ]
    assert all("IPAddressPool" in f.fix for f in found)


# Cause 9: ARP/NDP conflict.


def test_another_host_answers_for_the_address() -> None:
    speakers = {
        "a": report("a", announced={IP: "eth0"}, conflicts={IP: "02:00:00:00:00:99"}),
        "b": report("b"),
    }
    f = only_finding(healthy(speakers=speakers))
    assert f.cause == diagnosis.CONFLICT
    assert "02:00:00:00:00:99" in f.what


def test_address_in_use_by_another_host_is_one_conflict_finding() -> None:
    speakers = {
        "a": report("a", conflicts={IP: "02:00:00:00:00:99"}, not_announced={IP: "in use"}),
        "b": report("b"),
    }
    f = only_finding(healthy(speakers=speakers))
    assert f.cause == diagnosis.CONFLICT


# Cause 10: BGP.


def bgp_snapshot(*sessions: diagnosis.SessionReport) -> diagnosis.Snapshot:
    cfg = config.Config.from_objects([pool(), bgpadv(), peer()])
    return healthy(config=cfg, speakers={"a": report("a", sessions=sessions)})


def test_bgp_session_not_established() -> None:
    s = diagnosis.SessionReport(
        "router", "198.18.0.1", "Active", NOW - 300, 0, (), None, "6/2 (administrative shutdown)"
    )
    f = only_finding(bgp_snapshot(s))
    assert f.cause == diagnosis.BGP_SESSION
    assert "Active for 5m" in f.what
    assert "administrative shutdown" in f.what
    assert "BGPPeer/metallb-system/router" in f.objects


def test_bgp_no_session_at_all() -> None:
    assert causes(bgp_snapshot()) == [diagnosis.BGP_SESSION]


def test_bgp_no_session_because_the_peer_cannot_be_used_names_the_reason() -> None:
    cfg = config.Config.from_objects([pool(), bgpadv(), peer()])
    why = "passwordSecret metallb-system/router-pw does not exist"
    speakers = {"a": report("a", peer_problems={"router": why})}
    f = only_finding(healthy(config=cfg, speakers=speakers))
    assert f.cause == diagnosis.BGP_SESSION
    assert f.what == f"a runs no BGP session to BGPPeer/metallb-system/router: {why}"
    assert "BGPPeer/metallb-system/router" in f.objects
    # Another peer's problem is not this one's reason.
    speakers = {"a": report("a", peer_problems={"other": why})}
    f = only_finding(healthy(config=cfg, speakers=speakers))
    assert why not in f.what
    assert "no session" in f.what


def test_bgp_route_withdrawn() -> None:
    s = diagnosis.SessionReport("router", "198.18.0.1", "Established", NOW - 60, 0, ())
    assert causes(bgp_snapshot(s)) == [diagnosis.BGP_WITHDRAWN]


def test_bgp_truncated_list_is_not_a_withdrawal() -> None:
    s = diagnosis.SessionReport("router", "198.18.0.1", "Established", NOW - 60, 5000, ("x",))
    assert causes(bgp_snapshot(s)) == []


def test_bfd_down() -> None:
    s = diagnosis.SessionReport(
        "router", "198.18.0.1", "Established", NOW - 60, 1, (f"{IP}/32",), "Down"
    )
    assert causes(bgp_snapshot(s)) == [diagnosis.BFD_DOWN]


def test_bgp_no_peer_selects_the_nodes() -> None:
    cfg = config.Config.from_objects([pool(), bgpadv()])
    assert causes(healthy(config=cfg)) == [diagnosis.BGP_SESSION]


# Cause 11: membership.


def test_speakers_without_membership() -> None:
    speakers = {"a": report("a", announced={IP: "eth0"}), "b": report("b", membership=False)}
    f = only_finding(healthy(speakers=speakers))
    assert f.cause == diagnosis.NO_MEMBERSHIP
    assert f.objects == ("Node/b",)


def test_speakers_with_different_keys() -> None:
    speakers = {"a": report("a", announced={IP: "eth0"}), "b": report("b", key_id="k2")}
    f = only_finding(healthy(speakers=speakers))
    assert f.cause == diagnosis.KEY_MISMATCH
    assert "b use key k2" in f.what


# Cause 12: webhook and controller.


def test_webhook_certificate_not_published() -> None:
    f = only_finding(healthy(webhook=diagnosis.Webhook("w", f"{NS}/w", False, 1)))
    assert f.cause == diagnosis.WEBHOOK
    assert "caBundle" in f.what


def test_webhook_without_endpoint() -> None:
    f = only_finding(healthy(webhook=diagnosis.Webhook("w", f"{NS}/w", True, 0)))
    assert f.cause == diagnosis.WEBHOOK
    assert f.subject == f"Service/{NS}/w"


def test_controller_not_leading() -> None:
    f = only_finding(healthy(controller=diagnosis.Controller(f"{NS}/l", None)))
    assert f.cause == diagnosis.CONTROLLER


def test_controller_lease_expired() -> None:
    f = only_finding(healthy(controller=diagnosis.Controller(f"{NS}/l", "c", NOW - 100, 15)))
    assert f.cause == diagnosis.CONTROLLER
    assert "ago" in f.what


# Cause 13: configuration rejected.


def test_configuration_rejected() -> None:
    states = (diagnosis.ConfigState("controller", NS, False, "IPAddressPool lan: overlaps"),)
    f = only_finding(healthy(config_states=states))
    assert f.cause == diagnosis.CONFIG_INVALID
    assert "overlaps" in f.what


def test_unreadable_configuration_object() -> None:
    f = only_finding(healthy(config_errors=("IPAddressPool/metallb-system/x: bad CIDR",)))
    assert f.cause == diagnosis.CONFIG_INVALID


# Scope.


def test_only_one_service_keeps_cluster_findings() -> None:
    snap = healthy(
        services=(svc("web", IP), svc("api", loadBalancerIP="203.0.113.9")),
        kube_proxy=diagnosis.KubeProxy("ipvs", False),
    )
    assert causes(snap, KEY) == [diagnosis.STRICT_ARP]
    assert causes(snap, model.service_key("default", "api")) == [
        diagnosis.STRICT_ARP,
        diagnosis.NO_POOL,
    ]


def test_findings_are_deterministic() -> None:
    snap = healthy(services=(svc("b"), svc("a")), config=config.Config())
    assert [f.subject for f in diagnosis.diagnose(snap)] == [
        "Service/default/a",
        "Service/default/b",
    ]
