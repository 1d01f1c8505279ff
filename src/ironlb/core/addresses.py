"""IP addresses, ranges and interval sets, as integers per family.

Job: parse the address syntax of `IPAddressPool.spec.addresses` exactly as MetalLB does, and answer
the allocator's questions (which pool covers an address, how many addresses a pool holds, which is
the lowest free one) without ever enumerating a range: an IPv6 pool may be a /64.

Invariants: an `AddressRange` is one family with `first <= last`. `IntervalSet` intervals and
`UsedAddresses` runs are sorted, disjoint and never adjacent (always merged), so every query is a
bisect. IPv4 and IPv6 integers are never compared with each other: every structure is per family.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


class Family(enum.IntEnum):
    V4 = 4
    V6 = 6

    @property
    def label(self) -> str:
        return "IPv4" if self is Family.V4 else "IPv6"

    @property
    def bits(self) -> int:
        return 32 if self is Family.V4 else 128


def family_of(ip: IP) -> Family:
    return Family.V4 if ip.version == 4 else Family.V6


def to_ip(family: Family, value: int) -> IP:
    if family is Family.V4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def parse_ip(text: str) -> IP:
    """A single address as Go's net.ParseIP reads it: no zone, no surrounding space."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"{text!r} is not an IP address (zones are not allowed)")
    return ip


def is_buggy(family: Family, value: int) -> bool:
    """MetalLB's `avoidBuggyIPs` test: an IPv4 address whose last octet is 0 or 255.

    This is about the address itself, not about the network or broadcast address of the CIDR it
    came from: 10.0.1.0 and 10.0.1.255 inside 10.0.0.0/16 are both skipped, and a /30 that does
    not touch a .0 or .255 loses nothing (MetalLB `ipConfusesBuggyFirmwares`).
    """
    return family is Family.V4 and (value & 0xFF) in (0, 0xFF)


def _count_residue(first: int, last: int, residue: int) -> int:
    """How many integers in [first, last] are congruent to `residue` modulo 256."""
    return (last - residue) // 256 - (first - 1 - residue) // 256


def count_buggy(family: Family, first: int, last: int) -> int:
    if family is not Family.V4:
        return 0
    return _count_residue(first, last, 0) + _count_residue(first, last, 0xFF)


