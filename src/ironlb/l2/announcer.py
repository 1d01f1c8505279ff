"""Whether this node answers ARP/NDP for an address right now: the layer-2 announcer core.

Sans-IO: no sockets, no clock, no asyncio. Every input carries `now` (monotonic seconds); every
input returns the actions the shell (`ironlb.speaker.layer2`) carries out, in order, and
`next_deadline()` says when to call `tick(now)` at the latest.

Per address one `State`, changed only through `TABLE` (an input a state does not list raises
`IllegalTransition`, as in `bgp/fsm.py`):

- WITHDRAWN: not answering (also every address the core does not know).
- HELD: this node owns the address but may not take it yet (the speaker is settling).
- PROBING: first announcement: an RFC 5227 probe / RFC 4862 DAD runs on the first interface.
  An answer from another node of this cluster (the shell maps the MAC to a member) is a
  takeover, not a refusal: that node announced the address before (an earlier owner, or the
  load balancer ironlb replaces, still running during a migration).
- REFUSED: another host answered the probe (or the I/O failed); probed again at `retry_at`,
  or announced at once when another node is known to have announced it since.
- ANNOUNCING: answering on its interfaces, gratuitous ARP/NA repeated per the schedule.
- HANDING_OVER: draining; still answering, no more gratuitous, until another MAC claims the
  address (the new owner's gratuitous announcement) or `handover_timeout` passes.

Node-wide facts decide which input an address gets on every plan and tick (`_evaluate`):
- draining -> DRAIN;
- not owned here, no usable interface (carrier lost, excluded), or isolated (peers' membership
  packets fail authentication and none is verified: a wrong key, announcing would fight every
  other node) -> DROP;
- not settled (after `start`, or after carrier came back, until the peers answered or
  `Timing.settle` passed): HOLD, which keeps what is announced and takes nothing new;
- else WANT_CLEARED (no probe needed: probing disabled, announced before by some node, or
  probed clean here) or WANT_UNCLEARED.

Being the owner of an address in another node's plan does not mean that node announced it (its
probe may have been refused), so "announced before" is not derived from plans: it is what the
shell passes as `Target.known` (answering here, or recorded by a node), plus this core's own
clean probes. Plans only name the previous owner of a takeover.

The control-plane VIP (`ironlb.cpvip`, issue 11) will drive the same core with one address: its
plan is "mine" while it holds the VIP lease or wins the election among control-plane members,
`membership()` gets the same facts from its own members, `carrier()` from its link monitor,
`drain()` on SIGTERM; its shell carries out the same actions with the same responder.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ironlb.core import addresses, model, ratelimit


class State(enum.Enum):
    WITHDRAWN = "Withdrawn"
    HELD = "Held"
    PROBING = "Probing"
    REFUSED = "Refused"
    ANNOUNCING = "Announcing"
    HANDING_OVER = "HandingOver"


class Input(enum.Enum):
    WANT_CLEARED = enum.auto()
    """Owned here, allowed, no probe needed."""
    WANT_UNCLEARED = enum.auto()
    """Owned here, allowed, never probed."""
    STILL_REFUSED = enum.auto()
    """Owned here, allowed, but another host answered its last probe less than
    `retry_in_use` ago."""
    HOLD = enum.auto()
    """Owned here, but the speaker is still settling."""
    DROP = enum.auto()
    """Not owned here, no usable interface, or isolated."""
    DRAIN = enum.auto()
    PROBE_CLEAR = enum.auto()
    PROBE_FOREIGN = enum.auto()
    PROBE_MEMBER = enum.auto()
    """Another node of this cluster answered the probe: it announced the address before (an
    earlier owner, or the load balancer ironlb replaces, running on that node). A takeover, as
    when a node is known to have announced it; not a stranger's address."""
    FAILED = enum.auto()
    """The shell could not probe or answer (an OSError)."""
    RETRY_DUE = enum.auto()
    GRATUITOUS_DUE = enum.auto()
    CLAIMED = enum.auto()
    """Another MAC claims the address."""
    HANDOVER_EXPIRED = enum.auto()


