"""The SpeakerReport a speaker publishes: what it holds, and one write per change."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from ironlb.core import addresses as addrs
from ironlb.core import announce, diagnosis, election, speakerreport
from ironlb.k8s import client as k8s
from ironlb.net import links as net_links
from ironlb.speaker import report

IP = ipaddress.IPv4Address("198.18.0.240")
OTHER = ipaddress.IPv4Address("198.18.0.241")


class State(enum.Enum):
    ALIVE = 1
    DEAD = 2

    @property
    def is_live(self) -> bool:
        return self is State.ALIVE


@dataclass
class Member:
    state: State


@dataclass
class Members:
    members: dict[election.NodeName, Member]


@dataclass
class Settings:
    membership: bool = True
    ignore_exclude_lb: bool = False


@dataclass
class Layer2:
    announced: dict[addrs.IP, tuple[str, ...]] = field(default_factory=dict)
    wanted: dict[addrs.IP, announce.Announcement] = field(default_factory=dict)
    claimed: dict[addrs.IP, object] = field(default_factory=dict)
    in_use: dict[addrs.IP, object] = field(default_factory=dict)


@dataclass
class Bgp:
    sessions: tuple[diagnosis.SessionReport, ...] = ()
    peer_problems: dict[str, str] = field(default_factory=dict)

    def session_reports(self) -> tuple[diagnosis.SessionReport, ...]:
        return self.sessions


def link(name: str, index: int, address: str, *, carrier: bool = True) -> net_links.Link:
    return net_links.Link(
        index,
        name,
        "veth",
        net_links.ARPHRD_ETHER,
        "02:00:00:00:00:01",
        True,
        carrier,
        False,
        None,
        (ipaddress.ip_interface(address),),
    )


@dataclass
class Source:
    node: str = "a"
    settings: Settings = field(default_factory=Settings)
    members: Members | None = None
    links: dict[int, net_links.Link] = field(default_factory=dict)
    excluded: tuple[str, ...] = ()
    layer2: Layer2 = field(default_factory=Layer2)
    bgp: Bgp = field(default_factory=Bgp)
    health: announce.Health = field(default_factory=announce.Health)
    isolated: bool = False
    draining: bool = False
    keys: tuple[bytes, ...] | None = (b"secret",)

    def membership_keys(self) -> tuple[bytes, ...] | None:
        return self.keys


def healthy_source() -> Source:
    n = election.NodeName
    return Source(
        members=Members(
            {n("a"): Member(State.ALIVE), n("b"): Member(State.ALIVE), n("c"): Member(State.DEAD)}
        ),
        links={
            2: link("eth0", 2, "198.18.0.11/24"),
            3: link("eth1", 3, "203.0.113.1/24", carrier=False),
        },
        layer2=Layer2(
            announced={IP: ("eth0",)},
            wanted={
                IP: announce.Announcement(IP, (), election.NodeName("a")),
                OTHER: announce.Announcement(
                    OTHER, (), election.NodeName("a"), interfaces=frozenset({"eth1"})
                ),
            },
            claimed={IP: "02:00:00:00:00:99", OTHER: "02:00:00:00:00:98"},
        ),
    )


def test_build_reports_what_the_speaker_holds() -> None:
    r = report.build(healthy_source())
    assert r.node == "a"
    assert r.membership
    assert r.key_ok
    assert r.key_id == report.key_id(b"secret")
    assert r.live == ("a", "b")
    assert [(i.name, i.usable) for i in r.interfaces] == [("eth0", True), ("eth1", False)]
    assert r.interfaces[0].addresses == ("198.18.0.11/24",)
    assert r.announced == {str(IP): "eth0"}
    assert r.not_announced == {
        str(OTHER): "no usable interface (eth0: not listed in the interfaces of the matching "
        "L2Advertisements; eth1: no carrier)"
    }
    # A claim on an address this node no longer announces is no conflict.
    assert r.conflicts == {str(IP): "02:00:00:00:00:99"}
    assert r.problems == ()


def test_build_reports_an_address_another_host_answers_for() -> None:
    src = healthy_source()
    src.layer2.in_use = {OTHER: "02:00:00:00:00:97", ipaddress.IPv4Address("198.18.0.9"): "x"}
    r = report.build(src)
    assert r.not_announced == {
        str(OTHER): "another host (02:00:00:00:00:97) already answers for it"
    }
    # Only addresses the plan still wants: an old probe result is no conflict.
    assert r.conflicts == {str(IP): "02:00:00:00:00:99", str(OTHER): "02:00:00:00:00:97"}


def test_build_without_key_or_membership() -> None:
    src = healthy_source()
    src.members, src.keys = None, None
    r = report.build(src)
    assert not r.membership
    assert not r.key_ok
    assert r.key_id == ""


def test_build_names_problems() -> None:
    src = healthy_source()
    src.isolated, src.draining = True, True
    src.health = announce.Health(blind=True)
    problems = report.build(src).problems
    assert [p.split(":")[0] for p in problems] == ["isolated", "draining", "blind"]


def test_report_round_trips_through_the_object() -> None:
    src = healthy_source()
    src.bgp.peer_problems = {"r1": "no routerID", "r0": "bfdProfile 'x' does not exist"}
    r = report.build(src)
    assert r.peer_problems == src.bgp.peer_problems
    body = speakerreport.body(r, "metallb-system")
    assert [p["peer"] for p in body["status"]["bgpPeerProblems"]] == ["r0", "r1"]
    assert speakerreport.parse(body) == r


class FakeClient:
    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.fail = False

    async def apply(self, res: k8s.Resource, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        if self.fail:
            raise k8s.Unreachable("down")
        assert res == k8s.SPEAKER_REPORTS
        self.applied.append(body)
        return body


async def test_writes_only_when_the_report_changes() -> None:
    client = FakeClient()
    src = healthy_source()
    reporter = report.Reporter(client, "metallb-system", src)  # type: ignore[arg-type]
    assert await reporter.write_if_changed()
    for _ in range(5):
        assert not await reporter.write_if_changed()
    assert len(client.applied) == 1
    src.layer2.announced = {}
    assert await reporter.write_if_changed()
    assert len(client.applied) == 2
    assert client.applied[-1]["status"]["announced"] == []
    assert client.applied[-1]["metadata"] == {"name": "a", "namespace": "metallb-system"}


async def test_a_failed_write_is_tried_again() -> None:
    client = FakeClient()
    reporter = report.Reporter(client, "ns", healthy_source())  # type: ignore[arg-type]
    client.fail = True
    with pytest.raises(k8s.Unreachable):
        await reporter.write_if_changed()
    client.fail = False
    assert await reporter.write_if_changed()
    assert len(client.applied) == 1


def test_advertised_prefixes_are_capped_but_counted() -> None:
    many = tuple(f"198.18.{i // 256}.{i % 256}/32" for i in range(speakerreport.MAX_ADVERTISED + 5))
    session = diagnosis.SessionReport("r", "198.18.0.1", "Established", 1.0, len(many), many)
    r = diagnosis.SpeakerReport("a", sessions=(session,))
    (written,) = speakerreport.status(r)["bgpSessions"]
    assert len(written["advertised"]) == speakerreport.MAX_ADVERTISED
    assert written["prefixesSent"] == len(many)
