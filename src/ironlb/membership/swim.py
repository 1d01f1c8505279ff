"""Speaker-to-speaker liveness: the SWIM protocol core, with no sockets and no clock.

SWIM (Das, Gupta, Motivala, 2002) with the refinements that buy speed and robustness cheaply:
- Each protocol period starts a probe of the next member of a shuffled round-robin (SWIM), of
  the member's successor on a ring of live members sorted by name (so every live member is
  probed every period and the detection time has a small deterministic bound; ring monitoring
  as in Rapid, Suresh et al. 2018), and of every SUSPECT member.
- A probe is a PING; without an ACK after `probe_timeout`, PING-REQs ask `indirect_probes`
  ALIVE members to ping the target and relay its ACK; without any ACK at the end of the period
  the target becomes SUSPECT.
- A suspect that stays silent for the suspicion timeout is DEAD, and whoever declares it pushes
  that to every member at once. A live suspect refutes by raising its incarnation: messages to a
  member we think SUSPECT, DEAD or LEFT always carry what we think (Lifeguard's "buddy system"),
  so it learns and refutes in the ACK of the very probe.
- State changes are piggy-backed on every packet, fewest-sent first, each at most
  `retransmit_limit(n)` times (SWIM's lambda log n).
- Lifeguard (see `settings`): a probe retries its direct PING; a suspicion lasts longer until
  others confirm it independently (a member spreads a suspicion only when its own probe failed,
  so every sender of a SUSPECT update is an independent suspecter and the wire format stays as it
  was; one that merely heard of it probes the suspect at once, to confirm or to learn the
  refutation; a SUSPECT about an incarnation the suspect has refuted since confirms nothing);
  a refutation goes to every member at once, twice; and a local health score, raised by our
  own failed probes and by refuting suspicions of ourselves, stretches our probe timeouts and
  period.
- A LEAVE (a GOSSIP packet carrying the sender's LEFT update) goes to every member at once and
  marks the sender LEFT wherever it arrives: no suspicion period.

Membership is seeded from outside: `set_peers` takes the speakers the Kubernetes API knows
(and may include this node). New peers start UNCONFIRMED (see `states`) and are pinged at once;
their ACK, or anyone's news that they are alive, confirms them. Peers that disappear from the
seed are forgotten; a stranger is never added, whatever it says.

Every packet is authenticated (see `wire`), names its recipient (a packet for another member is
dropped: it was replayed), and each sender's sequence numbers pass an anti-replay window.
`receive` never raises: a bad packet is dropped and counted in `dropped`. A member whose last
accepted packet was of the legacy wire version (no recipient: a speaker not upgraded yet) is
answered in that version, everyone else in the current one; so a rolling upgrade keeps both
halves hearing each other (a version split would make each half think the other dead and both
announce the same addresses), and once both ends of a pair are upgraded neither sends the other
anything replayable to a third member.

Time comes in through `tick(now)` / `receive(..., now)`, the next time `tick` is due through
`next_deadline()`, randomness through the caller's `random.Random`. Outgoing packets are returned,
events are collected for `drain_events()`. `settings` documents the timings and the bound.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from ironlb.core import election
from ironlb.membership import model, replay, settings, states, wire

_ALIVE = states.MemberState.ALIVE
_SUSPECT = states.MemberState.SUSPECT
_GONE = (states.MemberState.DEAD, states.MemberState.LEFT)
_DOUBTED = (_SUSPECT, *_GONE)
_EVENTS: Mapping[states.MemberState, Callable[[model.Member], model.Event]] = {
    states.MemberState.ALIVE: model.MemberUp,
    states.MemberState.SUSPECT: model.MemberSuspect,
    states.MemberState.DEAD: model.MemberDown,
    states.MemberState.LEFT: model.MemberLeft,
}
_DEFAULTS = settings.Settings()
_MIN_KEY_SIZE = 16
_SEQUENCE_LIMIT = 1 << 63


@dataclass(slots=True)
class _Probe:
    target: election.NodeName
    ask_helpers_at: float
    fail_at: float
    retry_at: list[float]
    """When to send the direct PING again (Lifeguard's retried probes), ascending."""
    helpers_asked: bool = False

    def next_at(self) -> float:
        return min([self.fail_at if self.helpers_asked else self.ask_helpers_at, *self.retry_at])


@dataclass(slots=True)
class _Suspicion:
    started: float
    deadline: float
    suspecters: set[election.NodeName]
    """Members known to have suspected independently (their own probe failed)."""


@dataclass(frozen=True, slots=True)
class _Relay:
    """A ping we send for a PING-REQ: its ACK goes back to `requester` under their probe id."""

    target: election.NodeName
    requester: model.Endpoint
    requester_name: election.NodeName
    requester_probe_id: int
    expires: float


@dataclass(slots=True)
class _Rumor:
    update: wire.Update
    created: int
    transmissions: int = 0


class Membership:
    """One speaker's view of the cluster."""

    def __init__(
        self,
        name: election.NodeName,
        address: model.Endpoint,
        keys: Sequence[bytes],
        rng: random.Random,
        now: float,
        first_sequence: int,
        config: settings.Settings = _DEFAULTS,
        meta: bytes = b"",
    ) -> None:
        """`first_sequence` must exceed every sequence number this node sent before it
        restarted: pass wall-clock nanoseconds (`time.time_ns()`)."""
        if not 0 <= first_sequence < _SEQUENCE_LIMIT:
            raise ValueError("first_sequence must be in [0, 2**63)")
        self._name = name
        self._address = address
        self._rng = rng
        self._config = config
        self._keys: tuple[bytes, ...] = ()
        self.set_keys(keys)
        self._meta = _checked_meta(meta)
        self._incarnation = 0
        self._sequence = first_sequence
        self._probe_ids = rng.getrandbits(32)
        self._next_period = now
        self._left = False
        self._members: dict[election.NodeName, model.Member] = {}
        self._suspicions: dict[election.NodeName, _Suspicion] = {}
        self._health = 0
        self._to_probe: list[election.NodeName] = []
        self._refuting = False
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._round: list[election.NodeName] = []
        self._rumors: dict[election.NodeName, _Rumor] = {}
        self._rumor_count = 0
        self._windows: dict[election.NodeName, replay.ReplayWindow] = {}
        self._legacy: set[election.NodeName] = set()
        """Members whose last accepted packet was of `wire.LEGACY_VERSION`."""
        self._events: list[model.Event] = []
        self._dropped = dict.fromkeys(wire.DropReason, 0)
        self._spread(self._own_update())  # so that peers confirm us from our first packets

    # --- what the shell reads ---------------------------------------------------------------

    @property
    def members(self) -> dict[election.NodeName, model.Member]:
        """Every member, this node included (always ALIVE until it leaves)."""
        own_state = states.MemberState.LEFT if self._left else _ALIVE
        own = model.Member(self._name, self._address, self._incarnation, own_state, self._meta)
        return {self._name: own, **self._members}

    @property
    def dropped(self) -> dict[wire.DropReason, int]:
        """Packets dropped by `receive`, by reason, since the start."""
        return dict(self._dropped)

    @property
    def health(self) -> int:
        """Lifeguard's local health score: 0 is healthy; our probe timeouts and period are
        multiplied by 1 + this."""
        return self._health

    def drain_events(self) -> list[model.Event]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When `tick` must run next; None once this node has left."""
        if self._left:
            return None
        probes = (probe.next_at() for probe in self._probes.values())
        suspicions = (suspicion.deadline for suspicion in self._suspicions.values())
        return min([self._next_period, *suspicions, *probes])

    # --- what the shell tells ---------------------------------------------------------------

    def set_keys(self, keys: Sequence[bytes]) -> None:
        """Accept packets signed with any of `keys`; sign with the first (key rotation)."""
        if not keys or any(len(key) < _MIN_KEY_SIZE for key in keys):
            raise ValueError(f"need at least one key, each of at least {_MIN_KEY_SIZE} bytes")
        self._keys = tuple(keys)

    def set_meta(self, meta: bytes) -> None:
        """Publish new meta: a new incarnation, gossiped with the next packets."""
        self._meta = _checked_meta(meta)
        self._reincarnate(self._incarnation + 1)

    def set_peers(
        self, peers: Mapping[election.NodeName, model.Endpoint], now: float
    ) -> list[model.Datagram]:
        """The speakers that should exist; emits no events (the caller made the change)."""
        for name in [name for name in self._members if name not in peers]:
            self._forget(name)
        out = []
        for name, address in peers.items():
            if name == self._name:
                continue
            known = self._members.get(name)
            if known is None:
                state = states.MemberState.UNCONFIRMED
                self._members[name] = model.Member(name, address, 0, state)
                out.append(self._start_probe(name, now))
            elif known.address != address:
                self._members[name] = replace(known, address=address)
        return out

    def mark_left(self, name: election.NodeName, now: float) -> None:
        """Fast path for out-of-band news that `name` is gone: LEFT now, gossiped on.

        A node that is in fact running refutes it, like any other false news about itself.
        """
        member = self._members.get(name)
        if member is not None:
            self._apply(name, states.MemberState.LEFT, member.incarnation, None, now)

    def leave(self) -> list[model.Datagram]:
        """Say goodbye to every member; after this the core sends and accepts nothing."""
        if self._left:
            return []
        goodbye = wire.Update(self._name, states.MemberState.LEFT, self._incarnation)
        out = self._broadcast(goodbye)
        self._left = True
        return out

    def tick(self, now: float) -> list[model.Datagram]:
        """Run the timers due at `now`.

        Feed `receive` every datagram already waiting first: an ACK that sat in the socket
        buffer while this process was paused must not count as a peer's silence.
        """
        if self._left:
            return []
        out = self._expire_suspicions(now)
        out += self._advance_probes(now)
        if now >= self._next_period:
            interval = self._config.probe_interval * self._scale()
            self._next_period += interval
            if self._next_period <= now:  # the shell was late: do not try to catch up
                self._next_period = now + interval
            out += [self._start_probe(target, now) for target in self._period_targets()]
        return out

    def receive(self, source: model.Endpoint, data: bytes, now: float) -> list[model.Datagram]:
        """Handle one datagram from `source`; never raises."""
        if self._left:
            return []
        try:
            packet = wire.decode(data, self._keys)
        except wire.PacketRejected as rejected:
            return self._drop(rejected.reason)
        if packet.sender == self._name:
            return self._drop(wire.DropReason.FROM_SELF)
        if packet.recipient is not None and packet.recipient != self._name:
            return self._drop(wire.DropReason.WRONG_RECIPIENT)
        window = self._windows.setdefault(packet.sender, replay.ReplayWindow())
        if not window.accept(packet.sequence):
            return self._drop(wire.DropReason.REPLAYED)
        if packet.recipient is None:
            self._legacy.add(packet.sender)
        else:
            self._legacy.discard(packet.sender)
        message = packet.message
        if isinstance(message, wire.Ping) and message.target != self._name:
            return self._drop(wire.DropReason.WRONG_TARGET)
        for update in packet.updates:
            self._hear(update, packet.sender, now)
        out = self._probe_new_suspects(now)
        if self._refuting:
            self._refuting = False
            # Twice: a refutation lost on a lossy link lets the suspicion run out, a false
            # death that moves the member's addresses away and back.
            refutation = self._own_update()
            out += self._broadcast(refutation) + self._broadcast(refutation)
        if isinstance(message, wire.Ping):
            ack = wire.Ack(message.probe_id, self._incarnation, self._meta)
            return [self._datagram(source, ack, packet.sender), *out]
        if isinstance(message, wire.Ack):
            return self._acked(message, now) + out
        if isinstance(message, wire.PingReq):
            return [self._relay(source, packet.sender, message, now), *out]
        return out

    # --- probing ----------------------------------------------------------------------------

    def _period_targets(self) -> list[election.NodeName]:
        targets = [self._ring_successor(), self._next_in_round()]
        targets += sorted(n for n, m in self._members.items() if m.state is _SUSPECT)
        return list(dict.fromkeys(t for t in targets if t is not None))

    def _ring_successor(self) -> election.NodeName | None:
        live = sorted(name for name, member in self._members.items() if member.state.is_live)
        if not live:
            return None
        return live[bisect.bisect(live, self._name) % len(live)]

    def _next_in_round(self) -> election.NodeName | None:
        while True:
            if not self._round:
                self._round = sorted(self._members)
                self._rng.shuffle(self._round)
                if not self._round:
                    return None
            name = self._round.pop()
            if name in self._members:
                return name

    def _start_probe(self, target: election.NodeName, now: float) -> model.Datagram:
        probe_id = self._new_probe_id()
        scale = self._scale()
        timeout = self._config.probe_timeout * scale
        period = self._config.probe_interval * scale
        retries = self._config.probe_retries if self._config.lifeguard else 0
        step = (period - timeout) / (retries + 1)
        retry_at = [now + timeout + i * step for i in range(retries)]
        self._probes[probe_id] = _Probe(target, now + timeout, now + period, retry_at)
        return self._ping(probe_id, target)

    def _ping(self, probe_id: int, target: election.NodeName) -> model.Datagram:
        return self._datagram(self._members[target].address, wire.Ping(probe_id, target), target)

    def _probe_new_suspects(self, now: float) -> list[model.Datagram]:
        """Lifeguard: a suspicion we only heard of is checked at once, not next period."""
        names, self._to_probe = self._to_probe, []
        probing = {probe.target for probe in self._probes.values()}
        return [
            self._start_probe(name, now)
            for name in dict.fromkeys(names)
            if name in self._members and name not in probing
        ]

    def _scale(self) -> int:
        return 1 + self._health if self._config.lifeguard else 1

    def _adjust_health(self, delta: int) -> None:
        if self._config.lifeguard:
            self._health = min(self._config.max_health, max(0, self._health + delta))

    def _advance_probes(self, now: float) -> list[model.Datagram]:
        out = []
        for probe_id, probe in list(self._probes.items()):
            if now >= probe.fail_at:
                del self._probes[probe_id]
                member = self._members.get(probe.target)
                if member is None:
                    continue
                if member.state is _ALIVE:
                    self._adjust_health(+1)  # no ACK from a member believed alive
                if member.state is _SUSPECT:
                    self._confirm(probe.target, self._name, now)
                else:
                    self._apply(
                        probe.target,
                        states.Timer.PROBE_FAILED,
                        member.incarnation,
                        None,
                        now,
                        suspecter=self._name,
                    )
                continue
            if not probe.helpers_asked and now >= probe.ask_helpers_at:
                probe.helpers_asked = True
                out += self._ask_helpers(probe_id, probe.target)
            while probe.retry_at and now >= probe.retry_at[0]:
                probe.retry_at.pop(0)
                if probe.target in self._members:
                    out.append(self._ping(probe_id, probe.target))
        for probe_id, relay in list(self._relays.items()):
            if now >= relay.expires:
                del self._relays[probe_id]
        return out

    def _ask_helpers(self, probe_id: int, target: election.NodeName) -> list[model.Datagram]:
        member = self._members.get(target)
        if member is None or not member.state.is_live:
            return []  # only a live member's suspicion depends on it
        helpers = sorted(n for n, m in self._members.items() if m.state is _ALIVE and n != target)
        chosen = self._rng.sample(helpers, min(self._config.indirect_probes, len(helpers)))
        request = wire.PingReq(probe_id, target, member.address)
        return [self._datagram(self._members[h].address, request, h) for h in chosen]

    def _relay(
        self,
        source: model.Endpoint,
        requester: election.NodeName,
        request: wire.PingReq,
        now: float,
    ) -> model.Datagram:
        probe_id = self._new_probe_id()
        expires = now + self._config.probe_interval
        relay = _Relay(request.target, source, requester, request.probe_id, expires)
        self._relays[probe_id] = relay
        ping = wire.Ping(probe_id, request.target)
        return self._datagram(request.target_endpoint, ping, request.target)

    def _acked(self, ack: wire.Ack, now: float) -> list[model.Datagram]:
        probe = self._probes.pop(ack.probe_id, None)
        if probe is not None:
            self._adjust_health(-1)
            self._apply(probe.target, _ALIVE, ack.incarnation, ack.meta, now)
            return []
        relay = self._relays.pop(ack.probe_id, None)
        if relay is None:
            return []  # late: the probe already ended
        self._apply(relay.target, _ALIVE, ack.incarnation, ack.meta, now)
        relayed = replace(ack, probe_id=relay.requester_probe_id)
        return [self._datagram(relay.requester, relayed, relay.requester_name)]

    def _new_probe_id(self) -> int:
        self._probe_ids = (self._probe_ids + 1) & 0xFFFFFFFF
        return self._probe_ids

    # --- state --------------------------------------------------------------------------------

    def _hear(self, update: wire.Update, sender: election.NodeName, now: float) -> None:
        if update.name != self._name:
            if self._config.lifeguard and self._doubt(update, sender, now):
                return
            meta = update.meta if update.state is _ALIVE else None
            self._apply(update.name, update.state, update.incarnation, meta, now, suspecter=sender)
            return
        # News about ourselves: anything but our own current ALIVE must be overridden.
        if update.state is _ALIVE:
            outdated = update.incarnation > self._incarnation
        else:
            outdated = update.incarnation >= self._incarnation
        if outdated:
            if update.state is not _ALIVE:
                self._adjust_health(+1)  # others could not hear us in time
                # Lifeguard: the refutation goes to every member at once (see `receive`).
                self._refuting = self._config.lifeguard
            self._reincarnate(update.incarnation + 1)

    def _reincarnate(self, incarnation: int) -> None:
        # Only a peer holding the key could push us to the 32-bit limit; staying there is
        # better than failing to encode.
        self._incarnation = min(incarnation, wire.MAX_INCARNATION)
        self._spread(self._own_update())

    def _apply(
        self,
        name: election.NodeName,
        event: states.Input,
        incarnation: int,
        meta: bytes | None,
        now: float,
        suspecter: election.NodeName | None = None,
    ) -> bool:
        """Feed `event` to the state table for `name`; True if the member changed.

        `suspecter`: who suspects, when `event` may make the member SUSPECT (us, or the
        sender of the news)."""
        member = self._members.get(name)
        if member is None:
            return False
        target = states.next_state(member.state, member.incarnation, event, incarnation)
        if target is None:
            return False
        changed = replace(
            member,
            state=target,
            incarnation=incarnation,
            meta=meta if meta is not None else member.meta,
        )
        self._members[name] = changed
        if target is not member.state:
            self._events.append(_EVENTS[target](changed))
        elif changed.meta != member.meta:
            self._events.append(model.MemberUpdated(changed))
        if target is _SUSPECT:
            suspecters = {suspecter} if suspecter is not None else set()
            self._suspicions[name] = _Suspicion(now, now, suspecters)
            self._set_deadline(self._suspicions[name])
            if self._config.lifeguard and suspecter != self._name:
                # Heard, not seen: check it ourselves at once, and spread it only if our own
                # probe fails too (see `_confirm`), so every SUSPECT sender is independent.
                self._to_probe.append(name)
                return True
        else:
            self._suspicions.pop(name, None)
        alive_meta = changed.meta if target is _ALIVE else b""
        self._spread(wire.Update(name, target, incarnation, alive_meta))
        return True

    def _doubt(self, update: wire.Update, sender: election.NodeName, now: float) -> bool:
        """Lifeguard: `sender` doubts a member (SUSPECT, or DEAD at an incarnation older than
        ours). True if that was handled here: a confirmation of our own suspicion, without
        restarting its timer, if it is about the incarnation we suspect or a newer one; nothing
        if the member has refuted it since (as in memberlist: such a suspecter only missed the
        refutation, and counting it shortened a false suspicion to the minimum under loss);
        and for a member we think ALIVE at a newer incarnation, a probe at once, but never a
        confirmation of a later suspicion of ours."""
        member = self._members.get(update.name)
        if member is None or update.state not in (_SUSPECT, states.MemberState.DEAD):
            return False
        stale = update.incarnation < member.incarnation
        if update.state is not _SUSPECT and not stale:
            return False  # a DEAD we must accept
        if member.state is _SUSPECT and update.name in self._suspicions:
            if stale:
                return True  # a suspicion the member has refuted since: no evidence now
            if update.incarnation > member.incarnation:
                self._members[update.name] = replace(member, incarnation=update.incarnation)
            self._confirm(update.name, sender, now)
            return True
        if member.state is _ALIVE and stale:
            self._to_probe.append(update.name)
            return True
        return False

    def _confirm(self, name: election.NodeName, suspecter: election.NodeName, now: float) -> None:
        """Lifeguard: `suspecter` independently suspects `name`, which we already suspect."""
        suspicion = self._suspicions.get(name)
        member = self._members.get(name)
        if not self._config.lifeguard or suspicion is None or member is None:
            return
        incarnation = member.incarnation
        if suspecter not in suspicion.suspecters:
            suspicion.suspecters.add(suspecter)
            self._set_deadline(suspicion)
            if suspecter == self._name:
                self._spread(wire.Update(name, _SUSPECT, incarnation))

    def _set_deadline(self, suspicion: _Suspicion) -> None:
        confirmations = max(0, len(suspicion.suspecters) - 1)
        timeout = self._config.suspicion_after(len(self._members) + 1, confirmations)
        suspicion.deadline = suspicion.started + timeout

    def _expire_suspicions(self, now: float) -> list[model.Datagram]:
        out = []
        for name, suspicion in list(self._suspicions.items()):
            if now < suspicion.deadline:
                continue
            incarnation = self._members[name].incarnation
            if self._apply(name, states.Timer.SUSPICION_EXPIRED, incarnation, None, now):
                dead = wire.Update(name, states.MemberState.DEAD, incarnation)
                out += self._broadcast(dead)  # failover must not wait for gossip
        return out

    def _forget(self, name: election.NodeName) -> None:
        # The replay window stays: a packet recorded before the peer was removed must not be
        # replayable if it comes back.
        del self._members[name]
        self._suspicions.pop(name, None)
        self._rumors.pop(name, None)
        for probe_id in [i for i, probe in self._probes.items() if probe.target == name]:
            del self._probes[probe_id]

    def _own_update(self) -> wire.Update:
        return wire.Update(self._name, _ALIVE, self._incarnation, self._meta)

    # --- sending ------------------------------------------------------------------------------

    def _spread(self, update: wire.Update) -> None:
        self._rumor_count += 1
        self._rumors[update.name] = _Rumor(update, self._rumor_count)

    def _broadcast(self, update: wire.Update) -> list[model.Datagram]:
        """`update` to every member that may be running, each packet carrying it first."""
        self._spread(update)
        return [
            self._datagram(member.address, wire.Gossip(), name, lead=update)
            for name, member in self._members.items()
            if member.state not in _GONE and name != update.name
        ]

    def _datagram(
        self,
        endpoint: model.Endpoint,
        message: wire.Message,
        recipient: election.NodeName,
        lead: wire.Update | None = None,
    ) -> model.Datagram:
        """A signed packet for `recipient` with as many piggy-backed updates as fit.

        `lead` and, when we think the recipient is not ALIVE, our view of it come first.
        """
        first = [] if lead is None else [lead]
        member = self._members.get(recipient)
        if member is not None and member.state in _DOUBTED:
            first.append(wire.Update(member.name, member.state, member.incarnation))
        self._sequence += 1
        named = None if recipient in self._legacy else recipient
        packet = wire.Packet(self._name, named, self._sequence, message, tuple(first))
        budget = self._config.max_packet_size - wire.size(packet)
        updates = list(first)
        limit = self._config.retransmit_limit(len(self._members) + 1)
        leading = {update.name for update in first}
        for rumor in sorted(self._rumors.values(), key=lambda r: (r.transmissions, -r.created)):
            if len(updates) == wire.MAX_UPDATES:
                break
            cost = wire.update_size(rumor.update)
            if rumor.update.name in leading or cost > budget:
                continue
            updates.append(rumor.update)
            budget -= cost
            rumor.transmissions += 1
            if rumor.transmissions >= limit:
                del self._rumors[rumor.update.name]
        packet = replace(packet, updates=tuple(updates))
        return model.Datagram(endpoint, wire.encode(packet, self._keys[0]))

    def _drop(self, reason: wire.DropReason) -> list[model.Datagram]:
        self._dropped[reason] += 1
        return []


def _checked_meta(meta: bytes) -> bytes:
    if len(meta) > model.MAX_META_SIZE:
        raise ValueError(f"meta is at most {model.MAX_META_SIZE} bytes")
    return meta
