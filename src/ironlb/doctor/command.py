"""`ironlb status` and `ironlb doctor`: gather a snapshot, then print it or its diagnosis.

Job: the shell around `core.diagnosis`. `status` is one screen of tables (pools, LoadBalancer
Services, speakers, BGP sessions, controller); `doctor` is one line per finding and exit status
1 when there is any. Both print JSON with `-o json`. Colour only when stdout is a terminal.

Invariants: read-only (nothing is written to the API); what is shown comes from the snapshot and
the pure functions below (`status_of`, `doctor_of`), so it is tested without a cluster.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import click

from ironlb.core import addresses, alloc, diagnosis, model


def _age(snapshot: diagnosis.Snapshot, since: float | None) -> str:
    if since is None:
        return "-"
    seconds = max(0, int(snapshot.now - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def status_of(snapshot: diagnosis.Snapshot) -> dict[str, Any]:
    """Everything `ironlb status` shows, as plain data."""
    allocator = diagnosis.replay(snapshot)
    pools = []
    for name, pool in sorted(snapshot.config.pools.items()):
        stats = allocator.pool_stats(name)
        pools.append(
            {
                "name": name,
                "addresses": [str(r) for r in pool.spec.addresses],
                "autoAssign": pool.spec.auto_assign,
                "ipv4": {"used": stats.assigned_ipv4, "free": stats.available_ipv4},
                "ipv6": {"used": stats.assigned_ipv6, "free": stats.available_ipv6},
            }
        )
    index = snapshot.config.pool_index()
    services = []
    for svc in sorted(snapshot.services, key=lambda s: s.key):
        if svc.spec.type != "LoadBalancer":
            continue
        ips = svc.ingress_ips
        announcers: list[dict[str, str]] = []
        peers: set[str] = set()
        for ip in ips:
            for node, report in sorted(snapshot.speakers.items()):
                interface = report.announced.get(str(ip))
                if interface is not None:
                    announcers.append({"node": node, "interface": interface, "address": str(ip)})
                for session in report.sessions:
                    if session.state == diagnosis.ESTABLISHED and any(
                        _contains(prefix, ip) for prefix in session.advertised
                    ):
                        peers.add(f"{session.peer} ({node})")
        found = (index.pool_of(ip) for ip in ips)
        pool_names = sorted({name for name in found if name is not None})
        services.append(
            {
                "service": str(svc.key),
                "addresses": [str(ip) for ip in ips],
                "pool": ",".join(pool_names),
                "ports": [f"{p.port}/{p.protocol}" for p in svc.spec.ports],
                "handled": alloc.is_handled(svc, snapshot.lb_class),
                "layer2": announcers,
                "bgpPeers": sorted(peers),
            }
        )
    live_views = [set(r.live) for r in snapshot.speakers.values() if r.membership]
    speakers = []
    sessions = []
    for node, report in sorted(snapshot.speakers.items()):
        live: bool | None = any(node in view for view in live_views) if live_views else None
        speakers.append(
            {
                "node": node,
                "live": live,
                "membership": report.membership,
                "keyOK": report.key_ok,
                "keyID": report.key_id,
                "announced": len(report.announced),
                "problems": [
                    *report.problems,
                    *(f"BGPPeer {p}: {why}" for p, why in sorted(report.peer_problems.items())),
                ],
            }
        )
        for s in report.sessions:
            sessions.append(
                {
                    "node": node,
                    "peer": s.peer,
                    "address": s.address,
                    "state": s.state,
                    "uptime": _age(snapshot, s.since) if s.state == diagnosis.ESTABLISHED else "-",
                    "since": s.since,
                    "prefixesSent": s.prefixes_sent,
                    "bfd": s.bfd or "-",
                    "lastDown": s.last_notification,
                }
            )
    controller = snapshot.controller
    return {
        "pools": pools,
        "services": services,
        "speakers": speakers,
        "bgpSessions": sessions,
        "podCIDRRoutes": _pod_cidr_routes(snapshot),
        "controller": {
            "lease": controller.lease if controller else None,
            "leader": controller.holder if controller else None,
            "renewed": _age(snapshot, controller.renewed) if controller else "-",
        },
    }


def _pod_cidr_routes(snapshot: diagnosis.Snapshot) -> list[dict[str, str]]:
    """Per node and peer, the node's own PodCIDRs (`spec.podCIDRs`) its BGP session carries
    (`--advertise-pod-cidrs`)."""
    own = {n.metadata.name: {_network(c) for c in n.spec.pod_cidrs} for n in snapshot.nodes}
    routes = []
    for node, report in sorted(snapshot.speakers.items()):
        for s in report.sessions:
            for prefix in s.advertised:
                if _network(prefix) in own.get(node, set()):
                    routes.append(
                        {"node": node, "peer": s.peer, "prefix": prefix, "state": s.state}
                    )
    return routes


def _network(prefix: str) -> str:
    try:
        return str(ipaddress.ip_network(prefix, strict=False))
    except ValueError:
        return prefix


def _contains(prefix: str, ip: addresses.IP) -> bool:
    try:
        net = ipaddress.ip_network(prefix, strict=False)
    except ValueError:
        return False
    return net.version == ip.version and ip in net


def doctor_of(
    snapshot: diagnosis.Snapshot, only: model.ServiceKey | None = None
) -> list[diagnosis.Finding]:
    return diagnosis.diagnose(snapshot, only)


def findings_json(findings: Sequence[diagnosis.Finding]) -> str:
    return json.dumps(
        [{**dataclasses.asdict(f), "objects": list(f.objects)} for f in findings], indent=2
    )


# Rendering.


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, colour: bool) -> str:
    """Aligned columns; a header line in bold when colouring."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(click.unstyle(cell)))

    def line(cells: Sequence[str]) -> str:
        padded = (c + " " * (w - len(click.unstyle(c))) for c, w in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    head = line(headers)
    out = [click.style(head, bold=True) if colour else head]
    out += [line(r) for r in rows]
    return "\n".join(out)


def _mark(ok: bool | None, colour: bool) -> str:
    text = {True: "yes", False: "NO", None: "?"}[ok]
    if colour and ok is False:
        return click.style(text, fg="red")
    return text


def render_status(data: dict[str, Any], *, colour: bool) -> str:
    def title(text: str) -> str:
        return click.style(text, fg="cyan", bold=True) if colour else text

    parts = [title("Pools")]
    parts.append(
        table(
            ["POOL", "ADDRESSES", "IPv4 USED/FREE", "IPv6 USED/FREE", "AUTO"],
            [
                [
                    p["name"],
                    ",".join(p["addresses"]),
                    f"{p['ipv4']['used']}/{p['ipv4']['free']}",
                    f"{p['ipv6']['used']}/{p['ipv6']['free']}",
                    "yes" if p["autoAssign"] else "no",
                ]
                for p in data["pools"]
            ],
            colour=colour,
        )
    )
    parts += ["", title("LoadBalancer Services")]
    parts.append(
        table(
            ["SERVICE", "ADDRESS", "POOL", "PORTS", "LAYER 2 (NODE/INTERFACE)", "BGP PEERS"],
            [
                [
                    s["service"],
                    ",".join(s["addresses"]) or ("<pending>" if s["handled"] else "<not ours>"),
                    s["pool"] or "-",
                    ",".join(s["ports"]),
                    ",".join(f"{a['node']}/{a['interface']}" for a in s["layer2"]) or "-",
                    ",".join(s["bgpPeers"]) or "-",
                ]
                for s in data["services"]
            ],
            colour=colour,
        )
    )
    parts += ["", title("Speakers")]
    parts.append(
        table(
            ["NODE", "LIVE", "MEMBERSHIP", "KEY OK", "KEY ID", "ANNOUNCES", "PROBLEMS"],
            [
                [
                    s["node"],
                    _mark(s["live"], colour),
                    _mark(s["membership"], colour),
                    _mark(s["keyOK"], colour),
                    s["keyID"] or "-",
                    str(s["announced"]),
                    "; ".join(s["problems"]) or "-",
                ]
                for s in data["speakers"]
            ],
            colour=colour,
        )
    )
    if data["bgpSessions"]:
        parts += ["", title("BGP sessions")]
        parts.append(
            table(
                ["NODE", "PEER", "ADDRESS", "STATE", "UPTIME", "PREFIXES SENT", "BFD", "LAST DOWN"],
                [
                    [
                        s["node"],
                        s["peer"],
                        s["address"],
                        s["state"]
                        if not colour or s["state"] == diagnosis.ESTABLISHED
                        else click.style(s["state"], fg="red"),
                        s["uptime"],
                        str(s["prefixesSent"]),
                        s["bfd"],
                        s["lastDown"] or "-",
                    ]
                    for s in data["bgpSessions"]
                ],
                colour=colour,
            )
        )
    if data["podCIDRRoutes"]:
        parts += ["", title("PodCIDR routes")]
        parts.append(
            table(
                ["NODE", "PEER", "PODCIDR", "SESSION"],
                [[r["node"], r["peer"], r["prefix"], r["state"]] for r in data["podCIDRRoutes"]],
                colour=colour,
            )
        )
    c = data["controller"]
    parts += [
        "",
        title("Controller"),
        f"leader: {c['leader'] or _mark(False, colour)} (Lease {c['lease']}, renewed "
        f"{c['renewed']} ago)",
    ]
    return "\n".join(parts)


def render_findings(findings: Sequence[diagnosis.Finding], *, colour: bool) -> str:
    if not findings:
        text = "no problem found"
        return click.style(text, fg="green") if colour else text
    lines = []
    for f in findings:
        subject = click.style(f.subject, fg="red", bold=True) if colour else f.subject
        lines.append(f"{subject}: [{f.cause}] {f.what}. {f.why}. Fix: {f.fix}")
    return "\n".join(lines)
