"""Publishes this node's `SpeakerReport` (group ironlb.io): the speaker's own view, for
`ironlb status` and `ironlb doctor`.

Job: every `INTERVAL` seconds, build the report from what the speaker holds (membership view and
key, interfaces, addresses announced and why some are not, ARP/NDP conflicts, BGP sessions) and
write it with one server-side apply, only when it differs from the last one written. API traffic
is therefore at most one write per node per `INTERVAL`, and none while nothing changes: a flapping
BGP session or a flood of forged ARP claims cannot make the speaker write faster.

Invariants: nothing here is on the announcing path (a slow or absent API server only delays the
report); what the report reads from the speaker is the `Source` protocol below, nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Protocol

from ironlb.core import addresses, announce, diagnosis, election, interfaces, speakerreport
from ironlb.k8s import client as k8s

log = logging.getLogger(__name__)

INTERVAL = 5.0
"""Seconds between two looks at the speaker (so between two writes, at most)."""
RETRY_CAP = 60.0
FIELD_MANAGER = "ironlb-speaker-report"

# An address no interface's subnet contains: asks `interfaces.choose` only for the reasons an
# interface is unusable whatever the address (excluded, not Ethernet, down, no carrier).
_NO_SUBNET = ipaddress.IPv4Address("255.255.255.255")


class _Settings(Protocol):
    @property
    def membership(self) -> bool: ...
    @property
    def ignore_exclude_lb(self) -> bool: ...


class _State(Protocol):
    @property
    def is_live(self) -> bool: ...


class _Member(Protocol):
    @property
    def state(self) -> _State: ...


class _Members(Protocol):
    @property
    def members(self) -> Mapping[election.NodeName, _Member]: ...


class _Layer2(Protocol):
    @property
    def announced(self) -> Mapping[addresses.IP, tuple[str, ...]]: ...
    @property
    def wanted(self) -> Mapping[addresses.IP, announce.Announcement]: ...
    @property
    def claimed(self) -> Mapping[addresses.IP, object]: ...
    @property
    def in_use(self) -> Mapping[addresses.IP, object]: ...


class _Bgp(Protocol):
    def session_reports(self) -> tuple[diagnosis.SessionReport, ...]: ...
    @property
    def peer_problems(self) -> Mapping[str, str]: ...


class Source(Protocol):
    """What the report reads from the speaker."""

    @property
    def node(self) -> str: ...
    @property
    def settings(self) -> _Settings: ...
    @property
    def members(self) -> _Members | None: ...
    @property
    def links(self) -> Mapping[int, interfaces.Interface]: ...
    @property
    def excluded(self) -> Sequence[str]: ...
    @property
    def layer2(self) -> _Layer2: ...
    @property
    def bgp(self) -> _Bgp: ...
    @property
    def health(self) -> announce.Health: ...
    @property
    def isolated(self) -> bool: ...
    @property
    def draining(self) -> bool: ...

    def membership_keys(self) -> tuple[bytes, ...] | None: ...


def key_id(key: bytes) -> str:
    """A digest short enough to show, long enough that two different keys differ."""
    return hashlib.sha256(key).hexdigest()[:12]


def build(source: Source) -> diagnosis.SpeakerReport:
    """The report as the speaker stands now."""
    keys = source.membership_keys() if source.settings.membership else None
    members = source.members
    live = (
        tuple(sorted(n for n, m in members.members.items() if m.state.is_live))
        if members is not None
        else ()
    )
    links = list(source.links.values())
    unusable = interfaces.choose(_NO_SUBNET, links, (), source.excluded).rejected
    reported = tuple(
        diagnosis.InterfaceReport(
            link.name, tuple(str(a) for a in link.addresses), link.name not in unusable
        )
        for link in sorted(links, key=lambda i: i.name)
    )
    announced = {str(ip): ",".join(names) for ip, names in source.layer2.announced.items()}
    not_announced = {}
    in_use = source.layer2.in_use
    for ip, a in source.layer2.wanted.items():
        if str(ip) in announced:
            continue
        if ip in in_use:
            not_announced[str(ip)] = f"another host ({in_use[ip]}) already answers for it"
            continue
        choice = interfaces.choose(ip, links, a.interfaces, source.excluded)
        why = [f"{name}: {reason}" for name, reason in sorted(choice.rejected.items())]
        why += [f"{name}: no such interface" for name in choice.missing]
        not_announced[str(ip)] = "no usable interface (" + "; ".join(why or ["none"]) + ")"
    conflicts = {
        str(ip): str(mac) for ip, mac in source.layer2.claimed.items() if str(ip) in announced
    }
    conflicts.update(
        (str(ip), str(mac)) for ip, mac in in_use.items() if ip in source.layer2.wanted
    )
    problems = []
    if source.isolated:
        problems.append("isolated: peers' membership packets fail authentication (its key differs)")
    if source.draining:
        problems.append("draining: shutting down, handing its addresses over")
    if source.health.blind:
        problems.append("blind: no interface can announce anything")
    if source.health.blocked:
        problems.append(
            "cannot announce in "
            + ", ".join(map(str, source.health.blocked))
            + " (the interfaces of these subnets are down or have no carrier)"
        )
    return diagnosis.SpeakerReport(
        node=source.node,
        membership=source.settings.membership and members is not None,
        key_ok=not source.settings.membership or bool(keys),
        key_id=key_id(keys[0]) if keys else "",
        live=live,
        ignore_exclude_lb=source.settings.ignore_exclude_lb,
        interfaces=reported,
        announced=announced,
        not_announced=not_announced,
        conflicts=conflicts,
        sessions=source.bgp.session_reports(),
        problems=tuple(problems),
        peer_problems=dict(source.bgp.peer_problems),
    )


class Reporter:
    def __init__(
        self,
        client: k8s.Client,
        namespace: str,
        source: Source,
        *,
        interval: float = INTERVAL,
    ) -> None:
        self._client = client
        self._namespace = namespace
        self._source = source
        self._interval = interval
        self.written: diagnosis.SpeakerReport | None = None
        self.writes = 0

    async def write_if_changed(self) -> bool:
        """Write the report if it changed since the last write; True if it wrote."""
        report = build(self._source)
        if report == self.written:
            return False
        await self._client.apply(
            k8s.SPEAKER_REPORTS,
            speakerreport.body(report, self._namespace),
            field_manager=FIELD_MANAGER,
        )
        self.written = report
        self.writes += 1
        return True

    async def run(self) -> None:
        delay = self._interval
        while True:
            try:
                await self.write_if_changed()
                delay = self._interval
            except (k8s.ApiError, k8s.Unreachable) as e:
                delay = min(max(delay * 2, self._interval), RETRY_CAP)
                log.warning("could not write SpeakerReport (retrying in %.0f s): %s", delay, e)
            await asyncio.sleep(delay)
