"""The layer-2 announcer core, driven with an injected clock: every transition, the timers, and
properties over random input sequences."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ironlb.core import addresses, model
from ironlb.l2 import announcer

S, In, E = announcer.State, announcer.Input, announcer.Effect
IP = IPv4Address("198.18.0.10")
IP2 = IPv4Address("198.18.0.11")
IP6 = IPv6Address("2001:db8::10")
SVC = model.ServiceKey("default/web")
TIMING = announcer.Timing()
ANSWERING = {S.ANNOUNCING, S.HANDING_OVER}


def target(*interfaces: str, known: bool = False, refresh: float | None = None) -> announcer.Target:
    return announcer.Target(
        interfaces or ("eth0",), (SVC,), refresh=refresh, known=known, why_none="carrier down"
    )


def started(timing: announcer.Timing = TIMING) -> announcer.Announcer:
    """A core that has settled (no membership)."""
    core = announcer.Announcer("node-1", timing)
    core.start(0.0)
    core.membership(0.0, running=False, peers_heard=True, verified_peers=False, bad_mac=0)
    return core


def of(actions: list[announcer.Action], kind: type) -> list[announcer.Action]:
    return [a for a in actions if isinstance(a, kind)]


# --- the table ------------------------------------------------------------------------------


ALL_PAIRS = [(state, event) for state in S for event in In]


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS, ids=lambda x: x.name)
def test_every_pair_keeps_the_invariants(state: announcer.State, event: announcer.Input) -> None:
    if (state, event) not in announcer.TABLE:
        with pytest.raises(announcer.IllegalTransition):
            announcer.transition(state, event)
        # Only timers of another state, and drain's own timeout, can be illegal.
        assert event in {In.RETRY_DUE, In.GRATUITOUS_DUE, In.HANDOVER_EXPIRED}
        return
    step = announcer.transition(state, event)
    effects = set(step.effects)
    # Stopping is what leaving the answering states means, and only that.
    assert (E.STOP in effects) == (state in ANSWERING and step.state not in ANSWERING)
    if E.ANSWER in effects:
        assert step.state is S.ANNOUNCING
    if E.GRATUITOUS in effects:
        assert state is step.state is S.ANNOUNCING
    if step.state is S.ANNOUNCING and state is not S.ANNOUNCING:
        assert E.ANSWER in effects
        assert event in {In.WANT_CLEARED, In.PROBE_CLEAR}
    if event is In.WANT_UNCLEARED or event is In.STILL_REFUSED:
        assert step.state is not S.ANNOUNCING or state is S.ANNOUNCING
    # A refusal ends by its timer, the address leaving, or a node announcing it since.
    if state is S.REFUSED and step.state is S.ANNOUNCING:
        assert event is In.WANT_CLEARED
    if event is In.PROBE_FOREIGN:
        assert step.state is not S.ANNOUNCING or state is S.ANNOUNCING
    if state is S.HANDING_OVER:
        assert step.state in {S.HANDING_OVER, S.WITHDRAWN}
    if event is In.DRAIN:
        assert step.state in {S.HANDING_OVER, S.WITHDRAWN}


def test_a_timer_of_another_state_is_a_caller_bug() -> None:
    with pytest.raises(announcer.IllegalTransition, match="RETRY_DUE in Announcing"):
        announcer.transition(S.ANNOUNCING, In.RETRY_DUE)


# --- settling -------------------------------------------------------------------------------


def test_nothing_before_start() -> None:
    core = announcer.Announcer("node-1")
    assert core.plan(0.0, {IP: target()}) == []
    assert core.state(IP) is S.WITHDRAWN
    assert not core.started


def test_settling_holds_new_addresses_until_the_deadline() -> None:
    core = announcer.Announcer("node-1", announcer.Timing(probe=0))
    core.start(10.0)
    assert core.plan(10.0, {IP: target()}) == []
    assert core.state(IP) is S.HELD
    assert core.next_deadline() == 11.0
    assert core.tick(10.99) == []
    actions = core.tick(11.0)
    assert of(actions, announcer.Answer) == [announcer.Answer(IP, ("eth0",), (SVC,), first=True)]
    assert core.state(IP) is S.ANNOUNCING


def test_peers_answering_ends_settling_early() -> None:
    core = announcer.Announcer("node-1", announcer.Timing(probe=0))
    core.start(0.0)
    core.plan(0.0, {IP: target()})
    core.membership(0.2, running=True, peers_heard=False, verified_peers=True, bad_mac=0)
    assert core.state(IP) is S.HELD
    actions = core.membership(0.3, running=True, peers_heard=True, verified_peers=True, bad_mac=0)
    assert of(actions, announcer.Answer)
    assert core.settled(0.3)


def test_settling_facts_recorded_with_a_new_plan_never_act_on_the_old_plan() -> None:
    """Alone at start, the node owns IP in its plan (HELD). Then it hears its peers, and the
    new plan gives IP to a peer: recorded facts plus that plan must not probe IP (the probe
    would make the real owner's simultaneous probe fail), and nothing is left held."""
    core = announcer.Announcer("node-1", TIMING)
    core.start(0.0)
    core.record_membership(0.0, running=True, peers_heard=False, verified_peers=False, bad_mac=0)
    core.plan(0.0, {IP: target()})
    assert core.state(IP) is S.HELD
    core.record_membership(0.1, running=True, peers_heard=True, verified_peers=True, bad_mac=0)
    assert core.state(IP) is S.HELD  # recorded, not acted on
    actions = core.plan(0.1, {}, {IP: "node-2"})
    assert of(actions, announcer.Probe) == []
    assert core.state(IP) is S.WITHDRAWN
    # Acting on the facts at once (membership()) with the old plan would have probed.
    other = announcer.Announcer("node-1", TIMING)
    other.start(0.0)
    other.plan(0.0, {IP: target()})
    acted = other.membership(0.1, running=True, peers_heard=True, verified_peers=True, bad_mac=0)
    assert of(acted, announcer.Probe)


def test_carrier_back_holds_new_addresses_but_keeps_announced_ones() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(1.0, {IP: target()})
    actions = core.carrier(2.0, up=True)
    assert of(actions, announcer.Stop) == []
    actions = core.plan(2.1, {IP: target(), IP2: target()})
    assert core.state(IP) is S.ANNOUNCING
    assert core.state(IP2) is S.HELD
    assert of(actions, announcer.Stop) == []
    core.tick(3.0)
    assert core.state(IP2) is S.ANNOUNCING


# --- probing --------------------------------------------------------------------------------


def test_a_new_address_is_probed_then_announced_with_gratuitous_repeats() -> None:
    core = started()
    actions = core.plan(1.0, {IP: target("eth1", "eth0")})
    assert actions == [announcer.Probe(IP, "eth1", 0.5)]
    assert core.state(IP) is S.PROBING
    assert core.next_deadline() is None  # the probe's end is the shell's business
    actions = core.probed(1.5, IP, None)
    assert actions == [
        announcer.Answer(IP, ("eth1", "eth0"), (SVC,), first=True),
        announcer.Gratuitous(IP, ("eth1", "eth0")),
    ]
    sent = [1.5]
    while (due := core.next_deadline()) is not None:
        if of(core.tick(due), announcer.Gratuitous):
            sent.append(due)
    assert sent == pytest.approx([1.5, 2.6, 3.7, 4.8, 5.9])
    # Cleared for good: a re-plan does not probe again.
    assert core.plan(9.0, {IP: target("eth1", "eth0")}) == []


def test_refresh_repeats_gratuitous_forever() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(0.0, {IP: target(refresh=60.0)})
    for _ in range(5):
        core.tick(core.next_deadline() or 0.0)
    due = core.next_deadline()
    assert due is not None
    assert of(core.tick(due), announcer.Gratuitous)
    assert core.next_deadline() == pytest.approx(due + 60.0)


def test_an_address_in_use_is_refused_warned_and_probed_again_later() -> None:
    core = started()
    core.plan(1.0, {IP: target()})
    actions = core.probed(1.5, IP, "02:00:5e:00:00:99")
    assert core.state(IP) is S.REFUSED
    (warn,) = of(actions, announcer.Warn)
    assert isinstance(warn, announcer.Warn)
    assert warn.reason == "AddressInUse"
    assert "02:00:5e:00:00:99" in warn.note
    assert warn.services == (SVC,)
    assert of(actions, announcer.Answer) == []
    # Plans do not end the refusal.
    assert core.plan(3.0, {IP: target()}) == []
    assert core.next_deadline() == 31.5
    assert core.tick(31.4) == []
    actions = core.tick(31.5)
    assert actions == [announcer.Probe(IP, "eth0", 0.5)]


def test_a_refused_address_that_leaves_and_returns_still_waits() -> None:
    core = started()
    core.plan(1.0, {IP: target()})
    core.probed(1.5, IP, "02:00:5e:00:00:99")
    core.plan(2.0, {}, {IP: "node-2"})
    assert core.state(IP) is S.WITHDRAWN
    actions = core.plan(3.0, {IP: target()}, {})
    assert actions == []
    assert core.state(IP) is S.REFUSED
    assert core.next_deadline() == 31.5


def test_a_node_announcing_it_since_ends_a_refusal() -> None:
    """What answered the probe was another node taking the address over meanwhile (a rolling
    restart): once a node recorded announcing it, the refusal was a mistake."""
    core = started()
    core.plan(1.0, {IP: target()})
    core.probed(1.5, IP, "02:00:5e:00:00:99")
    actions = core.plan(2.0, {IP: target(known=True)})
    assert of(actions, announcer.Answer) == [announcer.Answer(IP, ("eth0",), (SVC,), True)]


def test_a_probe_answered_by_another_node_of_the_cluster_is_a_takeover() -> None:
    """During a migration the load balancer ironlb replaces still answers from its node, and
    its status objects may be gone or not yet seen: an answer from a cluster node's MAC means
    that node announced the address before, so this node takes it over at once (with its
    gratuitous repeats) instead of refusing it for `retry_in_use`."""
    core = started()
    core.plan(1.0, {IP: target()})
    actions = core.probed(1.5, IP, "02:00:5e:00:00:02", member="node-2")
    assert of(actions, announcer.Warn) == []
    assert of(actions, announcer.Answer) == [
        announcer.Answer(IP, ("eth0",), (SVC,), True, "node-2")
    ]
    assert of(actions, announcer.Gratuitous) == [announcer.Gratuitous(IP, ("eth0",))]
    assert core.state(IP) is S.ANNOUNCING
    # The same MAC unknown to the shell is a stranger: refused.
    other = started()
    other.plan(1.0, {IP: target()})
    other.probed(1.5, IP, "02:00:5e:00:00:02")
    assert other.state(IP) is S.REFUSED


def test_a_member_answer_after_the_address_left_is_remembered_not_acted_on() -> None:
    core = started()
    core.plan(1.0, {IP: target()})
    core.plan(1.2, {}, {IP: "node-3"})
    assert core.probed(1.5, IP, "02:00:5e:00:00:02", member="node-2") == []
    assert core.state(IP) is S.WITHDRAWN


def test_a_failed_probe_is_retried_soon() -> None:
    core = started()
    core.plan(1.0, {IP: target()})
    actions = core.probed(1.1, IP, None, failed="no such device")
    assert core.state(IP) is S.REFUSED
    assert "no such device" in of(actions, announcer.Warn)[0].note  # type: ignore[attr-defined]
    assert core.tick(2.1) == [announcer.Probe(IP, "eth0", 0.5)]


def test_known_needs_no_probe_and_a_takeover_names_the_previous_owner() -> None:
    core = started()
    assert of(core.plan(1.0, {IP: target(known=True)}), announcer.Answer)
    core.plan(2.0, {}, {IP2: "node-2"})
    actions = core.plan(3.0, {IP2: target(known=True)}, {})
    (answer,) = of(actions, announcer.Answer)
    assert answer == announcer.Answer(IP2, ("eth0",), (SVC,), True, "node-2")


def test_owned_elsewhere_in_a_plan_is_not_announced_before() -> None:
    """Another node's probe may have been refused: only `known` says it was announced."""
    core = started()
    core.plan(1.0, {}, {IP: "node-2"})
    assert core.plan(2.0, {IP: target()}, {}) == [announcer.Probe(IP, "eth0", 0.5)]


def test_probing_disabled_announces_at_once() -> None:
    core = started(announcer.Timing(probe=0))
    assert of(core.plan(1.0, {IP6: target()}), announcer.Answer)


def test_settling_again_lets_a_probe_finish_and_remembers_its_result() -> None:
    """Membership starting re-settles the node while its first probe runs: the probe goes on,
    and the address is announced when settling ends, without every node probing at once then
    (they would take each other's probes for a conflict)."""
    core = started()
    assert core.plan(1.0, {IP: target()}) == [announcer.Probe(IP, "eth0", 0.5)]
    core.start(1.1)
    assert core.state(IP) is S.PROBING
    assert core.probed(1.5, IP, None) == []
    assert core.state(IP) is S.HELD
    actions = core.tick(2.1)
    assert of(actions, announcer.Probe) == []
    assert of(actions, announcer.Answer) == [announcer.Answer(IP, ("eth0",), (SVC,), True)]


def test_a_late_probe_result_for_an_abandoned_address_is_ignored() -> None:
    core = started()
    core.plan(1.0, {IP: target()})
    core.plan(1.2, {}, {IP: "node-2"})
    assert core.state(IP) is S.WITHDRAWN
    assert core.probed(1.5, IP, None) == []
    assert core.probed(1.5, IP, "02:00:5e:00:00:99") == []
    assert core.state(IP) is S.WITHDRAWN


# --- announcing -----------------------------------------------------------------------------


def test_losing_the_address_or_every_interface_stops_at_once() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(1.0, {IP: target(), IP2: target()})
    actions = core.plan(2.0, {IP2: announcer.Target((), (SVC,), why_none="eth0: no carrier")})
    stops = of(actions, announcer.Stop)
    assert {s.address for s in stops} == {IP, IP2}  # type: ignore[attr-defined]
    reasons = {s.address: s.reason for s in stops}  # type: ignore[attr-defined]
    assert "no carrier" in reasons[IP2]
    assert core.answering() == {}
    assert core.next_deadline() is None  # no gratuitous for a withdrawn address


def test_an_interface_change_answers_there_and_announces_on_the_new_one() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(1.0, {IP: target("eth0")})
    for _ in range(5):
        core.tick(core.next_deadline() or 0.0)
    assert core.next_deadline() is None
    actions = core.plan(10.0, {IP: target("eth0", "eth1")})
    assert actions == [
        announcer.Answer(IP, ("eth0", "eth1"), (SVC,), first=False),
        announcer.Gratuitous(IP, ("eth0", "eth1")),
    ]
    actions = core.plan(11.0, {IP: target("eth1")})
    assert actions == [announcer.Answer(IP, ("eth1",), (SVC,), first=False)]


def test_conflicts_are_warned_a_few_times_then_one_a_minute() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(0.0, {IP: target()})
    results = [core.claimed(1.0 + i / 100, IP, "02:00:5e:00:00:99") for i in range(10)]
    warned = [r for r in results if of(r, announcer.Warn)]
    assert len(warned) == 3
    assert sum(len(of(r, announcer.Suppressed)) for r in results) == 7
    assert core.state(IP) is S.ANNOUNCING
    (warn,) = of(core.claimed(62.0, IP, "02:00:5e:00:00:99"), announcer.Warn)
    assert "(7 more claims since the last report)" in warn.note  # type: ignore[attr-defined]


def test_a_wrong_key_isolates_the_node_until_the_evidence_is_old() -> None:
    core = announcer.Announcer("node-1", announcer.Timing(probe=0))
    core.start(0.0)
    core.membership(0.0, running=True, peers_heard=True, verified_peers=True, bad_mac=0)
    core.plan(0.0, {IP: target()})
    assert core.state(IP) is S.ANNOUNCING
    # Verified peers: failed packets alone (a stranger) isolate nothing.
    assert (
        of(
            core.membership(1.0, running=True, peers_heard=True, verified_peers=True, bad_mac=5),
            announcer.Isolated,
        )
        == []
    )
    actions = core.membership(2.0, running=True, peers_heard=True, verified_peers=False, bad_mac=9)
    assert announcer.Isolated(True) in actions
    assert of(actions, announcer.Stop)
    assert core.plan(3.0, {IP: target()}) == []
    assert core.state(IP) is S.WITHDRAWN
    assert core.next_deadline() == 7.0
    assert core.tick(6.9) == []
    actions = core.tick(7.0)
    assert announcer.Isolated(False) in actions
    assert of(actions, announcer.Answer)


def test_failing_to_answer_stops_and_tries_again() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(0.0, {IP: target()})
    actions = core.failed(1.0, IP, "eth0: no such device")
    assert of(actions, announcer.Stop)
    assert core.state(IP) is S.REFUSED
    assert of(core.tick(2.0), announcer.Answer)


# --- handover -------------------------------------------------------------------------------


def test_drain_hands_each_address_over_when_claimed_else_at_the_timeout() -> None:
    core = started(announcer.Timing(probe=0))
    core.plan(0.0, {IP: target(), IP2: target()})
    actions = core.drain(1.0)
    assert actions == []  # still answering, no more gratuitous
    assert core.handing_over()
    assert core.next_deadline() == 3.0
    assert core.plan(1.5, {}, {IP: "node-2", IP2: "node-2"}) == []
    assert core.answering() == {IP: ("eth0",), IP2: ("eth0",)}
    actions = core.claimed(1.6, IP, "02:00:5e:00:00:02")
    assert [type(a) for a in actions] == [announcer.Stop]
    assert core.tick(2.9) == []
    (stop,) = core.tick(3.0)
    assert isinstance(stop, announcer.Stop)
    assert stop.address == IP2
    assert "within 2.0 s" in stop.reason
    assert not core.handing_over()


def test_drain_takes_nothing_new() -> None:
    core = started()
    core.plan(0.0, {IP: target()})
    core.drain(0.1)
    assert core.state(IP) is S.WITHDRAWN
    assert core.probed(0.5, IP, None) == []
    assert core.plan(1.0, {IP2: target(known=True)}) == []


# --- properties -----------------------------------------------------------------------------

POOL = [IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"), IPv6Address("2001:db8::1")]
IFACES = st.lists(st.sampled_from(["eth0", "eth1"]), unique=True).map(lambda x: tuple(sorted(x)))
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("plan"),
            st.dictionaries(st.sampled_from(POOL), st.tuples(IFACES, st.booleans())),
            st.dictionaries(st.sampled_from(POOL), st.sampled_from(["node-2", None])),
        ),
        st.tuples(
            st.just("probed"), st.sampled_from(POOL), st.sampled_from([None, "stranger", "node-2"])
        ),
        st.tuples(st.just("claimed"), st.sampled_from(POOL)),
        st.tuples(st.just("failed"), st.sampled_from(POOL)),
        st.tuples(st.just("wait"), st.floats(0.0, 40.0)),
        st.tuples(st.just("deadline")),
        st.tuples(st.just("membership"), st.booleans(), st.booleans(), st.booleans()),
        st.tuples(st.just("carrier")),
        st.tuples(st.just("drain")),
    ),
    max_size=40,
)


