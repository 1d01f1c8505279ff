"""Who holds the control-plane VIP: the cpvip election core.

Sans-IO: no sockets, no clock, no asyncio; every input carries `now` (monotonic seconds) and
returns `Decision`s for the shell, which feeds "hold or not" to the layer-2 announcer core
(`ironlb.l2.announcer`) as its one-address plan, and publishes `meta` as membership meta.

Two small machines, each changed only through its table (a pair not listed raises
`IllegalTransition`):

- `HEALTH_TABLE`, the local kube-apiserver: UNKNOWN at start; `health_rise` good checks in a row
  make it UP, `health_fall` failed ones DOWN (a single lost check does not move the VIP). Only
  UP is published (meta `b"up"`): the node is a candidate.
- `ROLE_TABLE`, this node's role for the VIP, fed one `Verdict` after every change of facts:
  - WIN: this node is the rendezvous winner (`core.election`) among the candidates (live
    members publishing UP, itself included when UP and not draining);
  - LOSE: another candidate wins;
  - YIELDING (after LOSE while holding): keeps the VIP until CLAIMED by the new owner or
    EXPIRED after `handover` seconds, then STANDBY;
  - NOBODY: no candidate at all. The holder keeps the VIP (no flapping while every apiserver is
    down, and a client sees the last holder come back first); a standby takes nothing.
  - DRAIN (SIGTERM): this node stops being a candidate and hands the VIP over; the announcer
    core's handover keeps it answered until the next owner claims it or the timeout passes.

Bootstrap (`kubeadm init`): the first node is alone; as soon as its apiserver is UP it wins and
takes the VIP (after the announcer core's settle time, in which peers that already run would
have answered). Joining nodes become candidates when their apiserver is UP; a node whose
apiserver is not ready is never a candidate, so the VIP never moves to it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ironlb.core import election

HEALTHY_META = b"up"


class Health(enum.Enum):
    UNKNOWN = "Unknown"
    UP = "Up"
    DOWN = "Down"


class Check(enum.Enum):
    OK = enum.auto()
    """A good check that completes `health_rise` good ones in a row."""
    OK_COUNTING = enum.auto()
    """A good check, fewer than `health_rise` in a row so far."""
    FAIL = enum.auto()
    """A failed check that completes `health_fall` failed ones in a row."""
    FAIL_COUNTING = enum.auto()


class Role(enum.Enum):
    STANDBY = "Standby"
    """Not holding the VIP."""
    OWNER = "Owner"
    """Holding it as the winner among the candidates."""
    KEEPING = "Keeping"
    """Holding it although nobody is a candidate (every apiserver down)."""
    YIELDING = "Yielding"
    """Lost to another candidate: still holding the VIP until the new owner claims it (its
    gratuitous ARP/NA) or `handover` seconds pass, so that clients whose ARP cache names this
    node get an answer (a refusal, a quick retry) instead of a black hole meanwhile."""
    DRAINED = "Drained"
    """Stopping: handed over (or handing over); takes nothing any more."""


class Verdict(enum.Enum):
    WIN = enum.auto()
    LOSE = enum.auto()
    NOBODY = enum.auto()
    DRAIN = enum.auto()
    CLAIMED = enum.auto()
    """Another MAC claims the VIP (the new owner's gratuitous announcement)."""
    EXPIRED = enum.auto()
    """The handover time of YIELDING is over."""


class IllegalTransition(RuntimeError):
    pass


H, C, R, V = Health, Check, Role, Verdict

HEALTH_TABLE: dict[tuple[Health, Check], Health] = {
    **{(h, C.OK): H.UP for h in Health},
    **{(h, C.FAIL): H.DOWN for h in Health},
    # Counting keeps the state: UNKNOWN stays UNKNOWN until a verdict either way.
    **{(h, c): h for h in Health for c in (C.OK_COUNTING, C.FAIL_COUNTING)},
}
"""(health, check) -> next health."""


@dataclass(frozen=True, slots=True)
class Step:
    role: Role
    holds: bool
    """Whether the VIP is to be held (answered) here after the step."""


_STALE = (V.CLAIMED, V.EXPIRED)

ROLE_TABLE: dict[tuple[Role, Verdict], Step] = {
    (R.STANDBY, V.WIN): Step(R.OWNER, True),
    (R.STANDBY, V.LOSE): Step(R.STANDBY, False),
    (R.STANDBY, V.NOBODY): Step(R.STANDBY, False),
    (R.STANDBY, V.DRAIN): Step(R.DRAINED, False),
    (R.OWNER, V.WIN): Step(R.OWNER, True),
    (R.OWNER, V.LOSE): Step(R.YIELDING, True),
    (R.OWNER, V.NOBODY): Step(R.KEEPING, True),
    (R.OWNER, V.DRAIN): Step(R.DRAINED, False),
    (R.KEEPING, V.WIN): Step(R.OWNER, True),
    (R.KEEPING, V.LOSE): Step(R.YIELDING, True),
    (R.KEEPING, V.NOBODY): Step(R.KEEPING, True),
    (R.KEEPING, V.DRAIN): Step(R.DRAINED, False),
    (R.YIELDING, V.WIN): Step(R.OWNER, True),
    (R.YIELDING, V.LOSE): Step(R.YIELDING, True),
    (R.YIELDING, V.NOBODY): Step(R.KEEPING, True),
    (R.YIELDING, V.DRAIN): Step(R.DRAINED, False),
    (R.YIELDING, V.CLAIMED): Step(R.STANDBY, False),
    (R.YIELDING, V.EXPIRED): Step(R.STANDBY, False),
    # A claim while owning is a conflict (the shell warns); timers of YIELDING are stale.
    **{
        (r, v): Step(r, r in (R.OWNER, R.KEEPING))
        for r in (R.STANDBY, R.OWNER, R.KEEPING)
        for v in _STALE
    },
    **{(R.DRAINED, v): Step(R.DRAINED, False) for v in Verdict},
}
"""(role, verdict) -> next role and whether the VIP is held."""


def next_health(health: Health, check: Check) -> Health:
    found = HEALTH_TABLE.get((health, check))
    if found is None:
        raise IllegalTransition(f"{check!r} in {health.value}")
    return found


def next_role(role: Role, verdict: Verdict) -> Step:
    found = ROLE_TABLE.get((role, verdict))
    if found is None:
        raise IllegalTransition(f"{verdict!r} in {role.value}")
    return found


class HealthChecks:
    """The local kube-apiserver's health from its checks: `rise` good ones in a row make it UP,
    `fall` failed ones DOWN (`HEALTH_TABLE`); UNKNOWN until then. Both modes' cores use it."""

    def __init__(self, rise: int = 2, fall: int = 2) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise, self.fall = rise, fall
        self.health = Health.UNKNOWN
        self._good = self._bad = 0

    def checked(self, ok: bool) -> Health:
        """One check ended; the health after it."""
        if ok:
            self._good, self._bad = self._good + 1, 0
            check = Check.OK if self._good >= self.rise else Check.OK_COUNTING
        else:
            self._good, self._bad = 0, self._bad + 1
            check = Check.FAIL if self._bad >= self.fall else Check.FAIL_COUNTING
        self.health = next_health(self.health, check)
        return self.health


@dataclass(frozen=True, slots=True)
class Peer:
    """A member as the shell sees it in membership."""

    live: bool
    """ALIVE or SUSPECT."""
    meta: bytes


@dataclass(frozen=True, slots=True)
class Decision:
    """What changed; the shell applies it."""

    role: Role
    holds: bool
    owner: election.NodeName | None
    """The rendezvous winner among the candidates (None: nobody is a candidate)."""
    meta: bytes
    """This node's membership meta: `HEALTHY_META` while a candidate, else empty."""
    health: Health
    transitions: int


class Election:
    def __init__(
        self,
        name: election.NodeName,
        address: IPv4Address | IPv6Address,
        *,
        rise: int = 2,
        fall: int = 2,
        handover: float = 1.0,
    ) -> None:
        self._checks = HealthChecks(rise, fall)
        self.name = name
        self.address = address
        self.handover = handover
        self.yield_until: float | None = None
        """When YIELDING ends at the latest (the shell calls `tick` then)."""
        self.role = Role.STANDBY
        self.transitions = 0
        """Role changes so far (a metric)."""
        self._peers: dict[election.NodeName, Peer] = {}
        self._draining = False
        self._last_change = 0.0
        self._claimed_at: float | None = None

    # --- what the shell reads ---------------------------------------------------------------

    @property
    def health(self) -> Health:
        return self._checks.health

    @property
    def holds(self) -> bool:
        return self.role in (Role.OWNER, Role.KEEPING, Role.YIELDING)

    @property
    def candidate(self) -> bool:
        return self.health is Health.UP and not self._draining

    @property
    def meta(self) -> bytes:
        return HEALTHY_META if self.candidate else b""

    def candidates(self) -> tuple[election.NodeName, ...]:
        others = (n for n, p in self._peers.items() if p.live and p.meta == HEALTHY_META)
        own = (self.name,) if self.candidate else ()
        return tuple(sorted({*others, *own}))

    def owner(self) -> election.NodeName | None:
        return election.announcer_for(self.address, self.candidates())

    # --- inputs -----------------------------------------------------------------------------

    def checked(self, now: float, ok: bool) -> Decision:
        """One health check of the local kube-apiserver ended."""
        self._checks.checked(ok)
        return self._decide(now)

    def peers(self, now: float, peers: Mapping[election.NodeName, Peer]) -> Decision:
        """The other members, as membership has them now (this node excluded)."""
        self._peers = {n: p for n, p in peers.items() if n != self.name}
        return self._decide(now)

    def drain(self, now: float) -> Decision:
        """SIGTERM: stop being a candidate, hand the VIP over."""
        self._draining = True
        return self._decide(now)

    def claimed(self, now: float) -> Decision:
        """Another MAC claims the VIP. Remembered for `handover` seconds: the new owner may
        announce before this node hears that it lost (membership news is slower than ARP)."""
        self._claimed_at = now
        return self._decide(now, Verdict.CLAIMED)

    def tick(self, now: float) -> Decision:
        """Timers: the end of YIELDING."""
        if self.yield_until is not None and now >= self.yield_until:
            return self._decide(now, Verdict.EXPIRED)
        return self._decide(now)

    # --- the decision -----------------------------------------------------------------------

    def verdict(self) -> Verdict:
        if self._draining:
            return Verdict.DRAIN
        owner = self.owner()
        if owner is None:
            return Verdict.NOBODY
        return Verdict.WIN if owner == self.name else Verdict.LOSE

    def _decide(self, now: float, event: Verdict | None = None) -> Decision:
        step = next_role(self.role, event or self.verdict())
        if step.role is not self.role:
            self.transitions += 1
            self._last_change = now
        if step.role is Role.YIELDING and self.role is not Role.YIELDING:
            self.yield_until = now + self.handover
            if self._claimed_at is not None and now - self._claimed_at <= self.handover:
                self.role = step.role
                step = next_role(step.role, Verdict.CLAIMED)
                self.yield_until = None
        elif step.role is not Role.YIELDING:
            self.yield_until = None
        self.role = step.role
        return Decision(
            role=self.role,
            holds=step.holds,
            owner=self.owner(),
            meta=self.meta,
            health=self.health,
            transitions=self.transitions,
        )


def peers_from(
    members: Iterable[tuple[election.NodeName, bool, bytes]],
) -> dict[election.NodeName, Peer]:
    """(name, live, meta) triples to the peer map `Election.peers` takes."""
    return {name: Peer(live, meta) for name, live, meta in members}
