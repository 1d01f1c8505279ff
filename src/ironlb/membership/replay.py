"""Anti-replay window over a sender's packet sequence numbers (as IPsec's, RFC 4303 §3.4.3).

A sequence number is accepted once: when it is the highest seen so far, or when it is one of the
`WINDOW - 1` numbers below the highest and was not seen yet (UDP may reorder). Anything older is
refused, so a captured packet cannot be played back later, e.g. to resurrect a dead node.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = 64


@dataclass(slots=True)
class ReplayWindow:
    highest: int = -1
    seen: int = 0
    """Bit i set: sequence number `highest - i` was accepted."""

    def accept(self, sequence: int) -> bool:
        """True (and remembered) the first time `sequence` shows up within the window."""
        if sequence > self.highest:
            shift = sequence - self.highest
            # Shifting only by less than the window keeps `seen` small whatever the jump.
            self.seen = (self.seen << shift | 1) & (1 << WINDOW) - 1 if shift < WINDOW else 1
            self.highest = sequence
            return True
        age = self.highest - sequence
        if age >= WINDOW or self.seen >> age & 1:
            return False
        self.seen |= 1 << age
        return True