class Effect(enum.Enum):
    PROBE = enum.auto()
    MARK_CLEARED = enum.auto()
    ANSWER = enum.auto()
    """Answer on the target's interfaces (new ones get a gratuitous schedule)."""
    STOP = enum.auto()
    GRATUITOUS = enum.auto()
    UNSCHEDULE = enum.auto()
    WARN_IN_USE = enum.auto()
    WARN_CONFLICT = enum.auto()
    ARM_RETRY_IN_USE = enum.auto()
    ARM_RETRY_FAILED = enum.auto()
    ARM_RETRY_REMEMBERED = enum.auto()
    ARM_HANDOVER = enum.auto()
    REEVALUATE = enum.auto()


@dataclass(frozen=True, slots=True)
class Transition:
    state: State
    effects: tuple[Effect, ...] = ()


class IllegalTransition(RuntimeError):
    """The shell drove the core in a way no network can cause (a timer of another state)."""


S, In, E = State, Input, Effect
_STAY: dict[State, Transition] = {s: Transition(s) for s in State}
_IDLE = (S.WITHDRAWN, S.HELD)
_STALE = (In.PROBE_CLEAR, In.PROBE_FOREIGN, In.PROBE_MEMBER, In.FAILED, In.CLAIMED)

TABLE: dict[tuple[State, Input], Transition] = {
    **{(s, In.WANT_CLEARED): Transition(S.ANNOUNCING, (E.ANSWER,)) for s in _IDLE},
    **{(s, In.WANT_UNCLEARED): Transition(S.PROBING, (E.PROBE,)) for s in _IDLE},
    **{(s, In.STILL_REFUSED): Transition(S.REFUSED, (E.ARM_RETRY_REMEMBERED,)) for s in _IDLE},
    **{(s, In.HOLD): Transition(S.HELD) for s in _IDLE},
    **{(s, In.DROP): Transition(S.WITHDRAWN) for s in _IDLE},
    **{(s, In.DRAIN): Transition(S.WITHDRAWN) for s in _IDLE},
    # A clean probe is a fact about the LAN whatever the state: remembered (settling must not
    # make every node probe again at once when it ends, and refuse each other's probes).
    **{(s, In.PROBE_CLEAR): Transition(s, (E.MARK_CLEARED,)) for s in _IDLE},
    **{(s, In.PROBE_MEMBER): Transition(s, (E.MARK_CLEARED,)) for s in _IDLE},
    **{(s, i): _STAY[s] for s in _IDLE for i in (In.PROBE_FOREIGN, In.FAILED, In.CLAIMED)},
    # PROBING: settling lets the probe run on; losing the address abandons it.
    (S.PROBING, In.WANT_CLEARED): Transition(S.ANNOUNCING, (E.ANSWER,)),
    (S.PROBING, In.WANT_UNCLEARED): _STAY[S.PROBING],
    (S.PROBING, In.STILL_REFUSED): _STAY[S.PROBING],
    (S.PROBING, In.HOLD): _STAY[S.PROBING],
    (S.PROBING, In.DROP): Transition(S.WITHDRAWN),
    (S.PROBING, In.DRAIN): Transition(S.WITHDRAWN),
    (S.PROBING, In.PROBE_CLEAR): Transition(S.HELD, (E.MARK_CLEARED, E.REEVALUATE)),
    (S.PROBING, In.PROBE_FOREIGN): Transition(S.REFUSED, (E.WARN_IN_USE, E.ARM_RETRY_IN_USE)),
    (S.PROBING, In.PROBE_MEMBER): Transition(S.HELD, (E.MARK_CLEARED, E.REEVALUATE)),
    (S.PROBING, In.FAILED): Transition(S.REFUSED, (E.ARM_RETRY_FAILED,)),
    (S.PROBING, In.CLAIMED): _STAY[S.PROBING],
    # REFUSED: the retry timer ends a refusal, or another node announcing the address since
    # (what answered the probe was that node, taking it over meanwhile: not a stranger).
    (S.REFUSED, In.WANT_CLEARED): Transition(S.ANNOUNCING, (E.ANSWER,)),
    (S.REFUSED, In.WANT_UNCLEARED): _STAY[S.REFUSED],
    (S.REFUSED, In.STILL_REFUSED): _STAY[S.REFUSED],
    (S.REFUSED, In.HOLD): _STAY[S.REFUSED],
    (S.REFUSED, In.DROP): Transition(S.WITHDRAWN),
    (S.REFUSED, In.DRAIN): Transition(S.WITHDRAWN),
    (S.REFUSED, In.RETRY_DUE): Transition(S.HELD, (E.REEVALUATE,)),
    **{(S.REFUSED, i): _STAY[S.REFUSED] for i in _STALE},
    # ANNOUNCING: settling keeps what is announced; interfaces may change on any plan.
    (S.ANNOUNCING, In.WANT_CLEARED): Transition(S.ANNOUNCING, (E.ANSWER,)),
    (S.ANNOUNCING, In.WANT_UNCLEARED): Transition(S.ANNOUNCING, (E.ANSWER,)),
    (S.ANNOUNCING, In.STILL_REFUSED): Transition(S.ANNOUNCING, (E.ANSWER,)),
    (S.ANNOUNCING, In.HOLD): Transition(S.ANNOUNCING, (E.ANSWER,)),
    (S.ANNOUNCING, In.DROP): Transition(S.WITHDRAWN, (E.STOP,)),
    (S.ANNOUNCING, In.DRAIN): Transition(S.HANDING_OVER, (E.UNSCHEDULE, E.ARM_HANDOVER)),
    (S.ANNOUNCING, In.GRATUITOUS_DUE): Transition(S.ANNOUNCING, (E.GRATUITOUS,)),
    (S.ANNOUNCING, In.CLAIMED): Transition(S.ANNOUNCING, (E.WARN_CONFLICT,)),
    (S.ANNOUNCING, In.FAILED): Transition(S.REFUSED, (E.STOP, E.ARM_RETRY_FAILED)),
    (S.ANNOUNCING, In.PROBE_CLEAR): _STAY[S.ANNOUNCING],
    (S.ANNOUNCING, In.PROBE_FOREIGN): _STAY[S.ANNOUNCING],
    (S.ANNOUNCING, In.PROBE_MEMBER): _STAY[S.ANNOUNCING],
    # HANDING_OVER: plans no longer matter; the new owner's claim or the timeout ends it.
    **{
        (S.HANDING_OVER, i): _STAY[S.HANDING_OVER]
        for i in (
            In.WANT_CLEARED,
            In.WANT_UNCLEARED,
            In.STILL_REFUSED,
            In.HOLD,
            In.DROP,
            In.DRAIN,
        )
    },
    (S.HANDING_OVER, In.CLAIMED): Transition(S.WITHDRAWN, (E.STOP,)),
    (S.HANDING_OVER, In.HANDOVER_EXPIRED): Transition(S.WITHDRAWN, (E.STOP,)),
    (S.HANDING_OVER, In.FAILED): Transition(S.WITHDRAWN, (E.STOP,)),
    (S.HANDING_OVER, In.PROBE_CLEAR): _STAY[S.HANDING_OVER],
    (S.HANDING_OVER, In.PROBE_FOREIGN): _STAY[S.HANDING_OVER],
    (S.HANDING_OVER, In.PROBE_MEMBER): _STAY[S.HANDING_OVER],
}
"""(state, input) -> next state and effects. Pairs not listed are illegal."""


