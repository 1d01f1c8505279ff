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

Lifeguard (Dadgar, Phillips, Currey, 2018; `lifeguard`, on by default) keeps that bound for a real
death while making false suspicions under heavy loss or a starved CPU rare:
- retried probes: `probe_retries` more direct PINGs, spread over the rest of the period, next to
  the PING-REQs, so one lost PING or ACK no longer decides;
- a suspicion starts at `suspicion_max_multiplier` times the suspicion timeout and shrinks to it,
  logarithmically, as independent members confirm it (up to `suspicion_confirmations`, at most
  n - 2): a real death is confirmed within a period by the next prober, so it still takes
  2T + S(n) (plus up to T for the confirmation), while a suspicion born of one member's unlucky
  losses has four times longer to be refuted;
- local health: a score from 0 to `max_health` goes up when one of our probes gets no ACK at all
  or when we must refute a suspicion of ourselves, down on every ACK; our probe timeouts and
  period are multiplied by (1 + score), so a node that cannot hear its own ACKs (starved CPU,
  lossy link) slows down its suspicions instead of spreading false ones.
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
    lifeguard: bool = True
    """Retried probes, confirmed suspicions and local health (see above); off: plain SWIM."""
    probe_retries: int = 3
    """Lifeguard: extra direct PINGs after `probe_timeout`, spread over the rest of the period."""
    suspicion_max_multiplier: float = 4.0
    """Lifeguard: an unconfirmed suspicion lasts this many times the suspicion timeout."""
    suspicion_confirmations: int = 3
    """Lifeguard: independent suspecters after which the suspicion timeout is at its minimum."""
    max_health: int = 8
    """Lifeguard: highest local health score (probe timeouts are scaled by 1 + score)."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")
        if self.indirect_probes < 0 or self.retransmit_multiplier < 1:
            raise ValueError("indirect_probes must be >= 0 and retransmit_multiplier >= 1")
        if self.suspicion_timeout <= 0:
            raise ValueError("suspicion_timeout must be positive")
        if self.probe_retries < 0 or self.suspicion_confirmations < 1 or self.max_health < 0:
            raise ValueError(
                "need probe_retries >= 0, suspicion_confirmations >= 1 and max_health >= 0"
            )
        if self.suspicion_max_multiplier < 1:
            raise ValueError("suspicion_max_multiplier must be at least 1")
        if self.max_packet_size < 576:
            raise ValueError("max_packet_size must be at least 576 (the IPv4 minimum datagram)")

    def suspicion_for(self, members: int) -> float:
        """Suspicion timeout in a cluster of `members` (Lifeguard and memberlist also grow it
        with log n: bigger clusters carry more packets per node and more chance that a node is
        briefly too busy to answer)."""
        return self.suspicion_timeout * max(1.0, math.log2(max(members, 1)) / 3)

    def suspicion_after(self, members: int, confirmations: int) -> float:
        """Lifeguard's suspicion timeout once `confirmations` members beyond the first
        suspecter have independently suspected too: from `suspicion_max_multiplier` times
        `suspicion_for(members)` down to it, logarithmically in the confirmations."""
        low = self.suspicion_for(members)
        expected = min(self.suspicion_confirmations, members - 2)
        if not self.lifeguard or expected < 1:
            return low
        high = low * self.suspicion_max_multiplier
        fraction = math.log(min(confirmations, expected) + 1) / math.log(expected + 1)
        return max(low, high - (high - low) * fraction)

    def retransmit_limit(self, members: int) -> int:
        """How many packets carry one state change (SWIM's lambda log n)."""
        return self.retransmit_multiplier * math.ceil(math.log2(members + 1))

    def detection_bound(self, members: int) -> float:
        """Worst case from a member's death to DEAD everywhere, excluding network latency
        (with Lifeguard and three members or more, one more period for the confirmation)."""
        confirming = self.probe_interval if self.lifeguard and members >= 3 else 0.0
        return 2 * self.probe_interval + self.suspicion_for(members) + confirming
