"""Membership timings and limits, with defaults for a LAN and the failure-detection bound.

The defaults aim at the design target of failover in under one second. Round trips between
speakers on a LAN take well under a millisecond, so the timeouts below are dominated by what a
busy Python process may take to answer (scheduling, GC pauses of tens of milliseconds), not by
the network.

How fast a dead node is declared dead, in a converged cluster of n members, T = probe_interval,
S(n) = `suspicion_for(n)`:
- every live member is probed at the start of every period by its ring predecessor (next to the
  round-robin probe of SWIM), so the first probe that goes unanswered starts within T;
- that probe (direct, then relayed by up to `indirect_probes` others) is given until the end of
  its period, T, before the member becomes SUSPECT;
- after S(n) without a refutation it is DEAD, and the predecessor pushes that to every member at
  once.
So every member declares it DEAD within 2T + S(n) plus one network hop: 450 ms for n <= 8 with the
defaults (typically ~400 ms, as death falls anywhere within a period). A single lost packet
cannot kill anyone: it costs at most a relayed probe; even a lost probe and all its relays only
start a suspicion, and the suspect is probed again (and told it is suspected) every period until
the timeout, which gives it three periods to refute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    probe_interval: float = 0.100
    """Protocol period T in seconds: each period starts probes, which must succeed within it."""
    probe_timeout: float = 0.040
    """Seconds to wait for a direct ACK before asking others to probe (leaves 60 ms to relay)."""
    indirect_probes: int = 3
    """k: members asked to probe on our behalf when a direct probe goes unanswered."""
    suspicion_timeout: float = 0.250
    """Seconds a suspect has to refute before it is dead, for n <= 8; scaled by log2(n)/3 above."""
    retransmit_multiplier: int = 3
    """lambda: each state change is piggy-backed on lambda * ceil(log2(n + 1)) packets."""
    max_packet_size: int = 1400
    """Largest datagram built, in bytes: fits a 1500-byte MTU under IPv6 and UDP headers."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")
        if self.indirect_probes < 0 or self.retransmit_multiplier < 1:
            raise ValueError("indirect_probes must be >= 0 and retransmit_multiplier >= 1")
        if self.suspicion_timeout <= 0:
            raise ValueError("suspicion_timeout must be positive")
        if self.max_packet_size < 576:
            raise ValueError("max_packet_size must be at least 576 (the IPv4 minimum datagram)")

    def suspicion_for(self, members: int) -> float:
        """Suspicion timeout in a cluster of `members` (Lifeguard and memberlist also grow it
        with log n: bigger clusters carry more packets per node and more chance that a node is
        briefly too busy to answer)."""
        return self.suspicion_timeout * max(1.0, math.log2(max(members, 1)) / 3)

    def retransmit_limit(self, members: int) -> int:
        """How many packets carry one state change (SWIM's lambda log n)."""
        return self.retransmit_multiplier * math.ceil(math.log2(members + 1))

    def detection_bound(self, members: int) -> float:
        """Worst case from a member's death to DEAD everywhere, excluding network latency."""
        return 2 * self.probe_interval + self.suspicion_for(members)