def transition(state: State, event: Input) -> Transition:
    found = TABLE.get((state, event))
    if found is None:
        raise IllegalTransition(f"{event.name} in {state.value}")
    return found


# --- what goes in ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """An address this node owns, as the plan and the interface choice give it."""

    interfaces: tuple[str, ...]
    """Interfaces to answer on, sorted (empty: none usable, see `why_none`)."""
    services: tuple[model.ServiceKey, ...] = ()
    refresh: float | None = None
    """Seconds between periodic gratuitous announcements after the first ones (None: none)."""
    known: bool = False
    """Some node announced it before: a failover, not a new address (no probe)."""
    why_none: str = ""


CONFLICT_EVENTS = ratelimit.Limit(burst=3, rate=1 / 60)


@dataclass(frozen=True, slots=True)
class Timing:
    probe: float = 0.5
    """Seconds a probe lasts (the shell's business); 0 disables probing."""
    gratuitous_interval: float = 1.1
    gratuitous_duration: float = 5.0
    handover_timeout: float = 2.0
    settle: float = 1.0
    """Seconds to wait for peers to answer before taking new addresses."""
    retry_in_use: float = 30.0
    """Seconds before an address found in use by another host is probed again."""
    retry_failed: float = 1.0
    """Seconds before an address whose probe or answering failed is tried again."""
    key_mismatch_window: float = 5.0
    """Seconds a packet failing authentication counts as evidence of a wrong key."""
    conflict_events: ratelimit.Limit = CONFLICT_EVENTS
    """Conflict warnings per address: a few at once, then one a minute."""


