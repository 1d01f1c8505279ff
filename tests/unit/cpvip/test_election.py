"""The cpvip election core: every health and role transition, with an injected clock."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from ironlb.core import election as core_election
from ironlb.cpvip import election
from ironlb.cpvip.election import HEALTHY_META, Check, Health, Peer, Role, Verdict

VIP = ip_address("192.0.2.10")
N = core_election.NodeName
NAMES = [N("198.51.100.1"), N("198.51.100.2"), N("198.51.100.3")]
RANKED = core_election.ranking(VIP, NAMES)
"""Best first: RANKED[0] wins when every node is a candidate."""


def up(e: election.Election, now: float = 0.0) -> election.Decision:
    d = e.checked(now, True)
    return e.checked(now + 0.15, True) if e.health is not Health.UP else d


def healthy(*names: str) -> dict[core_election.NodeName, Peer]:
    return {N(n): Peer(True, HEALTHY_META) for n in names}


def test_tables_are_total() -> None:
    assert set(election.HEALTH_TABLE) == {(h, c) for h in Health for c in Check}
    assert set(election.ROLE_TABLE) == {(r, v) for r in Role for v in Verdict}


def test_health_needs_rise_good_and_fall_bad_checks_in_a_row() -> None:
    e = election.Election(NAMES[0], VIP, rise=2, fall=3)
    assert e.checked(0.0, True).health is Health.UNKNOWN
    assert e.checked(0.1, True).health is Health.UP
    assert e.meta == HEALTHY_META
    assert e.checked(0.2, False).health is Health.UP
    assert e.checked(0.3, False).health is Health.UP
    assert e.checked(0.4, True).health is Health.UP  # the run of failures is broken
    for t in (0.5, 0.6):
        assert e.checked(t, False).health is Health.UP
    d = e.checked(0.7, False)
    assert d.health is Health.DOWN
    assert d.meta == b""
    assert e.checked(0.8, True).health is Health.DOWN
    assert e.checked(0.9, True).health is Health.UP


def test_alone_at_bootstrap_takes_the_vip_once_healthy() -> None:
    e = election.Election(NAMES[0], VIP)
    d = e.peers(0.0, {})
    assert (d.role, d.holds, d.owner) == (Role.STANDBY, False, None)
    assert e.checked(0.1, True).holds is False  # one good check is not enough
    d = e.checked(0.2, True)
    assert (d.role, d.holds, d.owner, d.meta) == (Role.OWNER, True, NAMES[0], HEALTHY_META)
    assert d.transitions == 1


def test_joining_nodes_take_over_only_when_they_win_and_are_healthy() -> None:
    loser, winner = RANKED[-1], RANKED[0]
    e = election.Election(loser, VIP)
    up(e)
    assert e.holds
    # The better-ranked node joins with its apiserver not ready: nothing moves.
    d = e.peers(1.0, {winner: Peer(True, b"")})
    assert (d.role, d.holds, d.owner) == (Role.OWNER, True, loser)
    # Its apiserver turns ready: it wins; this node keeps answering until the winner claims
    # the VIP, then releases.
    d = e.peers(2.0, healthy(winner))
    assert (d.role, d.holds, d.owner) == (Role.YIELDING, True, winner)
    assert e.yield_until == 3.0
    assert e.peers(2.1, healthy(winner)).role is Role.YIELDING
    d = e.claimed(2.2)
    assert (d.role, d.holds) == (Role.STANDBY, False)
    assert e.yield_until is None
    assert e.tick(5.0).role is Role.STANDBY


def test_owner_loses_on_its_own_apiserver_failing_when_another_is_healthy() -> None:
    me = RANKED[0]
    e = election.Election(me, VIP)
    e.peers(0.0, healthy(RANKED[1], RANKED[2]))
    up(e)
    assert e.role is Role.OWNER
    e.checked(1.0, False)
    d = e.checked(1.15, False)
    assert (d.role, d.holds, d.owner) == (Role.YIELDING, True, RANKED[1])
    assert e.tick(2.14).role is Role.YIELDING
    d = e.tick(2.15)  # nobody claimed it within `handover`: let go anyway
    assert (d.role, d.holds) == (Role.STANDBY, False)


def test_standby_takes_over_when_the_owner_dies_or_turns_unhealthy() -> None:
    e = election.Election(RANKED[1], VIP)
    e.peers(0.0, healthy(RANKED[0], RANKED[2]))
    up(e)
    assert e.role is Role.STANDBY
    d = e.peers(1.0, {RANKED[0]: Peer(False, HEALTHY_META), **healthy(RANKED[2])})
    assert (d.role, d.holds) == (Role.OWNER, True)
    e2 = election.Election(RANKED[1], VIP)
    e2.peers(0.0, healthy(RANKED[0]))
    up(e2)
    assert e2.role is Role.STANDBY
    d = e2.peers(1.0, {RANKED[0]: Peer(True, b"")})
    assert (d.role, d.holds) == (Role.OWNER, True)


def test_nobody_healthy_the_holder_keeps_a_standby_takes_nothing() -> None:
    e = election.Election(RANKED[0], VIP)
    e.peers(0.0, healthy(RANKED[1]))
    up(e)
    assert e.role is Role.OWNER
    # The other one turns unhealthy first, then this one: nobody is a candidate, the holder
    # keeps the VIP.
    assert e.peers(0.5, {RANKED[1]: Peer(True, b"")}).role is Role.OWNER
    e.checked(1.0, False)
    d = e.checked(1.15, False)
    assert (d.role, d.holds, d.owner) == (Role.KEEPING, True, None)
    assert e.peers(1.5, {RANKED[1]: Peer(False, b"")}).role is Role.KEEPING
    # The other apiserver comes back first: it takes over.
    d = e.peers(2.0, healthy(RANKED[1]))
    assert (d.role, d.holds, d.owner) == (Role.YIELDING, True, RANKED[1])
    assert e.claimed(2.1).role is Role.STANDBY
    s = election.Election(RANKED[2], VIP)
    d = s.peers(0.0, {RANKED[0]: Peer(True, b"")})
    assert (d.role, d.holds) == (Role.STANDBY, False)


def test_holder_unhealthy_while_another_is_healthy_releases() -> None:
    e = election.Election(RANKED[0], VIP)
    e.peers(0.0, healthy(RANKED[1]))
    up(e)
    e.checked(1.0, False)
    d = e.checked(1.15, False)
    assert (d.role, d.holds, d.owner) == (Role.YIELDING, True, RANKED[1])


def test_yielding_back_to_owner_keeping_or_drained() -> None:
    e = election.Election(RANKED[0], VIP)
    e.peers(0.0, healthy(RANKED[1]))
    up(e)
    e.checked(1.0, False)
    assert e.checked(1.1, False).role is Role.YIELDING
    # The winner turns unhealthy too before claiming: nobody, keep.
    d = e.peers(1.2, {RANKED[1]: Peer(True, b"")})
    assert (d.role, d.holds) == (Role.KEEPING, True)
    assert e.yield_until is None
    e.peers(1.3, healthy(RANKED[1]))
    assert e.role is Role.YIELDING
    e.checked(1.4, True)
    d = e.checked(1.5, True)  # this one is back and ranks first: owner again
    assert (d.role, d.holds) == (Role.OWNER, True)
    assert e.claimed(1.6).role is Role.OWNER  # a claim while owning is a conflict, not a loss
    e.checked(3.0, False)
    e.checked(3.1, False)
    assert e.role is Role.YIELDING
    d = e.drain(3.2)
    assert (d.role, d.holds) == (Role.DRAINED, False)


def test_keeping_then_own_apiserver_back_is_owner_again() -> None:
    e = election.Election(NAMES[0], VIP)
    up(e)
    e.checked(1.0, False)
    assert e.checked(1.15, False).role is Role.KEEPING
    e.checked(2.0, True)
    assert e.checked(2.15, True).role is Role.OWNER


def test_drain_hands_over_and_is_final() -> None:
    e = election.Election(RANKED[0], VIP)
    e.peers(0.0, healthy(RANKED[1]))
    up(e)
    d = e.drain(1.0)
    assert (d.role, d.holds, d.meta, d.owner) == (Role.DRAINED, False, b"", RANKED[1])
    assert e.checked(1.1, True).role is Role.DRAINED
    assert e.peers(1.2, {}).holds is False
    s = election.Election(RANKED[1], VIP)
    assert s.drain(0.0).role is Role.DRAINED


def test_dead_or_unhealthy_members_are_no_candidates_and_self_is_ignored() -> None:
    e = election.Election(NAMES[0], VIP)
    e.peers(
        0.0,
        {
            NAMES[0]: Peer(True, HEALTHY_META),
            NAMES[1]: Peer(False, HEALTHY_META),
            NAMES[2]: Peer(True, b"nope"),
        },
    )
    assert e.candidates() == ()


def test_illegal_pairs_raise() -> None:
    with pytest.raises(election.IllegalTransition):
        election.next_role(Role.OWNER, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        election.Election(NAMES[0], VIP, rise=0)


def test_a_claim_heard_before_losing_ends_the_yield_at_once() -> None:
    e = election.Election(RANKED[0], VIP, handover=1.0)
    e.peers(0.0, healthy(RANKED[1]))
    up(e)
    assert e.claimed(1.0).role is Role.OWNER  # a conflict while winning: kept
    e.checked(1.2, False)
    d = e.checked(1.35, False)  # loses 0.35 s after the claim: the winner has it already
    assert (d.role, d.holds) == (Role.STANDBY, False)
    assert d.transitions == 2  # OWNER, then straight to STANDBY
    f = election.Election(RANKED[0], VIP, handover=1.0)
    f.peers(0.0, healthy(RANKED[1]))
    up(f)
    f.claimed(1.0)
    f.checked(2.2, False)
    assert f.checked(2.35, False).role is Role.YIELDING  # an old claim does not count