def _plan_step(
    step: tuple[object, ...],
) -> tuple[dict[addresses.IP, announcer.Target], dict[addresses.IP, str | None]]:
    """A random "plan" step's targets of this node and owners of the other addresses."""
    mine = {
        ip: announcer.Target(ifaces, (SVC,), known=known)  # type: ignore[arg-type]
        for ip, (ifaces, known) in step[1].items()  # type: ignore[attr-defined]
    }
    others = {ip: o for ip, o in step[2].items() if ip not in mine}  # type: ignore[attr-defined]
    return mine, others


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(STEPS)
def test_properties_over_random_inputs(steps: list[tuple[object, ...]]) -> None:
    """Never announce an address a probe refused (until its retry); a handover never stops an
    address nobody claimed before the timeout; no gratuitous for an address not answered."""
    core = announcer.Announcer("node-1", TIMING)
    now = 0.0
    bad_mac = 0
    answering: dict[addresses.IP, tuple[str, ...]] = {}
    refused_at: dict[addresses.IP, float] = {}
    known_at: dict[addresses.IP, float] = {}
    """When a plan last said some node announced the address."""
    claimed_at: dict[addresses.IP, float] = {}
    probing: set[addresses.IP] = set()
    drained_at: float | None = None
    core.start(now)

    def check(actions: list[announcer.Action]) -> None:
        for a in actions:
            if isinstance(a, announcer.Answer):
                if a.first:
                    assert a.address not in answering
                    since = refused_at.get(a.address)
                    later = known_at.get(a.address, float("-inf"))
                    assert since is None or now >= since + TIMING.retry_in_use or later >= since
                    assert drained_at is None
                answering[a.address] = a.interfaces
                assert a.interfaces
            elif isinstance(a, announcer.Stop):
                assert a.address in answering
                del answering[a.address]
                if drained_at is not None:
                    claimed = claimed_at.get(a.address, float("-inf")) >= drained_at
                    assert claimed or now >= drained_at + TIMING.handover_timeout
            elif isinstance(a, announcer.Gratuitous):
                assert answering.get(a.address) == a.interfaces
                assert drained_at is None
            elif isinstance(a, announcer.Probe):
                probing.add(a.address)
                assert a.address not in answering
        assert core.answering() == answering

    for step in steps:
        kind = step[0]
        if kind == "plan":
            mine, others = _plan_step(step)
            known_at.update({ip: now for ip, t in mine.items() if t.known})
            check(core.plan(now, mine, others))
        elif kind == "probed":
            ip, who = step[1], step[2]
            assert isinstance(ip, IPv4Address | IPv6Address)
            if ip in probing:
                probing.discard(ip)
                was_probing = core.state(ip) is S.PROBING
                member = who if who not in (None, "stranger") else None
                if member is not None:
                    known_at[ip] = now  # a node of the cluster answered: it announced it
                mac = "02:00:5e:00:00:99" if who is not None else None
                check(core.probed(now, ip, mac, member=member))
                if who == "stranger" and was_probing:
                    refused_at[ip] = now
        elif kind == "claimed":
            ip = step[1]
            assert isinstance(ip, IPv4Address | IPv6Address)
            if ip in answering:
                claimed_at[ip] = now
                check(core.claimed(now, ip, "02:00:5e:00:00:02"))
        elif kind == "failed" and drained_at is None:
            ip = step[1]
            assert isinstance(ip, IPv4Address | IPv6Address)
            check(core.failed(now, ip, "gone"))
        elif kind == "wait":
            assert isinstance(step[1], float)
            now += step[1]
            check(core.tick(now))
        elif kind == "deadline":
            due = core.next_deadline()
            if due is not None and due != float("inf"):
                now = max(now, due)
                check(core.tick(now))
        elif kind == "membership":
            running, heard, verified = step[1:]
            bad_mac += 1
            check(
                core.membership(
                    now,
                    running=bool(running),
                    peers_heard=bool(heard),
                    verified_peers=bool(verified),
                    bad_mac=bad_mac,
                )
            )
        elif kind == "carrier":
            check(core.carrier(now, up=True))
        elif kind == "drain" and drained_at is None:
            drained_at = now
            check(core.drain(now))
        # A deadline is never in the past after an input was handled.
        due = core.next_deadline()
        assert due is None or due > now