# --- what comes out -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    address: addresses.IP
    interface: str
    duration: float


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer for `address` on exactly `interfaces` from now on."""

    address: addresses.IP
    interfaces: tuple[str, ...]
    services: tuple[model.ServiceKey, ...]
    first: bool
    """It was not answered here before."""
    taking_over_from: str | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop answering for `address` on every interface."""

    address: addresses.IP
    reason: str
    warning: bool = False
    """Not the usual course of things (a handover nobody took, an interface gone)."""


@dataclass(frozen=True, slots=True)
class Gratuitous:
    address: addresses.IP
    interfaces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Warn:
    """Log a warning and, with `reason`, a Warning Event on `services`."""

    address: addresses.IP
    services: tuple[model.ServiceKey, ...]
    reason: str
    note: str


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A conflict not reported because its address's warning rate was reached."""

    address: addresses.IP


@dataclass(frozen=True, slots=True)
class Isolated:
    isolated: bool


Action = Probe | Answer | Stop | Gratuitous | Warn | Suppressed | Isolated


@dataclass(slots=True)
class _Schedule:
    due: float
    until: float
    refresh: float | None


@dataclass(slots=True)
class _Address:
    state: State = State.WITHDRAWN
    interfaces: tuple[str, ...] = ()
    """Where it is answered now (ANNOUNCING, HANDING_OVER)."""
    schedule: _Schedule | None = None
    retry_at: float | None = None
    handover_until: float | None = None
    claimed_by: str = ""


_ANSWERED = (State.ANNOUNCING, State.HANDING_OVER)


def _deadline(a: _Address) -> float | None:
    """When the address's timer is due (the time `Announcer._due` fires it), if it has one."""
    if a.state is State.ANNOUNCING and a.schedule is not None:
        due = a.schedule.due
        return due if due != float("inf") else None
    if a.state is State.REFUSED:
        return a.retry_at
    if a.state is State.HANDING_OVER:
        return a.handover_until
    return None


@dataclass(slots=True)
class _Facts:
    settle_until: float | None = None
    """None: not started."""
    peers_heard: bool = False
    membership: bool = False
    verified_peers: bool = False
    bad_mac: int = 0
    bad_mac_at: float = float("-inf")
    isolated: bool = False
    settled: bool = False
    """As of the last input: the peers answered or the settle time passed."""
    draining: bool = False
    drained_at: float | None = None
    suppressed: dict[addresses.IP, int] = field(default_factory=dict)


