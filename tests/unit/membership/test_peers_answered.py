"""When a settling node (just started, or its carrier back) has heard its peers."""

from ipaddress import IPv4Address

import pytest

from ironlb.core import election
from ironlb.membership import model
from ironlb.membership.states import MemberState


def members(**states: MemberState) -> dict[election.NodeName, model.Member]:
    return {
        election.NodeName(name): model.Member(
            election.NodeName(name), model.Endpoint(IPv4Address("192.0.2.1"), 7946), 1, state
        )
        for name, state in states.items()
    }


@pytest.mark.parametrize(
    ("peer", "answered"),
    [
        (MemberState.ALIVE, True),
        (MemberState.SUSPECT, True),
        (MemberState.LEFT, True),
        (MemberState.UNCONFIRMED, False),
        # Seen dead while this node's own link was down: not heard until it answers again (a
        # node whose carrier came back must not take addresses on a view from its isolation).
        (MemberState.DEAD, False),
    ],
)
def test_a_peer_counts_as_heard_once_it_answered_and_is_not_dead(
    peer: MemberState, answered: bool
) -> None:
    view = members(me=MemberState.ALIVE, a=MemberState.ALIVE, b=peer)
    assert model.peers_answered(view, "me") is answered


def test_its_own_state_does_not_count() -> None:
    assert model.peers_answered(members(me=MemberState.DEAD), "me")
    assert model.peers_answered({}, "me")
