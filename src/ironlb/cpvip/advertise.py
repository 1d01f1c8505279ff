"""Whether this node advertises the control-plane VIP over BGP: the cpvip bgp-mode core.

Sans-IO: no sockets, no clock, no asyncio; every input carries `now` (monotonic seconds) and
returns a `Decision` saying whether the host route is advertised and whether the VIP is on this
node (on `lo`, so that the kernel accepts what the router sends to it).

No election: every node whose local kube-apiserver is healthy advertises, and the router spreads
the clients over them by ECMP. Health is the ARP mode's machine (`election.HEALTH_TABLE`,
`health_rise` good checks make it UP, `health_fall` failed ones DOWN; UNKNOWN at start counts as
not healthy). This node's state changes only through `TABLE` (a pair not listed raises
`election.IllegalTransition`):

- WITHDRAWN: no route, no address;
- ADVERTISED: the address, then the route (the address is added first, so that the first packet
  the router sends is accepted);
- DRAINING: the route is withdrawn (the apiserver turned unhealthy), the address stays for
  `drain` seconds: packets the router sent before it heard of the withdrawal still reach this
  node and get an answer (a refusal at worst, which a client retries at once) rather than
  vanishing (a lost SYN costs a client a one-second retransmission);
- STOPPING (SIGTERM): withdrawn, the address kept for `drain` seconds, then STOPPED (no route,
  no address: the shell ends its sessions and exits).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ironlb.cpvip import election


class State(enum.Enum):
    WITHDRAWN = "Withdrawn"
    ADVERTISED = "Advertised"
    DRAINING = "Draining"
    STOPPING = "Stopping"
    STOPPED = "Stopped"


class Input(enum.Enum):
    UP = enum.auto()
    """The local apiserver is healthy."""
    NOT_UP = enum.auto()
    """It is unhealthy or not known yet."""
    STOP = enum.auto()
    EXPIRED = enum.auto()
    """The drain time is over."""


S, In = State, Input

TABLE: dict[tuple[State, Input], State] = {
    (S.WITHDRAWN, In.UP): S.ADVERTISED,
    (S.WITHDRAWN, In.NOT_UP): S.WITHDRAWN,
    (S.WITHDRAWN, In.STOP): S.STOPPED,
    (S.WITHDRAWN, In.EXPIRED): S.WITHDRAWN,
    (S.ADVERTISED, In.UP): S.ADVERTISED,
    (S.ADVERTISED, In.NOT_UP): S.DRAINING,
    (S.ADVERTISED, In.STOP): S.STOPPING,
    (S.ADVERTISED, In.EXPIRED): S.ADVERTISED,
    (S.DRAINING, In.UP): S.ADVERTISED,
    (S.DRAINING, In.NOT_UP): S.DRAINING,
    (S.DRAINING, In.STOP): S.STOPPING,
    (S.DRAINING, In.EXPIRED): S.WITHDRAWN,
    (S.STOPPING, In.UP): S.STOPPING,
    (S.STOPPING, In.NOT_UP): S.STOPPING,
    (S.STOPPING, In.STOP): S.STOPPING,
    (S.STOPPING, In.EXPIRED): S.STOPPED,
    **{(S.STOPPED, i): S.STOPPED for i in Input},
}
"""(state, input) -> next state."""

ADVERTISES = frozenset({S.ADVERTISED})
HOLDS_ADDRESS = frozenset({S.ADVERTISED, S.DRAINING, S.STOPPING})


def next_state(state: State, event: Input) -> State:
    found = TABLE.get((state, event))
    if found is None:
        raise election.IllegalTransition(f"{event!r} in {state.value}")
    return found


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    health: election.Health
    transitions: int
    """Changes of advertising so far (a metric)."""

    @property
    def advertise(self) -> bool:
        return self.state in ADVERTISES

    @property
    def address(self) -> bool:
        return self.state in HOLDS_ADDRESS

    @property
    def stopped(self) -> bool:
        return self.state is State.STOPPED


class Advertiser:
    def __init__(self, *, rise: int = 2, fall: int = 2, drain: float = 1.0) -> None:
        if drain < 0:
            raise ValueError("drain must not be negative")
        self._checks = election.HealthChecks(rise, fall)
        self.drain = drain
        self.state = State.WITHDRAWN
        self.transitions = 0
        self.drain_until: float | None = None
        """When DRAINING or STOPPING ends (the shell calls `tick` then)."""

    @property
    def health(self) -> election.Health:
        return self._checks.health

    def next_deadline(self) -> float | None:
        return self.drain_until

    def checked(self, now: float, ok: bool) -> Decision:
        """One health check of the local kube-apiserver ended."""
        up = self._checks.checked(ok) is election.Health.UP
        return self._step(now, In.UP if up else In.NOT_UP)

    def stop(self, now: float) -> Decision:
        """SIGTERM: withdraw at once, keep the address for `drain` seconds, then stop."""
        return self._step(now, In.STOP)

    def tick(self, now: float) -> Decision:
        """Timers: the end of the drain time (nothing happens before it)."""
        if self.drain_until is not None and now >= self.drain_until:
            return self._step(now, In.EXPIRED)
        return self._decision()

    def _step(self, now: float, event: Input) -> Decision:
        before = self.state
        after = next_state(before, event)
        if (before in ADVERTISES) != (after in ADVERTISES):
            self.transitions += 1
        if after in (S.DRAINING, S.STOPPING):
            if before not in (S.DRAINING, S.STOPPING):
                self.drain_until = now + self.drain
            if self.drain_until is not None and now >= self.drain_until:
                # A zero drain (or one that is over already): no need to wait for a tick.
                after = next_state(after, In.EXPIRED)
        if after not in (S.DRAINING, S.STOPPING):
            self.drain_until = None
        self.state = after
        return self._decision()

    def _decision(self) -> Decision:
        return Decision(self.state, self.health, self.transitions)