class Announcer:
    def __init__(self, node: str, timing: Timing = Timing()) -> None:
        self.node = node
        self.timing = timing
        self._targets: dict[addresses.IP, Target] = {}
        self._others: dict[addresses.IP, str | None] = {}
        self._addresses: dict[addresses.IP, _Address] = {}
        self._cleared: set[addresses.IP] = set()
        self._refused_until: dict[addresses.IP, float] = {}
        """Addresses another host answered for, until when they are not probed again; kept
        when the address leaves this node, so coming back does not skip the wait."""
        self._facts = _Facts()
        self._conflicts: ratelimit.PerKey[addresses.IP] = ratelimit.PerKey(timing.conflict_events)
        self._timers: list[tuple[float, int, addresses.IP]] = []
        """A heap of (deadline, order pushed, address), pushed whenever an address's deadline
        changes; an entry whose address has another deadline by now is stale and skipped.
        Timers and `next_deadline` cost the addresses due, not every address."""
        self._timer_order = itertools.count()
        self._handing: set[addresses.IP] = set()
        """The addresses in HANDING_OVER."""
        self._pending: set[addresses.IP] = set()
        """The addresses of `_targets` not answered here: what the shell knows of them
        (`Target.known`) still matters when they are (re)evaluated."""

    # --- reading --------------------------------------------------------------------------------

    def state(self, address: addresses.IP) -> State:
        found = self._addresses.get(address)
        return found.state if found is not None else State.WITHDRAWN

    def states(self) -> dict[addresses.IP, State]:
        return {ip: a.state for ip, a in self._addresses.items()}

    def answering(self) -> dict[addresses.IP, tuple[str, ...]]:
        """Address -> interfaces answering for it now."""
        return {
            ip: a.interfaces
            for ip, a in self._addresses.items()
            if a.state in (State.ANNOUNCING, State.HANDING_OVER)
        }

    @property
    def started(self) -> bool:
        return self._facts.settle_until is not None

    @property
    def isolated(self) -> bool:
        return self._facts.isolated

    def settled(self, now: float) -> bool:
        f = self._facts
        return f.settle_until is not None and (now >= f.settle_until or f.peers_heard)

    def handing_over(self) -> bool:
        return bool(self._handing)

    def pending(self) -> frozenset[addresses.IP]:
        """The addresses owned here and not answered (held, probing, refused, or withdrawn:
        not started, isolated, no usable interface): an incremental `plan()` passes fresh
        targets for these as well as for those it changed."""
        return frozenset(self._pending)

    def next_deadline(self) -> float | None:
        """When `tick` must be called at the latest (None: only inputs change anything)."""
        f = self._facts
        times: list[float] = []
        if f.settle_until is not None and not f.settled:
            times.append(f.settle_until)
        if f.isolated:
            times.append(f.bad_mac_at + self.timing.key_mismatch_window)
        timers = self._timers
        while timers:
            due, _, ip = timers[0]
            a = self._addresses.get(ip)
            if a is not None and _deadline(a) == due:
                times.append(due)
                break
            heapq.heappop(timers)  # stale
        return min(times, default=None)

    # --- inputs ---------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """Begin settling: take nothing new until peers answered or `settle` seconds passed.
        Called at start, when membership starts late and when carrier comes back."""
        self._facts.settle_until = now + self.timing.settle
        self._facts.peers_heard = self._facts.settled = False
        return self._reevaluate_all(now) + self.tick(now)

    def carrier(self, now: float, up: bool) -> list[Action]:
        """An interface came back: peers may have declared this node dead meanwhile, meet them
        before taking anything new. (Losing carrier shows in the targets' interfaces.)"""
        if up and self.started:
            return self.start(now)
        return self.tick(now)

    def membership(
        self,
        now: float,
        *,
        running: bool,
        peers_heard: bool,
        verified_peers: bool,
        bad_mac: int,
    ) -> list[Action]:
        """Facts from membership: every peer answered (none unconfirmed or dead), some peer is
        verified live, how many packets failed authentication so far."""
        self.record_membership(
            now,
            running=running,
            peers_heard=peers_heard,
            verified_peers=verified_peers,
            bad_mac=bad_mac,
        )
        return self.tick(now)

    def record_membership(
        self,
        now: float,
        *,
        running: bool,
        peers_heard: bool,
        verified_peers: bool,
        bad_mac: int,
    ) -> None:
        """The same facts, not acted on until the next input: a shell that plans from the same
        membership view passes them right before `plan()`. Acting on them at once would decide
        with the new facts and the old plan: a speaker that just heard its peers would settle
        and probe an address it owned only in the plan it made while it was alone, and its probe
        would make the real owner's simultaneous probe fail (RFC 5227 2.1.1)."""
        f = self._facts
        f.membership = running
        f.peers_heard = peers_heard or not running
        f.verified_peers = verified_peers
        if bad_mac > f.bad_mac:
            f.bad_mac, f.bad_mac_at = bad_mac, now

    def plan(
        self,
        now: float,
        mine: Mapping[addresses.IP, Target],
        others: Mapping[addresses.IP, str | None] | None = None,
        changed: Iterable[addresses.IP] | None = None,
    ) -> list[Action]:
        """The addresses this node owns (with their interfaces), and who owns the rest of the
        plan's addresses (None: nobody can), to name the previous owner of a takeover.

        With `changed`, only those addresses changed since the last plan: `mine` and `others`
        need to hold only them (an address of `changed` in neither is in the plan no more),
        and only they are evaluated, so a plan costs the addresses it changed. The shell must
        include `pending()` in `changed` when what it knows of them (`Target.known`) may
        have changed."""
        self._refused_until = {ip: t for ip, t in self._refused_until.items() if t > now}
        actions: list[Action] = []
        if changed is None:
            others = dict(others or {})
            previous_others = self._others
            self._targets, self._others = dict(mine), others
            self._cleared &= set(mine) | set(others)
            self._pending = {ip for ip in self._targets if self.state(ip) not in _ANSWERED}
            for ip in set(self._addresses) | set(mine):
                actions += self._evaluate(ip, now, previous_others.get(ip))
            return actions + self.tick(now)
        others = others or {}
        previous: dict[addresses.IP, str | None] = {}
        for ip in changed:
            previous[ip] = self._others.get(ip)
            target = mine.get(ip)
            if target is None:
                self._targets.pop(ip, None)
            else:
                self._targets[ip] = target
            if ip in others:
                self._others[ip] = others[ip]
            else:
                self._others.pop(ip, None)
            if target is None and ip not in others:
                self._cleared.discard(ip)
        for ip, came_from in previous.items():
            actions += self._evaluate(ip, now, came_from)
        return actions + self.tick(now)

    def probed(
        self,
        now: float,
        address: addresses.IP,
        foreign: str | None,
        *,
        member: str | None = None,
        failed: str = "",
    ) -> list[Action]:
        """A probe ended: `foreign` is the other host's MAC (None: nobody answered), `member` the
        node of this cluster that MAC belongs to, if the shell knows it."""
        if failed:
            event, detail = Input.FAILED, failed
        elif foreign is None:
            event, detail = Input.PROBE_CLEAR, ""
        elif member is not None:
            event, detail = Input.PROBE_MEMBER, member
        else:
            event, detail = Input.PROBE_FOREIGN, foreign
        return self._fire(address, event, now, detail=detail) + self.tick(now)

    def failed(self, now: float, address: addresses.IP, why: str) -> list[Action]:
        """Answering for `address` failed (an interface vanished under the shell)."""
        return self._fire(address, Input.FAILED, now, detail=why) + self.tick(now)

    def claimed(self, now: float, address: addresses.IP, mac: str) -> list[Action]:
        """Another MAC claims `address` (a gratuitous ARP/NA or an answer from it)."""
        return self._fire(address, Input.CLAIMED, now, detail=mac)

    def drain(self, now: float) -> list[Action]:
        """Shutting down: hand every answered address over, take nothing."""
        self._facts.draining = True
        self._facts.drained_at = now
        actions: list[Action] = []
        for ip in list(self._addresses):
            actions += self._fire(ip, Input.DRAIN, now)
        return actions

    def tick(self, now: float) -> list[Action]:
        """Timers: settling and isolation ending, retries, gratuitous repeats, handover."""
        actions = self._node_facts(now)
        # A timer may start another one due now (a retry announcing at once): up to three
        # firings per address and tick; what is still due waits for the next tick.
        timers = self._timers
        fired: dict[addresses.IP, int] = {}
        later: list[tuple[float, int, addresses.IP]] = []
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            ip = entry[2]
            a = self._addresses.get(ip)
            event = self._due(a, now) if a is not None else None
            if event is None:
                continue  # stale: the address has another deadline, or none
            if fired.get(ip, 0) >= 3:
                later.append(entry)
                continue
            fired[ip] = fired.get(ip, 0) + 1
            actions += self._fire(ip, event, now)
        for entry in later:
            heapq.heappush(timers, entry)
        if len(timers) > 4 * len(self._addresses) + 64:
            self._timers = [
                (d, next(self._timer_order), ip)
                for ip, a in self._addresses.items()
                if (d := _deadline(a)) is not None
            ]
            heapq.heapify(self._timers)
        return actions

    @staticmethod
    def _due(a: _Address, now: float) -> Input | None:
        if a.state is State.ANNOUNCING and a.schedule is not None and a.schedule.due <= now:
            return Input.GRATUITOUS_DUE
        if a.state is State.REFUSED and a.retry_at is not None and a.retry_at <= now:
            return Input.RETRY_DUE
        until = a.handover_until
        if a.state is State.HANDING_OVER and until is not None and until <= now:
            return Input.HANDOVER_EXPIRED
        return None

    # --- the machine ----------------------------------------------------------------------------

    def _node_facts(self, now: float) -> list[Action]:
        """Re-evaluate every address when settling or isolation changed."""
        f = self._facts
        # The same sum as next_deadline's: `now - at < window` can stay true at that deadline
        # by a rounding error, and the deadline would then be in the past.
        recent = now < f.bad_mac_at + self.timing.key_mismatch_window
        isolated = f.membership and recent and not f.verified_peers
        actions: list[Action] = []
        changed = isolated != f.isolated
        if changed:
            f.isolated = isolated
            actions.append(Isolated(isolated))
        settled = self.settled(now)
        if settled != f.settled:
            f.settled = settled
            changed = True
        if changed:
            actions += self._reevaluate_all(now)
        return actions

    def _reevaluate_all(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for ip in set(self._addresses) | set(self._targets):
            actions += self._evaluate(ip, now, None)
        return actions

    def _input_for(self, ip: addresses.IP, now: float) -> Input:
        f = self._facts
        target = self._targets.get(ip)
        if f.draining:
            return Input.DRAIN
        if target is None or not target.interfaces or f.isolated or f.settle_until is None:
            return Input.DROP
        if not self.settled(now):
            return Input.HOLD
        if self.timing.probe <= 0 or target.known or ip in self._cleared:
            return Input.WANT_CLEARED
        if self._refused_until.get(ip, float("-inf")) > now:
            return Input.STILL_REFUSED
        return Input.WANT_UNCLEARED

    def _evaluate(self, ip: addresses.IP, now: float, came_from: str | None) -> list[Action]:
        return self._fire(ip, self._input_for(ip, now), now, came_from=came_from)

    def _fire(
        self,
        ip: addresses.IP,
        event: Input,
        now: float,
        *,
        detail: str = "",
        came_from: str | None = None,
    ) -> list[Action]:
        actions = self._step(ip, event, now, detail, came_from)
        a = self._addresses.get(ip)
        state = a.state if a is not None else State.WITHDRAWN
        if state is State.HANDING_OVER:
            self._handing.add(ip)
        else:
            self._handing.discard(ip)
        if ip in self._targets and state not in _ANSWERED:
            self._pending.add(ip)
        else:
            self._pending.discard(ip)
        if a is not None and (due := _deadline(a)) is not None:
            heapq.heappush(self._timers, (due, next(self._timer_order), ip))
        return actions

    def _step(
        self, ip: addresses.IP, event: Input, now: float, detail: str, came_from: str | None
    ) -> list[Action]:
        a = self._addresses.get(ip) or _Address()
        step = transition(a.state, event)
        before = a.state
        a.state = step.state
        if a.state is State.WITHDRAWN:
            self._addresses.pop(ip, None)
        else:
            self._addresses[ip] = a
        actions: list[Action] = []
        target = self._targets.get(ip)
        services = target.services if target is not None else ()
        t = self.timing
        for effect in step.effects:
            if effect is Effect.PROBE:
                assert target is not None
                actions.append(Probe(ip, target.interfaces[0], t.probe))
            elif effect is Effect.MARK_CLEARED:
                self._cleared.add(ip)
                self._refused_until.pop(ip, None)
            elif effect is Effect.ANSWER:
                assert target is not None
                actions += self._answer(ip, a, target, now, before, came_from)
            elif effect is Effect.STOP:
                reason, warning = self._stop_reason(ip, event, detail)
                actions.append(Stop(ip, reason, warning))
                a.interfaces, a.schedule = (), None
            elif effect is Effect.GRATUITOUS:
                assert a.schedule is not None
                actions.append(Gratuitous(ip, a.interfaces))
                self._reschedule(a.schedule, now)
                if a.schedule.due == float("inf"):
                    a.schedule = None
            elif effect is Effect.UNSCHEDULE:
                # A repeat scheduled by an earlier takeover would pull clients back from
                # the new owner.
                a.schedule = None
            elif effect is Effect.WARN_IN_USE:
                note = (
                    f"not announcing {ip}: another host ({detail}) already answers for it on "
                    f"{target.interfaces[0] if target else '?'}; is this pool shared with "
                    "another cluster or a static host? ironlb checks again in "
                    f"{t.retry_in_use:.0f} s"
                )
                actions.append(Warn(ip, services, "AddressInUse", note))
            elif effect is Effect.WARN_CONFLICT:
                actions += self._conflict(ip, detail, services, now)
            elif effect is Effect.ARM_RETRY_IN_USE:
                a.retry_at = self._refused_until[ip] = now + t.retry_in_use
                self._cleared.discard(ip)
            elif effect is Effect.ARM_RETRY_REMEMBERED:
                a.retry_at = self._refused_until[ip]
            elif effect is Effect.ARM_RETRY_FAILED:
                a.retry_at = now + t.retry_failed
                note = f"{ip}: {detail}; trying again in {t.retry_failed:.0f} s"
                actions.append(Warn(ip, (), "", note))
            elif effect is Effect.ARM_HANDOVER:
                a.handover_until = now + t.handover_timeout
            elif effect is Effect.REEVALUATE:
                a.retry_at = None
                taking_over_from = detail if event is Input.PROBE_MEMBER else None
                actions += self._evaluate(ip, now, taking_over_from)
        return actions

    def _answer(
        self,
        ip: addresses.IP,
        a: _Address,
        target: Target,
        now: float,
        before: State,
        came_from: str | None,
    ) -> list[Action]:
        first = before is not State.ANNOUNCING
        gained = set(target.interfaces) - set(a.interfaces)
        if not first and not gained and target.interfaces == a.interfaces:
            if a.schedule is not None:
                a.schedule.refresh = target.refresh
            return []
        a.interfaces = target.interfaces
        actions: list[Action] = [
            Answer(ip, target.interfaces, target.services, first, came_from if first else None)
        ]
        if gained:
            t = self.timing
            a.schedule = _Schedule(now, now + t.gratuitous_duration, target.refresh)
        elif a.schedule is not None:
            a.schedule.refresh = target.refresh
        return actions

    def _reschedule(self, s: _Schedule, now: float) -> None:
        # Repeats every interval until `until`, then (with a refresh) every `refresh` seconds.
        nxt = s.due + self.timing.gratuitous_interval
        if nxt <= now:  # the shell was late: no burst of missed repeats
            nxt = now + self.timing.gratuitous_interval
        if s.until != float("inf") and nxt <= s.until:
            s.due = nxt
        elif s.refresh is not None:
            s.due, s.until = now + s.refresh, float("inf")
        else:
            s.due = float("inf")

    def _stop_reason(self, ip: addresses.IP, event: Input, detail: str) -> tuple[str, bool]:
        if event is Input.CLAIMED:
            return f"handed over ({detail} announced it)", False
        if event is Input.HANDOVER_EXPIRED:
            timeout = self.timing.handover_timeout
            return f"handover: no new owner announced it within {timeout:.1f} s", True
        if event is Input.FAILED:
            return detail, True
        target = self._targets.get(ip)
        if self._facts.isolated:
            return "isolated (wrong membership key)", True
        if target is not None and not target.interfaces:
            return f"no usable interface left: {target.why_none}", True
        owner = self._others.get(ip)
        return (f"node {owner} owns it" if owner else "no longer announced by any node"), False

    def _conflict(
        self,
        ip: addresses.IP,
        mac: str,
        services: tuple[model.ServiceKey, ...],
        now: float,
    ) -> list[Action]:
        suppressed = self._facts.suppressed
        if not self._conflicts.allow(ip, now):
            suppressed[ip] = suppressed.get(ip, 0) + 1
            return [Suppressed(ip)]
        note = (
            f"another host ({mac}) claims {ip}, which node {self.node} announces: two "
            "hosts answer for it; check for an overlapping pool or a static address"
        )
        more = suppressed.pop(ip, 0)
        if more:
            note += f" ({more} more claims since the last report)"
        return [Warn(ip, services, "AddressConflict", note)]
