"""`ironlb status` / `ironlb doctor` output, and the parts of gathering that read one object."""

from __future__ import annotations

import json

import click

from ironlb.core import config, diagnosis, model
from ironlb.doctor import command, gather

NS = "metallb-system"
NOW = 1_000_000.0


def snapshot() -> diagnosis.Snapshot:
    pool = config.parse(
        {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": "lan", "namespace": NS},
            "spec": {"addresses": ["198.18.0.240/30", "2001:db8::/126"]},
        }
    )
    svc = model.parse_service(
        {
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.240"}]}},
        }
    )
    pending = model.parse_service(
        {
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.2", "ports": [{"port": 443}]},
        }
    )
    session = diagnosis.SessionReport(
        "router", "198.18.0.1", "Established", NOW - 300, 1, ("198.18.0.240/32",), "Up"
    )
    down = diagnosis.SessionReport("router", "198.18.0.1", "Active", NOW - 10, 0, (), None, "x")
    return diagnosis.Snapshot(
        services=(svc, pending),
        config=config.Config.from_objects([pool]),
        namespace=NS,
        speakers={
            "a": diagnosis.SpeakerReport(
                "a",
                key_id="k",
                live=("a",),
                announced={"198.18.0.240": "eth0"},
                sessions=(session,),
            ),
            "b": diagnosis.SpeakerReport("b", key_id="k", live=("b",), sessions=(down,)),
        },
        controller=diagnosis.Controller(f"{NS}/ironlb-controller", "ctl-1", NOW - 3),
        now=NOW,
    )


def test_status_data() -> None:
    data = command.status_of(snapshot())
    assert data["pools"] == [
        {
            "name": "lan",
            "addresses": ["198.18.0.240/30", "2001:db8::/126"],
            "autoAssign": True,
            "ipv4": {"used": 1, "free": 3},
            "ipv6": {"used": 0, "free": 4},
        }
    ]
    web = next(s for s in data["services"] if s["service"] == "default/web")
    assert web["layer2"] == [{"node": "a", "interface": "eth0", "address": "198.18.0.240"}]
    assert web["bgpPeers"] == ["router (a)"]
    assert web["pool"] == "lan"
    assert [s["live"] for s in data["speakers"]] == [True, True]
    assert [(s["node"], s["state"], s["uptime"]) for s in data["bgpSessions"]] == [
        ("a", "Established", "5m"),
        ("b", "Active", "-"),
    ]
    assert data["controller"]["leader"] == "ctl-1"
    json.dumps(data)  # -o json


def test_status_table_plain_and_coloured() -> None:
    data = command.status_of(snapshot())
    plain = command.render_status(data, colour=False)
    assert "\x1b[" not in plain
    assert "default/api  <pending>" in plain
    assert "a/eth0" in plain
    coloured = command.render_status(data, colour=True)
    assert "\x1b[" in coloured
    assert click.unstyle(coloured) == plain


def test_table_aligns_styled_cells() -> None:
    out = command.table(["A", "B"], [[click.style("NO", fg="red"), "x"], ["yes", "y"]], colour=True)
    lines = [click.unstyle(line) for line in out.splitlines()]
    assert lines == ["A    B", "NO   x", "yes  y"]


def test_doctor_lines_and_json() -> None:
    findings = command.doctor_of(snapshot(), model.service_key("default", "api"))
    assert [f.cause for f in findings] == [diagnosis.NO_POOL]
    text = command.render_findings(findings, colour=False)
    assert text.startswith("Service/default/api: [no-pool] ")
    assert "Fix: " in text
    assert len(text.splitlines()) == 1
    parsed = json.loads(command.findings_json(findings))
    assert parsed[0]["cause"] == "no-pool"
    assert parsed[0]["objects"][0] == "Service/default/api"
    assert command.render_findings([], colour=False) == "no problem found"


def test_kube_proxy_config() -> None:
    conf = "kind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: false\n"
    assert gather.kube_proxy({"data": {"config.conf": conf}}) == diagnosis.KubeProxy("ipvs", False)
    strict = conf.replace("false", "true")
    assert gather.kube_proxy({"data": {"config.conf": strict}}) == diagnosis.KubeProxy("ipvs", True)
    assert gather.kube_proxy({"data": {"config.conf": "mode: ''\n"}}) == diagnosis.KubeProxy()
    assert gather.kube_proxy({"data": {"config.conf": ":\n - ["}}) is None
    assert gather.kube_proxy({}) is None


def test_webhook_and_lease() -> None:
    raw = {
        "metadata": {"name": "ironlb-webhook"},
        "webhooks": [
            {
                "failurePolicy": "Fail",
                "clientConfig": {
                    "service": {"name": "ironlb-webhook-service", "namespace": NS},
                    "caBundle": "",
                },
            }
        ],
    }
    hook = gather.webhook(raw, 0)
    assert hook == diagnosis.Webhook("ironlb-webhook", f"{NS}/ironlb-webhook-service", False, 0)
    lease = gather.lease(
        {
            "spec": {
                "holderIdentity": "c1",
                "renewTime": "1970-01-12T13:46:40.000000Z",
                "leaseDurationSeconds": 15,
            }
        },
        NS,
        "ironlb-controller",
    )
    assert lease == diagnosis.Controller(f"{NS}/ironlb-controller", "c1", NOW, 15.0)
    assert gather.lease(None, NS, "x").holder is None


def test_status_lists_each_nodes_pod_cidr_routes_per_peer() -> None:
    """`--advertise-pod-cidrs`: the node's own PodCIDRs among what its sessions carry, not
    Service routes, not another node's PodCIDR."""
    node = model.parse_node(
        {
            "metadata": {"name": "a"},
            "spec": {"podCIDRs": ["198.51.100.0/24", "2001:db8:1::/64"]},
        }
    )
    carrying = diagnosis.SessionReport(
        "router",
        "198.18.0.1",
        "Established",
        NOW - 300,
        3,
        ("198.18.0.240/32", "198.51.100.0/24", "203.0.113.0/24", "2001:db8:1::/64"),
        None,
    )
    snap = snapshot()
    snap = diagnosis.Snapshot(
        services=snap.services,
        config=snap.config,
        namespace=NS,
        nodes=(node,),
        speakers={"a": diagnosis.SpeakerReport("a", key_id="k", sessions=(carrying,))},
        now=NOW,
    )
    data = command.status_of(snap)
    assert data["podCIDRRoutes"] == [
        {"node": "a", "peer": "router", "prefix": "198.51.100.0/24", "state": "Established"},
        {"node": "a", "peer": "router", "prefix": "2001:db8:1::/64", "state": "Established"},
    ]
    text = command.render_status(data, colour=False)
    assert "PodCIDR routes" in text
    assert "a     router  2001:db8:1::/64" in text
    assert command.status_of(snapshot())["podCIDRRoutes"] == []
