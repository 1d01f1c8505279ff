"""The `SpeakerReport` object (group `ironlb.io`, v1alpha1): what one node's speaker publishes
about itself for `ironlb status` and `ironlb doctor`.

Job: turn a `diagnosis.SpeakerReport` into the object's body and back. One object per node, in
the speakers' namespace, named after the node. The body holds no timestamps that change by
themselves (only BGP state-change times), so two reports of an unchanged node are equal and the
speaker writes nothing: API traffic follows changes, not time.

Invariants: `parse(body(r)) == r` for every report; parsing never raises on a field it does not
know (a newer speaker may add some) and skips entries of the wrong shape.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from ironlb.core import diagnosis

GROUP = "ironlb.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SpeakerReport"
MAX_ADVERTISED = 2000
"""Prefixes listed per BGP session (`prefixesSent` counts them all): keeps the object far
below etcd's 1.5 MB limit however many Services a node advertises."""


def _time(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return (
            datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=datetime.UTC)
            .timestamp()
        )
    except ValueError:
        return None


def status(report: diagnosis.SpeakerReport) -> dict[str, Any]:
    """The object's `status`."""
    return {
        "membership": {
            "enabled": report.membership,
            "keyOK": report.key_ok,
            "keyID": report.key_id,
            "live": list(report.live),
        },
        "ignoreExcludeLB": report.ignore_exclude_lb,
        "interfaces": [
            {"name": i.name, "addresses": list(i.addresses), "usable": i.usable}
            for i in report.interfaces
        ],
        "announced": [{"address": a, "interface": i} for a, i in sorted(report.announced.items())],
        "notAnnounced": [
            {"address": a, "reason": r} for a, r in sorted(report.not_announced.items())
        ],
        "conflicts": [{"address": a, "mac": m} for a, m in sorted(report.conflicts.items())],
        "bgpSessions": [
            {
                "peer": s.peer,
                "address": s.address,
                "state": s.state,
                **({"since": _time(s.since)} if s.since is not None else {}),
                "prefixesSent": s.prefixes_sent,
                "advertised": list(s.advertised[:MAX_ADVERTISED]),
                **({"bfd": s.bfd} if s.bfd is not None else {}),
                "lastDown": s.last_notification,
            }
            for s in report.sessions
        ],
        "problems": list(report.problems),
        "bgpPeerProblems": [
            {"peer": p, "reason": r} for p, r in sorted(report.peer_problems.items())
        ],
    }


def body(report: diagnosis.SpeakerReport, namespace: str) -> dict[str, Any]:
    """The whole object, for a server-side apply."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": report.node, "namespace": namespace},
        "spec": {"nodeName": report.node},
        "status": status(report),
    }


def _map(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def _list(raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = raw.get(key)
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def _strs(value: object) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    return value if isinstance(value, str) else ""


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key)
    return value if isinstance(value, bool) else default


def parse(raw: Mapping[str, Any]) -> diagnosis.SpeakerReport:
    """A SpeakerReport object (as the API server returns it) as the doctor reads it."""
    metadata, spec, st = _map(raw, "metadata"), _map(raw, "spec"), _map(raw, "status")
    member = _map(st, "membership")
    node = _str(spec, "nodeName") or _str(metadata, "name")
    sessions = []
    for s in _list(st, "bgpSessions"):
        prefixes = s.get("prefixesSent")
        bfd = s.get("bfd")
        sessions.append(
            diagnosis.SessionReport(
                peer=_str(s, "peer"),
                address=_str(s, "address"),
                state=_str(s, "state") or "Idle",
                since=_parse_time(s.get("since")),
                prefixes_sent=prefixes if isinstance(prefixes, int) else 0,
                advertised=_strs(s.get("advertised")),
                bfd=bfd if isinstance(bfd, str) else None,
                last_notification=_str(s, "lastDown"),
            )
        )
    return diagnosis.SpeakerReport(
        node=node,
        membership=_bool(member, "enabled", True),
        key_ok=_bool(member, "keyOK", True),
        key_id=_str(member, "keyID"),
        live=_strs(member.get("live")),
        ignore_exclude_lb=_bool(st, "ignoreExcludeLB", False),
        interfaces=tuple(
            diagnosis.InterfaceReport(
                _str(i, "name"), _strs(i.get("addresses")), _bool(i, "usable", True)
            )
            for i in _list(st, "interfaces")
        ),
        announced={_str(a, "address"): _str(a, "interface") for a in _list(st, "announced")},
        not_announced={_str(a, "address"): _str(a, "reason") for a in _list(st, "notAnnounced")},
        conflicts={_str(a, "address"): _str(a, "mac") for a in _list(st, "conflicts")},
        sessions=tuple(sessions),
        problems=_strs(st.get("problems")),
        peer_problems={_str(p, "peer"): _str(p, "reason") for p in _list(st, "bgpPeerProblems")},
    )
