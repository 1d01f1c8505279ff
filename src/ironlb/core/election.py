"""Announcer election: which node announces an address on layer 2.

Every speaker computes the answer on its own, from the same inputs, and must get the same result:
the winner for an address is the candidate with the highest rendezvous (highest-random-weight)
hash of (node, address). The election is per address, not per Service, so Services sharing an
address always land on one node.

Invariants:
- Deterministic across processes, hosts and Python versions: the weight is a personalised
  BLAKE2b digest, never Python's per-process salted `hash()`. Changing the weight function is a
  wire-compatibility change (speakers of two versions would elect different owners), which is why
  a test pins known answers.
- Independent of the order and multiplicity of the candidates.
- Minimal disruption: removing a node moves only the addresses it owned; adding a node moves
  addresses only onto that node.
- Ties (64-bit weight collisions) go to the lexicographically smallest node name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from ipaddress import IPv4Address, IPv6Address
from typing import NewType, TypeAlias

NodeName = NewType("NodeName", str)
"""A Kubernetes Node name: the identity of a speaker."""

Address: TypeAlias = IPv4Address | IPv6Address

_PERSONALIZATION = b"ironlb-elect-v1"


def _weight(node: NodeName, address: Address) -> int:
    # The packed address has a fixed length per address, so the input is injective in the node
    # name for a given address, which is all the comparison needs.
    digest = hashlib.blake2b(
        address.packed + node.encode("utf-8"), digest_size=8, person=_PERSONALIZATION
    ).digest()
    return int.from_bytes(digest, "big")


def _best_first(address: Address) -> Callable[[NodeName], tuple[int, str]]:
    return lambda node: (-_weight(node, address), node)


def ranking(address: Address, candidates: Iterable[NodeName]) -> tuple[NodeName, ...]:
    """Distinct candidates, best first: `[0]` announces `address`, `[1]` takes over if it goes."""
    return tuple(sorted(set(candidates), key=_best_first(address)))


def announcer_for(address: Address, candidates: Iterable[NodeName]) -> NodeName | None:
    """The node that announces `address`, or None when there is no candidate."""
    return min(candidates, key=_best_first(address), default=None)