class AddressRange:
    """One entry of `spec.addresses`: a CIDR or an inclusive `start-end` range. Immutable.

    A plain class rather than a dataclass so that msgspec hands the entry's text to our parser
    instead of decoding it as an object.
    """

    __slots__ = ("family", "first", "last", "text")
    family: Family
    first: int
    last: int
    text: str
    """The entry as the user wrote it, for messages."""

    def __init__(self, family: Family, first: int, last: int, text: str) -> None:
        if first > last:
            raise ValueError("first > last")
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "last", last)
        object.__setattr__(self, "text", text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _key(self) -> tuple[Family, int, int, str]:
        return (self.family, self.first, self.last, self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AddressRange) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"AddressRange({self.text!r})"

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def contains(self, value: int) -> bool:
        return self.first <= value <= self.last

    def overlaps(self, other: AddressRange) -> bool:
        return self.family is other.family and self.first <= other.last and other.first <= self.last

    def cidrs(self) -> list[ipaddress.IPv4Network] | list[ipaddress.IPv6Network]:
        """The smallest list of CIDRs covering exactly this range, lowest first."""
        if self.family is Family.V4:
            v4 = ipaddress.IPv4Address
            return list(ipaddress.summarize_address_range(v4(self.first), v4(self.last)))
        v6 = ipaddress.IPv6Address
        return list(ipaddress.summarize_address_range(v6(self.first), v6(self.last)))

    def widest_prefix(self) -> int:
        """The shortest prefix length among `cidrs()` (what BGP aggregation is checked against)."""
        return min(net.prefixlen for net in self.cidrs())

    def __str__(self) -> str:
        return self.text


def parse_range(text: str) -> AddressRange:
    """Parse a pool entry exactly as MetalLB does (`config.ParseCIDR`).

    `a.b.c.d/n` (host bits are masked off, as Go's net.ParseCIDR does), `a.b.c.d-e.f.g.h` (space
    around either address is allowed), and the IPv6 equivalents. MetalLB does not accept a bare
    address: `10.0.0.5` must be written `10.0.0.5/32` (or `10.0.0.5-10.0.0.5`); the error says so.
    """
    if "-" in text:
        start_text, end_text = text.split("-", 1)
        try:
            start = parse_ip(start_text.strip())
            end = parse_ip(end_text.strip())
        except ValueError as e:
            raise ValueError(f"{text!r} is not a valid range: {e}") from None
        if start.version != end.version:
            raise ValueError(
                f"{text!r} is not a valid range (it mixes IPv{start.version} and IPv{end.version})"
            )
        if int(start) > int(end):
            raise ValueError(f"{text!r} is not a valid range (start after end)")
        return AddressRange(family_of(start), int(start), int(end), text)
    if "/" in text:
        address_text, prefix_text = text.split("/", 1)
        try:
            address = parse_ip(address_text)
        except ValueError as e:
            raise ValueError(f"{text!r} is not a valid CIDR: {e}") from None
        family = family_of(address)
        if not (prefix_text.isdecimal() and int(prefix_text) <= family.bits):
            raise ValueError(
                f"{text!r} is not a valid CIDR: the prefix length must be 0 to {family.bits}"
            )
        host_bits = family.bits - int(prefix_text)
        first = int(address) >> host_bits << host_bits
        return AddressRange(family, first, first + (1 << host_bits) - 1, text)
    try:
        ip = parse_ip(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a CIDR (a.b.c.d/n) nor a range (a-b)") from None
    single = f"{text}/{32 if ip.version == 4 else 128}"
    raise ValueError(f"{text!r} is a single address, not a CIDR: write {single!r}")


def find_overlaps(
    items: Iterable[tuple[AddressRange, T]],
) -> list[tuple[tuple[AddressRange, T], tuple[AddressRange, T]]]:
    """Pairs of overlapping ranges, each reported with its tag (owner, position...).

    Sweep by start: every range that overlaps an earlier one is reported once, paired with the
    earlier range that reaches furthest, so n ranges cost O(n log n) and the report names both.
    """
    ordered = sorted(items, key=lambda item: (item[0].family, item[0].first, item[0].last))
    found: list[tuple[tuple[AddressRange, T], tuple[AddressRange, T]]] = []
    reach: tuple[AddressRange, T] | None = None
    for item in ordered:
        if reach is not None and reach[0].overlaps(item[0]):
            found.append((reach, item))
        if reach is None or reach[0].family is not item[0].family or item[0].last > reach[0].last:
            reach = item
    return found


class IntervalSet:
    """An immutable union of ranges of one family, merged into disjoint sorted intervals."""

    __slots__ = ("_ends", "_starts", "family")

    def __init__(self, family: Family, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.family = family
        starts: list[int] = []
        ends: list[int] = []
        for first, last in sorted(ranges):
            if starts and first <= ends[-1] + 1:
                ends[-1] = max(ends[-1], last)
            else:
                starts.append(first)
                ends.append(last)
        self._starts = tuple(starts)
        self._ends = tuple(ends)

    @classmethod
    def of(cls, family: Family, ranges: Iterable[AddressRange]) -> IntervalSet:
        return cls(family, ((r.first, r.last) for r in ranges if r.family is family))

    def union(self, other: IntervalSet) -> IntervalSet:
        if other.family is not self.family:
            raise ValueError("cannot mix IPv4 and IPv6 intervals")
        return IntervalSet(self.family, [*self.intervals(), *other.intervals()])

    def intervals(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def contains(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def count(self, *, avoid_buggy: bool = False) -> int:
        total = 0
        for first, last in self.intervals():
            total += last - first + 1
            if avoid_buggy:
                total -= count_buggy(self.family, first, last)
        return total

    def __bool__(self) -> bool:
        return bool(self._starts)


class RangeIndex(Generic[T]):
    """Which owner covers an address, for non-overlapping ranges (pools never overlap)."""

    __slots__ = ("_entries", "_starts")

    def __init__(self, items: Iterable[tuple[AddressRange, T]]) -> None:
        entries = sorted(
            ((r.family, r.first, r.last, owner) for r, owner in items), key=lambda e: e[:3]
        )
        for before, after in itertools.pairwise(entries):
            if before[0] is after[0] and after[1] <= before[2]:
                raise ValueError("ranges overlap: validate the configuration first")
        self._entries = entries
        self._starts = [(family, first) for family, first, _, _ in entries]

    def find(self, family: Family, value: int) -> T | None:
        i = bisect_right(self._starts, (family, value)) - 1
        if i < 0:
            return None
        entry_family, _, last, owner = self._entries[i]
        return owner if entry_family is family and value <= last else None


class UsedAddresses:
    """A mutable set of addresses of one family, kept as merged runs for fast 'first free'.

    `first_free` costs one bisect per run or buggy address it has to jump over, never a scan of
    the used addresses: with 10 000 consecutive addresses in use it still answers in one step.
    """

    __slots__ = ("_count", "_ends", "_starts", "family")

    def __init__(self, family: Family) -> None:
        self.family = family
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value <= self._ends[i]

    def __iter__(self) -> Iterator[int]:
        for first, last in zip(self._starts, self._ends, strict=True):
            yield from range(first, last + 1)

    def add(self, value: int) -> None:
        i = bisect_right(self._starts, value) - 1
        if i >= 0 and value <= self._ends[i]:
            return
        joins_left = i >= 0 and self._ends[i] == value - 1
        joins_right = i + 1 < len(self._starts) and self._starts[i + 1] == value + 1
        if joins_left and joins_right:
            self._ends[i] = self._ends[i + 1]
            del self._starts[i + 1], self._ends[i + 1]
        elif joins_left:
            self._ends[i] = value
        elif joins_right:
            self._starts[i + 1] = value
        else:
            self._starts.insert(i + 1, value)
            self._ends.insert(i + 1, value)
        self._count += 1

    def discard(self, value: int) -> None:
        i = bisect_right(self._starts, value) - 1
        if i < 0 or value > self._ends[i]:
            return
        first, last = self._starts[i], self._ends[i]
        if first == last:
            del self._starts[i], self._ends[i]
        elif value == first:
            self._starts[i] = value + 1
        elif value == last:
            self._ends[i] = value - 1
        else:
            self._ends[i] = value - 1
            self._starts.insert(i + 1, value + 1)
            self._ends.insert(i + 1, last)
        self._count -= 1

    def first_free(self, first: int, last: int, *, avoid_buggy: bool = False) -> int | None:
        """The lowest address in [first, last] not in the set (and not buggy if asked)."""
        candidate = first
        while candidate <= last:
            i = bisect_right(self._starts, candidate) - 1
            if i >= 0 and candidate <= self._ends[i]:
                candidate = self._ends[i] + 1
                continue
            if avoid_buggy and is_buggy(self.family, candidate):
                candidate += 1
                continue
            return candidate
        return None
