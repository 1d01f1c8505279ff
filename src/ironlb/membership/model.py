"""What the membership core tells its shell: members, their endpoints, and change events.

Members and events are immutable snapshots; the core replaces a member's record on every change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple, TypeAlias

from ironlb.core import election
from ironlb.membership import states

MAX_META_SIZE = 64


class Endpoint(NamedTuple):
    """A speaker's UDP address."""

    ip: IPv4Address | IPv6Address
    port: int


class Datagram(NamedTuple):
    """A packet for the shell to send."""

    endpoint: Endpoint
    payload: bytes


@dataclass(frozen=True, slots=True)
class Member:
    name: election.NodeName
    address: Endpoint
    incarnation: int
    state: states.MemberState
    meta: bytes = b""
    """Opaque to membership (at most `MAX_META_SIZE` bytes): the speaker's own flags."""


def peers_answered(members: Mapping[election.NodeName, Member], me: str) -> bool:
    """Every other member has answered and is not dead: a node settling (just started, or its
    carrier came back) may stop waiting. A peer seen DEAD may only have been unreachable from
    here (this node's link was down): it is not heard until it answers again."""
    pending = (states.MemberState.UNCONFIRMED, states.MemberState.DEAD)
    return not any(m.state in pending for name, m in members.items() if name != me)


@dataclass(frozen=True, slots=True)
class MemberUp:
    """Confirmed, refuted a suspicion, came back, or rejoined: an election candidate again."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberUpdated:
    """Still alive, with new meta."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberSuspect:
    """Missed its probes; still a candidate while it has time to refute."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberDown:
    """Declared dead: no longer a candidate."""

    member: Member


@dataclass(frozen=True, slots=True)
class MemberLeft:
    """Left gracefully (or the shell said it is gone): no longer a candidate."""

    member: Member


Event: TypeAlias = MemberUp | MemberUpdated | MemberSuspect | MemberDown | MemberLeft
