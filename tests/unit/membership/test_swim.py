"""Membership cores wired together by an in-memory network with virtual time."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import election
from ironlb.membership import model, settings, states, swim, wire

KEY = b"cluster-key-0123456789abcdef"
LATENCY = 0.0005
PORT = 7946
DEFAULTS = settings.Settings()
PLAIN = settings.Settings(lifeguard=False)

ALIVE = states.MemberState.ALIVE
SUSPECT = states.MemberState.SUSPECT
DEAD = states.MemberState.DEAD
LEFT = states.MemberState.LEFT


def node(index: int) -> election.NodeName:
    return election.NodeName(f"node-{index}")


def endpoint(index: int) -> model.Endpoint:
    return model.Endpoint(IPv4Address(f"198.18.0.{index}"), PORT)


@dataclass(order=True)
class _InFlight:
    arrival: float
    order: int
    source: election.NodeName = field(compare=False)
    destination: model.Endpoint = field(compare=False)
    payload: bytes = field(compare=False)


Loss = Callable[[election.NodeName, election.NodeName, wire.Packet], bool]


class Network:
    """Delivers datagrams after LATENCY unless a node is down, a link is cut, or `loss` says so."""

    def __init__(
        self,
        size: int,
        seed: int = 1,
        keys: list[bytes] | None = None,
        config: settings.Settings = DEFAULTS,
    ) -> None:
        self.now = 0.0
        self.config = config
        self.cores: dict[election.NodeName, swim.Membership] = {}
        self.names: dict[model.Endpoint, election.NodeName] = {}
        self.down: set[election.NodeName] = set()
        self.cut: set[tuple[election.NodeName, election.NodeName]] = set()
        self.loss: Loss = lambda source, destination, packet: False
        self.jitter = 0.0
        """Mean of an exponentially distributed delay added to LATENCY (a busy machine)."""
        self._delays = random.Random(seed)
        self.delivered: list[tuple[election.NodeName, election.NodeName, bytes]] = []
        self.events: list[tuple[float, election.NodeName, model.Event]] = []
        self._queue: list[_InFlight] = []
        self._order = 0
        self._seed = seed
        for index in range(1, size + 1):
            self.add(node(index), endpoint(index), keys or [KEY])
        for name in self.cores:
            self.seed(name)

    def add(self, name: election.NodeName, address: model.Endpoint, keys: list[bytes]) -> None:
        self.names[address] = name
        self._seed += 1
        self.cores[name] = swim.Membership(
            name,
            address,
            keys,
            random.Random(self._seed),
            self.now,
            first_sequence=int(self.now * 1e9) + 1,
            config=self.config,
        )

    def seed(self, name: election.NodeName) -> None:
        """Give `name` every member of the cluster as peers (as the Kubernetes API would)."""
        peers = {n: address for address, n in self.names.items() if n.startswith("node-")}
        self.send(name, self.cores[name].set_peers(peers, self.now))

    def send(self, source: election.NodeName, datagrams: list[model.Datagram]) -> None:
        for datagram in datagrams:
            self._order += 1
            delay = LATENCY + (self._delays.expovariate(1 / self.jitter) if self.jitter else 0)
            flight = _InFlight(
                self.now + delay, self._order, source, datagram.endpoint, datagram.payload
            )
            heapq.heappush(self._queue, flight)

    def run_until(self, end: float) -> None:
        while True:
            deadlines = {
                name: deadline
                for name, core in self.cores.items()
                if name not in self.down and (deadline := core.next_deadline()) is not None
            }
            arrival = self._queue[0].arrival if self._queue else float("inf")
            # A node back from `down` is late for its deadlines: it runs now, as a resumed
            # process would.
            step = max(self.now, min([arrival, *deadlines.values()]))
            if step > end:
                self.now = end
                return
            self.now = step
            if arrival == step:
                self._deliver(heapq.heappop(self._queue))
            else:
                for name, deadline in deadlines.items():
                    if deadline <= step:
                        self.send(name, self.cores[name].tick(step))
            self._collect_events()

    def _deliver(self, flight: _InFlight) -> None:
        destination = self.names.get(flight.destination)
        if destination is None or {flight.source, destination} & self.down:
            return
        if (flight.source, destination) in self.cut:
            return
        try:
            packet = wire.decode(flight.payload, [KEY])
        except wire.PacketRejected:
            pass  # not ours to inspect: the receiver drops and counts it
        else:
            if self.loss(flight.source, destination, packet):
                return
        self.delivered.append((flight.source, destination, flight.payload))
        source_address = next(a for a, n in self.names.items() if n == flight.source)
        self.send(
            destination,
            self.cores[destination].receive(source_address, flight.payload, self.now),
        )

    def _collect_events(self) -> None:
        for name, core in self.cores.items():
            self.events += [(self.now, name, event) for event in core.drain_events()]

    def view(self, observer: election.NodeName) -> dict[election.NodeName, states.MemberState]:
        return {name: m.state for name, m in self.cores[observer].members.items()}

    def events_about(
        self, subject: election.NodeName, kind: type[model.Event]
    ) -> list[tuple[float, election.NodeName]]:
        return [
            (time, observer)
            for time, observer, event in self.events
            if isinstance(event, kind) and event.member.name == subject
        ]

    def cut_both_ways(self, a: election.NodeName, b: election.NodeName) -> None:
        self.cut |= {(a, b), (b, a)}


def _converged(size: int, config: settings.Settings = DEFAULTS) -> Network:
    network = Network(size, config=config)
    network.run_until(1.0)
    return network


def test_cluster_converges_to_all_alive_within_a_round_trip() -> None:
    network = Network(5)
    network.run_until(2 * LATENCY)
    for name in network.cores:
        assert set(network.view(name).values()) == {ALIVE}
        assert len(network.view(name)) == 5
    network.run_until(3.0)
    assert not network.events_about(node(3), model.MemberSuspect)
    assert len(network.events_about(node(3), model.MemberUp)) == 4


@pytest.mark.parametrize("config", [DEFAULTS, PLAIN], ids=["lifeguard", "plain"])
@pytest.mark.parametrize("size", [2, 3, 5, 8])
@pytest.mark.parametrize("phase", [0.0, 0.0007, 0.037, 0.061, 0.0999])
def test_dead_node_is_declared_dead_everywhere_within_the_bound(
    size: int, phase: float, config: settings.Settings
) -> None:
    network = _converged(size, config)
    victim = node(size)
    killed_at = 1.0 + phase
    network.run_until(killed_at)
    network.down.add(victim)
    bound = config.detection_bound(size) + LATENCY
    network.run_until(killed_at + bound)
    declared = network.events_about(victim, model.MemberDown)
    assert sorted(observer for _, observer in declared) == [node(i) for i in range(1, size)]
    assert all(killed_at + config.suspicion_timeout < t <= killed_at + bound for t, _ in declared)
    for observer in network.cores.keys() - {victim}:
        assert network.view(observer)[victim] is DEAD
        others = {n: s for n, s in network.view(observer).items() if n != victim}
        assert set(others.values()) == {ALIVE}


@pytest.mark.parametrize("lost", [wire.Ping, wire.Ack])
@pytest.mark.parametrize("nth", range(6))
def test_one_lost_packet_raises_no_suspicion(lost: type[wire.Message], nth: int) -> None:
    network = _converged(3)
    remaining = [nth]

    def lose_one(
        source: election.NodeName, destination: election.NodeName, packet: wire.Packet
    ) -> bool:
        if type(packet.message) is not lost or remaining[0] < 0:
            return False
        remaining[0] -= 1
        return remaining[0] < 0

    network.loss = lose_one
    network.run_until(3.0)
    assert remaining[0] < 0
    assert not [e for _, _, e in network.events if isinstance(e, model.MemberSuspect)]
    assert not [e for _, _, e in network.events if isinstance(e, model.MemberDown)]


@pytest.mark.parametrize("config", [DEFAULTS, PLAIN], ids=["lifeguard", "plain"])
@pytest.mark.parametrize("size", [3, 5])
def test_ten_percent_random_loss_kills_no_one(size: int, config: settings.Settings) -> None:
    network = _converged(size, config)
    rng = random.Random(size)
    network.loss = lambda source, destination, packet: rng.random() < 0.1
    network.run_until(21.0)
    if not config.lifeguard:  # with Lifeguard's retried probes, suspicions are rare
        assert [e for _, _, e in network.events if isinstance(e, model.MemberSuspect)]
    assert not [e for _, _, e in network.events if isinstance(e, model.MemberDown)]


def test_a_node_that_cannot_hear_is_declared_dead_and_takes_no_one_down() -> None:
    network = _converged(5)
    deaf = node(1)
    network.cut |= {(node(i), deaf) for i in range(2, 6)}
    network.run_until(5.0)
    # It suspects everyone and spreads that, but each suspect refutes long before the deaf
    # node's own suspicions expire, so its DEAD broadcasts carry stale incarnations.
    downs = [(o, e.member.name) for _, o, e in network.events if isinstance(e, model.MemberDown)]
    assert {name for observer, name in downs if observer != deaf} == {deaf}
    for observer in (node(2), node(3), node(4), node(5)):
        others = {n: s for n, s in network.view(observer).items() if n != deaf}
        assert set(others.values()) == {ALIVE}


def test_in_a_two_node_cluster_one_lost_ack_is_refuted_not_fatal() -> None:
    network = _converged(2, PLAIN)  # Lifeguard's retried PING would hide the loss
    lost: list[wire.Packet] = []

    def lose_first_ack(
        source: election.NodeName, destination: election.NodeName, packet: wire.Packet
    ) -> bool:
        if lost or not isinstance(packet.message, wire.Ack):
            return False
        lost.append(packet)
        return True

    network.loss = lose_first_ack
    network.run_until(3.0)
    suspected = network.events_about(node(1), model.MemberSuspect)
    suspected += network.events_about(node(2), model.MemberSuspect)
    assert len(suspected) == 1  # no helper to relay: the lost ACK starts a suspicion...
    assert not [e for _, _, e in network.events if isinstance(e, model.MemberDown)]
    refuted = network.cores[lost[0].sender].members[lost[0].sender]
    assert refuted.incarnation == 1  # ...which the suspect refuted
    assert set(network.view(node(1)).values()) == set(network.view(node(2)).values()) == {ALIVE}


def test_indirect_probes_keep_a_member_alive_when_a_direct_link_is_broken() -> None:
    network = _converged(3)
    network.cut_both_ways(node(1), node(3))
    network.run_until(4.0)
    assert not [e for _, _, e in network.events if isinstance(e, model.MemberSuspect)]
    relays = [p for s, d, p in network.delivered if s == node(2) and d in (node(1), node(3))]
    kinds = {type(wire.decode(p, [KEY]).message) for p in relays}
    assert wire.Ack in kinds
    assert network.view(node(1))[node(3)] is ALIVE
    assert network.view(node(3))[node(1)] is ALIVE


def test_a_suspected_live_member_refutes() -> None:
    network = _converged(4)
    victim = node(4)
    network.run_until(1.005)
    network.down.add(victim)  # silent long enough to be suspected, not to be declared dead
    network.run_until(1.25)
    network.down.discard(victim)
    network.run_until(3.0)
    assert network.events_about(victim, model.MemberSuspect)
    assert not network.events_about(victim, model.MemberDown)
    assert network.cores[victim].members[victim].incarnation >= 1
    for observer in (node(1), node(2), node(3)):
        member = network.cores[observer].members[victim]
        assert member.state is ALIVE
        assert member.incarnation == network.cores[victim].members[victim].incarnation


def test_leave_marks_the_member_left_everywhere_at_once() -> None:
    network = _converged(4)
    leaving = node(2)
    network.send(leaving, network.cores[leaving].leave())
    assert network.cores[leaving].next_deadline() is None
    assert network.cores[leaving].tick(1.5) == []
    network.run_until(1.0 + LATENCY)
    assert sorted(o for _, o in network.events_about(leaving, model.MemberLeft)) == [
        node(1),
        node(3),
        node(4),
    ]
    network.run_until(3.0)
    assert not network.events_about(leaving, model.MemberSuspect)
    assert not network.events_about(leaving, model.MemberDown)
    assert all(network.view(o)[leaving] is LEFT for o in (node(1), node(3), node(4)))


def test_a_restarted_node_refutes_its_death_and_comes_back() -> None:
    network = _converged(3)
    victim = node(3)
    network.down.add(victim)
    network.run_until(2.0)
    assert network.view(node(1))[victim] is DEAD
    network.down.discard(victim)
    network.add(victim, endpoint(3), [KEY])  # new process: incarnation 0, fresh sequence
    network.seed(victim)
    network.run_until(2.5)
    assert network.events_about(victim, model.MemberUp)[-1][0] > 2.0
    assert network.view(node(1))[victim] is ALIVE
    assert network.view(node(2))[victim] is ALIVE
    assert set(network.view(victim).values()) == {ALIVE}


def test_mark_left_is_immediate_and_a_running_node_refutes_it() -> None:
    network = _converged(3)
    network.cores[node(1)].mark_left(node(3), network.now)
    assert network.view(node(1))[node(3)] is LEFT
    network.run_until(1.001)
    assert network.events_about(node(3), model.MemberLeft)
    network.run_until(2.0)
    assert network.view(node(1))[node(3)] is ALIVE
    assert network.cores[node(1)].members[node(3)].incarnation >= 1


def test_meta_is_gossiped() -> None:
    network = _converged(3)
    network.cores[node(1)].set_meta(b"draining")
    network.run_until(1.5)
    updated = network.events_about(node(1), model.MemberUpdated)
    assert sorted(o for _, o in updated) == [node(2), node(3)]
    assert network.cores[node(2)].members[node(1)].meta == b"draining"
    with pytest.raises(ValueError, match="meta"):
        network.cores[node(1)].set_meta(bytes(65))


def test_a_stranger_without_the_key_is_dropped_and_never_a_member() -> None:
    network = _converged(3)
    stranger = election.NodeName("stranger")
    network.add(stranger, model.Endpoint(IPv4Address("198.18.0.66"), PORT), [b"w" * 32])
    network.seed(stranger)
    network.run_until(2.0)
    for name in (node(1), node(2), node(3)):
        assert network.cores[name].dropped[wire.DropReason.BAD_MAC] > 0
        assert stranger not in network.cores[name].members
    assert not [e for _, _, e in network.events if e.member.name == stranger]


def test_a_speaker_outside_the_seed_list_is_answered_but_never_added() -> None:
    network = _converged(3)
    outsider = election.NodeName("outsider")
    network.add(outsider, model.Endpoint(IPv4Address("198.18.0.77"), PORT), [KEY])
    network.seed(outsider)
    network.run_until(2.0)
    assert set(network.view(outsider).values()) == {ALIVE}  # it hears ACKs from everyone
    for name in (node(1), node(2), node(3)):
        assert outsider not in network.cores[name].members


def test_replayed_packets_are_dropped_and_cannot_resurrect_the_dead() -> None:
    network = _converged(3)
    victim = node(3)
    captured = [p for s, d, p in network.delivered if s == victim and d == node(1)][-20:]
    network.send(victim, [model.Datagram(endpoint(1), captured[-1])])
    network.run_until(1.001)
    assert network.cores[node(1)].dropped[wire.DropReason.REPLAYED] == 1
    network.down.add(victim)
    network.run_until(2.0)
    assert network.view(node(1))[victim] is DEAD
    for payload in captured:  # an attacker plays back what the victim said when it was alive
        network.send(node(1), network.cores[node(1)].receive(endpoint(3), payload, network.now))
    network.run_until(2.5)
    assert network.cores[node(1)].dropped[wire.DropReason.REPLAYED] == 1 + len(captured)
    assert network.view(node(1))[victim] is DEAD
    assert network.view(node(2))[victim] is DEAD


def test_key_rotation_accepts_old_and_new_and_signs_with_the_first() -> None:
    new = b"new-cluster-key-0123456789abcdef"
    network = _converged(3)
    network.cores[node(1)].set_keys([new, KEY])
    network.run_until(1.5)
    assert network.cores[node(2)].dropped[wire.DropReason.BAD_MAC] > 0  # node-2 lacks the new key
    network.cores[node(2)].set_keys([KEY, new])
    network.cores[node(3)].set_keys([KEY, new])
    before = [network.cores[n].dropped[wire.DropReason.BAD_MAC] for n in (node(2), node(3))]
    network.run_until(2.5)
    after = [network.cores[n].dropped[wire.DropReason.BAD_MAC] for n in (node(2), node(3))]
    assert before == after
    with pytest.raises(ValueError, match="key"):
        network.cores[node(1)].set_keys([b"short"])


def test_set_peers_forgets_and_adds_without_events() -> None:
    network = _converged(3)
    core = network.cores[node(1)]
    network.send(node(1), core.set_peers({node(2): endpoint(2)}, network.now))
    assert node(3) not in core.members
    assert not core.drain_events()
    datagrams = core.set_peers({node(2): endpoint(2), node(3): endpoint(3)}, network.now)
    assert core.members[node(3)].state is states.MemberState.UNCONFIRMED
    assert [d.endpoint for d in datagrams] == [endpoint(3)]  # pinged at once...
    network.send(node(1), datagrams)
    network.run_until(network.now + 2 * LATENCY)
    assert core.members[node(3)].state is ALIVE  # ...and confirmed by its ACK


def test_a_ping_for_another_node_is_not_answered() -> None:
    network = _converged(2)
    core = network.cores[node(1)]
    ping = wire.Packet(node(2), node(1), 2**62, wire.Ping(9, election.NodeName("someone-else")))
    assert core.receive(endpoint(2), wire.encode(ping, KEY), network.now) == []
    assert core.dropped[wire.DropReason.WRONG_TARGET] == 1


def test_packets_captured_on_their_way_to_another_member_are_dropped() -> None:
    network = _converged(3)
    core = network.cores[node(1)]
    # Fresh packets of node-3 to node-2: within node-1's replay window for node-3, unseen by it.
    captured = [p for s, d, p in network.delivered if s == node(3) and d == node(2)][-6:]
    kinds = {type(wire.decode(p, [KEY]).message) for p in captured}
    assert kinds - {wire.Ping}  # not only PINGs, which name their target anyway
    for payload in captured:
        assert core.receive(endpoint(3), payload, network.now) == []
    assert core.dropped[wire.DropReason.WRONG_RECIPIENT] == len(captured)
    assert core.dropped[wire.DropReason.REPLAYED] == 0
    assert not core.drain_events()


def test_a_legacy_member_is_answered_in_its_version_until_it_upgrades() -> None:
    network = _converged(2)
    core = network.cores[node(1)]
    legacy = wire.Packet(node(2), None, 2**62, wire.Ping(99, node(1)))
    out = core.receive(endpoint(2), wire.encode(legacy, KEY), network.now)
    answer = wire.decode(out[0].payload, [KEY])
    assert isinstance(answer.message, wire.Ack)
    assert answer.recipient is None
    out = core.receive(endpoint(2), _ping_from(2, 2**62 + 1), network.now)
    answer = wire.decode(out[0].payload, [KEY])
    assert isinstance(answer.message, wire.Ack)
    assert answer.recipient == node(2)


def test_own_packets_reflected_back_are_dropped() -> None:
    network = _converged(2)
    own = [p for s, _, p in network.delivered if s == node(1)][-1]
    assert network.cores[node(1)].receive(endpoint(2), own, network.now) == []
    assert network.cores[node(1)].dropped[wire.DropReason.FROM_SELF] == 1


def test_members_include_self_and_events_drain_once() -> None:
    network = Network(2)
    core = network.cores[node(1)]
    assert core.members[node(1)] == model.Member(node(1), endpoint(1), 0, ALIVE)
    network.run_until(0.01)
    assert core.drain_events() == []  # the network collected them already
    assert [type(e) for _, o, e in network.events if o == node(1)] == [model.MemberUp]


@given(st.binary(max_size=400))
def test_receive_never_raises_and_counts_every_drop(data: bytes) -> None:
    core = swim.Membership(node(1), endpoint(1), [KEY], random.Random(0), 0.0, 1)
    assert core.receive(endpoint(2), data, 0.0) == []
    assert sum(core.dropped.values()) == 1


@given(st.data())
def test_mutated_packets_are_dropped_and_counted(data: st.DataObject) -> None:
    network = Network(2)
    network.run_until(0.3)
    payload = bytearray(data.draw(st.sampled_from([p for _, _, p in network.delivered])))
    index = data.draw(st.integers(0, len(payload) - 1))
    payload[index] ^= data.draw(st.integers(1, 255))
    core = network.cores[node(1)]
    before = sum(core.dropped.values())
    core.receive(endpoint(2), bytes(payload), network.now)
    assert sum(core.dropped.values()) == before + 1


# --- Lifeguard -----------------------------------------------------------------------------


def test_thirty_percent_loss_falsely_kills_under_plain_swim_and_not_under_lifeguard() -> None:
    """Two simulated minutes (two runs of one) of 30 % random loss on every packet, three
    members (about 20 s of CPU)."""
    downs: dict[bool, list[model.Event]] = {False: [], True: []}
    for seed in (1, 2):
        for config in (PLAIN, DEFAULTS):
            network = Network(3, seed=seed, config=config)
            network.run_until(1.0)
            network.loss = _random_loss(0.3, seed)
            network.run_until(61.0)
            downs[config.lifeguard] += [
                e for _, _, e in network.events if isinstance(e, model.MemberDown)
            ]
    assert downs[False], "plain SWIM should show the false deaths Lifeguard removes"
    assert downs[True] == []


def test_thirty_percent_loss_and_slow_delivery_rarely_kill_under_lifeguard() -> None:
    """30 % loss and every packet delayed by 30 ms on average (exponentially: a loaded
    machine's scheduling), three members, three runs of five simulated minutes (about 15 s of
    CPU). Each run ends in the same state it began with nearly always: a false death (and a
    move of its addresses) at most once in the quarter hour. Before suspicions refuted since
    stopped confirming and refutations went out twice, five members died."""
    downs = []
    for seed in (1, 2, 3):
        network = Network(3, seed=seed)
        network.run_until(1.0)
        network.loss = _random_loss(0.3, seed)
        network.jitter = 0.03
        network.run_until(301.0)
        downs += [e for _, _, e in network.events if isinstance(e, model.MemberDown)]
    assert len(downs) <= 1, downs


def _random_loss(rate: float, seed: int) -> Loss:
    rng = random.Random(seed)
    return lambda source, destination, packet: rng.random() < rate


def _silent_core(config: settings.Settings = DEFAULTS) -> swim.Membership:
    """node-1, with node-2 and node-3 as peers that never answer."""
    core = swim.Membership(node(1), endpoint(1), [KEY], random.Random(7), 0.0, 1, config=config)
    core.set_peers({node(i): endpoint(i) for i in (1, 2, 3)}, 0.0)
    # Confirmed by a first packet from each (UNCONFIRMED members are never suspected).
    for i in (2, 3):
        update = wire.Update(node(i), ALIVE, 0)
        packet = wire.Packet(node(i), node(1), 1, wire.Gossip(), (update,))
        core.receive(endpoint(i), wire.encode(packet, KEY), 0.0)
    core.drain_events()
    return core


def _run(
    core: swim.Membership, end: float, now: float = 0.0
) -> tuple[float, list[tuple[float, model.Event]]]:
    events = []
    while (deadline := core.next_deadline()) is not None and deadline <= end:
        now = max(now, deadline)
        core.tick(now)
        events += [(now, e) for e in core.drain_events()]
    return now, events


def _first(events: list[tuple[float, model.Event]], kind: type[model.Event], who: int) -> float:
    return next(t for t, e in events if isinstance(e, kind) and e.member.name == node(who))


@pytest.mark.parametrize("config", [DEFAULTS, PLAIN], ids=["lifeguard", "plain"])
def test_an_unconfirmed_suspicion_lasts_the_maximum_and_a_confirmation_shortens_it(
    config: settings.Settings,
) -> None:
    core = _silent_core(config)
    _, events = _run(core, 3.0)
    suspected = _first(events, model.MemberSuspect, 3)
    lasted = _first(events, model.MemberDown, 3) - suspected
    assert lasted == pytest.approx(config.suspicion_after(3, 0), abs=0.01)

    # The same, but node-2 says it suspects node-3 too, right after we did.
    core = _silent_core(config)
    now, events = _run(core, suspected)
    assert any(isinstance(e, model.MemberSuspect) for _, e in events)
    confirm = wire.Update(node(3), SUSPECT, 0)
    packet = wire.Packet(node(2), node(1), 5, wire.Gossip(), (confirm,))
    core.receive(endpoint(2), wire.encode(packet, KEY), now + 0.001)
    _, later = _run(core, 3.0, now + 0.001)
    lasted = _first(events + later, model.MemberDown, 3) - suspected
    assert lasted == pytest.approx(config.suspicion_timeout, abs=0.01)


def _alive_again(core: swim.Membership, index: int, incarnation: int, now: float) -> None:
    """node-`index` tells `core` it refuted a suspicion: ALIVE at `incarnation`."""
    update = wire.Update(node(index), ALIVE, incarnation)
    packet = wire.Packet(node(index), node(1), 2, wire.Gossip(), (update,))
    core.receive(endpoint(index), wire.encode(packet, KEY), now)


def test_a_suspicion_refuted_since_does_not_confirm_ours() -> None:
    """node-2 suspected node-3 at incarnation 0, which node-3 has refuted since; our own
    suspicion of node-3 at incarnation 1 stays unconfirmed: the maximum timeout."""
    core = _silent_core()
    _alive_again(core, 3, 1, 0.0)
    now, events = _run(core, 3.0)
    suspected = _first(events, model.MemberSuspect, 3)
    core = _silent_core()
    _alive_again(core, 3, 1, 0.0)
    now, events = _run(core, suspected)
    old = wire.Update(node(3), SUSPECT, 0)
    packet = wire.Packet(node(2), node(1), 5, wire.Gossip(), (old,))
    core.receive(endpoint(2), wire.encode(packet, KEY), now + 0.001)
    _, later = _run(core, 3.0, now + 0.001)
    lasted = _first(events + later, model.MemberDown, 3) - suspected
    assert lasted == pytest.approx(DEFAULTS.suspicion_after(3, 0), abs=0.01)


def test_a_refuted_suspicion_of_a_live_member_is_checked_but_confirms_nothing_later() -> None:
    """A SUSPECT older than what we know makes us probe at once; when our own probe then
    fails, the sender does not count as a second suspecter (it only missed the refutation)."""
    core = _silent_core()
    _alive_again(core, 3, 1, 0.0)
    for probe_id, probe in list(core._probes.items()):  # answer the probes in flight
        ack = wire.Packet(probe.target, node(1), 3, wire.Ack(probe_id, 1, b""), ())
        core.receive(core.members[probe.target].address, wire.encode(ack, KEY), 0.0)
    old = wire.Update(node(3), SUSPECT, 0)
    packet = wire.Packet(node(2), node(1), 5, wire.Gossip(), (old,))
    out = core.receive(endpoint(2), wire.encode(packet, KEY), 0.001)
    pings = [wire.decode(d.payload, [KEY]) for d in out if d.endpoint == endpoint(3)]
    assert [type(p.message) for p in pings] == [wire.Ping]
    _, events = _run(core, 3.0, 0.001)
    lasted = _first(events, model.MemberDown, 3) - _first(events, model.MemberSuspect, 3)
    assert lasted == pytest.approx(DEFAULTS.suspicion_after(3, 0), abs=0.01)


def test_a_suspicion_heard_is_probed_at_once_and_not_spread_unless_confirmed() -> None:
    core = _silent_core()
    for probe_id, probe in list(core._probes.items()):  # answer the probes in flight
        ack = wire.Packet(probe.target, node(1), 2, wire.Ack(probe_id, 0, b""), ())
        core.receive(core.members[probe.target].address, wire.encode(ack, KEY), 0.0)
    news = wire.Update(node(3), SUSPECT, 0)
    packet = wire.Packet(node(2), node(1), 5, wire.Gossip(), (news,))
    out = core.receive(endpoint(2), wire.encode(packet, KEY), 0.001)
    pings = [wire.decode(d.payload, [KEY]) for d in out if d.endpoint == endpoint(3)]
    assert [type(p.message) for p in pings] == [wire.Ping]  # checked at once
    # Our packets to node-2 do not echo node-2's suspicion back as ours...
    ack = core.receive(endpoint(2), _ping_from(2, 6), 0.002)
    carried = wire.decode(ack[0].payload, [KEY]).updates
    assert not [u for u in carried if u.name == node(3) and u.state is SUSPECT]
    # ...until our own probe of node-3 fails too: then we are an independent suspecter.
    _run(core, 0.2, 0.002)
    ack = core.receive(endpoint(2), _ping_from(2, 7), 0.2)
    carried = wire.decode(ack[0].payload, [KEY]).updates
    assert [u for u in carried if u.name == node(3) and u.state is SUSPECT]


def _ping_from(index: int, sequence: int) -> bytes:
    ping = wire.Ping(99, node(1))
    return wire.encode(wire.Packet(node(index), node(1), sequence, ping, ()), KEY)


def test_a_probe_retries_its_ping_within_the_period() -> None:
    core = _silent_core()
    pings: dict[int, list[float]] = {}
    now = 0.0
    while (deadline := core.next_deadline()) is not None and deadline < 0.1:
        now = deadline
        for datagram in core.tick(now):
            message = wire.decode(datagram.payload, [KEY]).message
            if isinstance(message, wire.Ping):
                pings.setdefault(message.probe_id, []).append(now)
    step = (DEFAULTS.probe_interval - DEFAULTS.probe_timeout) / (DEFAULTS.probe_retries + 1)
    retries = [DEFAULTS.probe_timeout + i * step for i in range(DEFAULTS.probe_retries)]
    started_now = [times for times in pings.values() if times[0] == 0.0]
    assert started_now
    for times in started_now:
        assert times == pytest.approx([0.0, *retries])


def test_local_health_rises_with_missed_acks_slows_probing_and_recovers() -> None:
    core = _silent_core()
    assert core.health == 0
    now, _ = _run(core, 0.35)
    assert 0 < core.health <= DEFAULTS.max_health
    # The next probe's timeouts are stretched by 1 + health.
    scale = 1 + core.health
    before = set(core._probes)
    while set(core._probes) <= before:
        now = max(now, core.next_deadline() or now)
        core.tick(now)
    probe = core._probes[max(set(core._probes) - before)]
    assert probe.ask_helpers_at - now == pytest.approx(DEFAULTS.probe_timeout * scale)
    assert probe.fail_at - now == pytest.approx(DEFAULTS.probe_interval * scale)
    # Every ACK lowers the score again.
    core = _silent_core()
    _run(core, 0.35)
    raised = core.health
    probe_id = max(core._probes)  # the probe still running: answer it
    target = core._probes[probe_id].target
    ack = wire.Packet(target, node(1), 50, wire.Ack(probe_id, 0, b""), ())
    core.receive(core.members[target].address, wire.encode(ack, KEY), 0.36)
    assert core.health == raised - 1
    assert PLAIN.lifeguard is False
    plain = _silent_core(PLAIN)
    _run(plain, 5.0)
    assert plain.health == 0


def test_a_refutation_goes_to_every_member_at_once() -> None:
    core = _silent_core()
    news = wire.Update(node(1), SUSPECT, 0)
    packet = wire.Packet(node(2), node(1), 5, wire.Gossip(), (news,))
    out = core.receive(endpoint(2), wire.encode(packet, KEY), 0.001)
    refuting = [
        d.endpoint
        for d in out
        if any(
            u.name == node(1) and u.state is ALIVE and u.incarnation == 1
            for u in wire.decode(d.payload, [KEY]).updates
        )
    ]
    # ...twice to each: a refutation lost to a lossy link costs a false death.
    assert sorted(refuting) == sorted([endpoint(2), endpoint(3)] * 2)
    assert core.health == 1