def _placed(target: announcer.Target | None) -> tuple[str, ...] | None:
    return target.interfaces if target is not None else None


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(STEPS)
def test_an_incremental_plan_does_what_a_full_one_does(steps: list[tuple[object, ...]]) -> None:
    """A core given only what changed (and its pending addresses, as the speaker gives it)
    acts exactly as one given the whole plan every time: the same actions, states, deadlines."""
    full = announcer.Announcer("node-1", TIMING)
    part = announcer.Announcer("node-1", TIMING)
    now = 0.0
    bad_mac = 0
    last_mine: dict[addresses.IP, announcer.Target] = {}
    last_others: dict[addresses.IP, str | None] = {}

    def same(a: list[announcer.Action], b: list[announcer.Action]) -> None:
        assert sorted(map(repr, a)) == sorted(map(repr, b))
        assert full.states() == part.states()
        assert full.next_deadline() == part.next_deadline()
        assert full.handing_over() == part.handing_over()

    same(full.start(now), part.start(now))
    for step in steps:
        kind = step[0]
        if kind == "plan":
            mine, others = _plan_step(step)
            # As the speaker: what the plan changed (owner, interfaces), not what it knows of
            # an address (`known`), which may change for any pending one.
            changed = {
                ip
                for ip in {*mine, *others, *last_mine, *last_others}
                if _placed(mine.get(ip)) != _placed(last_mine.get(ip))
                or (ip in others) != (ip in last_others)
                or others.get(ip) != last_others.get(ip)
            } | part.pending()
            last_mine, last_others = mine, others
            some_mine = {ip: t for ip, t in mine.items() if ip in changed}
            some_others = {ip: o for ip, o in others.items() if ip in changed}
            same(full.plan(now, mine, others), part.plan(now, some_mine, some_others, changed))
        elif kind == "probed":
            ip, who = step[1], step[2]
            assert isinstance(ip, IPv4Address | IPv6Address)
            if full.state(ip) is S.PROBING:
                mac = "02:00:5e:00:00:99" if who is not None else None
                member = who if who not in (None, "stranger") else None
                same(
                    full.probed(now, ip, mac, member=member),  # type: ignore[arg-type]
                    part.probed(now, ip, mac, member=member),  # type: ignore[arg-type]
                )
        elif kind == "claimed":
            ip = step[1]
            assert isinstance(ip, IPv4Address | IPv6Address)
            mac = "02:00:5e:00:00:02"
            same(full.claimed(now, ip, mac), part.claimed(now, ip, mac))
        elif kind == "failed":
            ip = step[1]
            assert isinstance(ip, IPv4Address | IPv6Address)
            same(full.failed(now, ip, "gone"), part.failed(now, ip, "gone"))
        elif kind in ("wait", "deadline"):
            if kind == "wait":
                assert isinstance(step[1], float)
                now += step[1]
            else:
                due = full.next_deadline()
                now = max(now, due) if due is not None else now
            same(full.tick(now), part.tick(now))
        elif kind == "membership":
            running, heard, verified = (bool(x) for x in step[1:])
            bad_mac += 1
            facts = {"running": running, "peers_heard": heard, "verified_peers": verified}
            same(
                full.membership(now, bad_mac=bad_mac, **facts),
                part.membership(now, bad_mac=bad_mac, **facts),
            )
        elif kind == "carrier":
            same(full.carrier(now, up=True), part.carrier(now, up=True))
        elif kind == "drain":
            same(full.drain(now), part.drain(now))


def test_an_incremental_plan_takes_the_fresh_target_of_a_held_address() -> None:
    """While settling, a held address learns that another node announced it before (`known`):
    an incremental plan that passes it as pending makes the core take it over without a probe
    once settled, as a full plan would."""
    core = announcer.Announcer("node-1", TIMING)
    core.start(0.0)
    ip = IPv4Address("198.18.0.240")
    core.plan(0.1, {ip: target()}, {})
    assert core.state(ip) is S.HELD
    assert core.pending() == {ip}
    core.plan(0.2, {ip: target(known=True)}, {}, changed=core.pending())
    actions = core.tick(TIMING.settle + 0.1)
    assert not of(actions, announcer.Probe)
    assert core.state(ip) is S.ANNOUNCING
