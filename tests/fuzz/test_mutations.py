"""A fast mutation fuzzer beside the hypothesis tests: every network decoder gets 10^5 inputs
in CI time (`IRONLB_FUZZ_MUTATIONS` sets how many; `make fuzz` runs 10^6 each).

Hypothesis spends most of its time generating and shrinking; this loop spends it decoding. Each
input is a valid encoding (the seeds of test_decoders) damaged the ways AFL damages its inputs,
one to six times over: bits flipped, bytes set to random or boundary values, 16- and 32-bit
fields set to boundary values (0, 1, max, the input's own length and its neighbours), ranges cut
out, duplicated or inserted, the input truncated, spliced with another seed; and one input in
sixteen is random bytes. The decoder may accept an input or raise its own "malformed" error;
anything else fails the test with the input that caused it, in hex. Deterministic for a given
`IRONLB_FUZZ_SEED` (default 0), so a failure reproduces.

The counts of accepted and rejected inputs are checked too: a fuzzer whose every input is
rejected at the first byte tests nothing past it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable

import pytest

from fuzz import test_decoders as corpus
from ironlb.bgp import attributes, bfd, errors, messages
from ironlb.l2 import arp, frames, ndp
from ironlb.l2 import errors as l2_errors
from ironlb.membership import wire

MUTATIONS = int(os.environ.get("IRONLB_FUZZ_MUTATIONS", "100000"))
SEED = int(os.environ.get("IRONLB_FUZZ_SEED", "0"))
INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_16 = (0, 1, 0x7FFF, 0x8000, 0xFFFF)
INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def mutate(rng: random.Random, seeds: list[bytes], keep: int) -> bytes:
    """One seed, damaged 1-6 times; its first `keep` bytes (a marker checked first) stay
    intact, except in the random inputs."""
    if rng.random() < 1 / 16:
        return rng.randbytes(rng.randrange(0, 300))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        span = len(data) - keep
        op = rng.randrange(10)
        if span <= 0 and op not in (6, 9):
            op = 6
        if op == 0:  # flip a bit
            at = keep + rng.randrange(span)
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:  # a random byte
            data[keep + rng.randrange(span)] = rng.randrange(256)
        elif op == 2:  # a boundary byte
            data[keep + rng.randrange(span)] = rng.choice(INTERESTING_8)
        elif op == 3 and span >= 2:  # a 16-bit field: boundaries, or a length near the real one
            at = keep + rng.randrange(span - 1)
            value = rng.choice((*INTERESTING_16, len(data), len(data) - at, rng.randrange(-4, 5)))
            data[at : at + 2] = (value & 0xFFFF).to_bytes(2, "big")
        elif op == 4 and span >= 4:  # a 32-bit field
            at = keep + rng.randrange(span - 3)
            data[at : at + 4] = rng.choice(INTERESTING_32).to_bytes(4, "big")
        elif op == 5:  # cut a range out
            at = keep + rng.randrange(span)
            del data[at : at + rng.randint(1, 16)]
        elif op == 6:  # insert random bytes
            at = keep + rng.randrange(span + 1) if span > 0 else len(data)
            data[at:at] = rng.randbytes(rng.randint(1, 32))
        elif op == 7:  # duplicate a range
            at = keep + rng.randrange(span)
            piece = data[at : at + rng.randint(1, 32)]
            where = keep + rng.randrange(span + 1)
            data[where:where] = piece
        elif op == 8:  # truncate
            del data[keep + rng.randrange(span) :]
        else:  # splice: this input's head, another seed's tail
            other = rng.choice(seeds)
            cut = rng.randrange(len(data) + 1)
            data = data[:cut] + other[rng.randrange(len(other) + 1) :]
    return bytes(data)


def run(
    name: str,
    seeds: list[bytes],
    decode: Callable[[bytes], object],
    malformed: type[Exception] | tuple[type[Exception], ...],
    *,
    keep: int = 0,
    transform: Callable[[bytes], bytes] | None = None,
    count: int = MUTATIONS,
) -> tuple[int, int]:
    """Decode `count` inputs; return (accepted, rejected). Fails on any other exception."""
    rng = random.Random(f"{SEED}-{name}")
    accepted = rejected = 0
    started, cpu = time.monotonic(), time.process_time()
    for _ in range(count):
        data = mutate(rng, seeds, keep)
        if transform is not None:
            data = transform(data)
        try:
            decode(data)
        except malformed:
            rejected += 1
            continue
        except Exception as e:
            pytest.fail(f"{name}: {type(e).__name__}: {e} on input {data.hex()}")
        accepted += 1
    took, cpu = time.monotonic() - started, time.process_time() - cpu
    print(
        f"{name}: {count} inputs in {took:.1f} s ({cpu:.1f} s CPU), "
        f"{accepted} accepted, {rejected} rejected"
    )
    # Both paths were reached: the mutations are neither all fatal nor all harmless.
    assert accepted > count // 1000, (accepted, rejected)
    assert rejected > count // 1000, (accepted, rejected)
    return accepted, rejected


def test_ethernet_frames() -> None:
    run("ethernet", corpus.FRAME_SEEDS, frames.decode_frame, l2_errors.MalformedFrame)


def test_arp() -> None:
    run("arp", corpus.ARP_SEEDS, arp.decode, l2_errors.MalformedFrame)


def test_ndp() -> None:
    run("ndp", corpus.NDP_SEEDS, ndp.decode, l2_errors.MalformedFrame)


@pytest.mark.parametrize("four_octet", [True, False])
def test_bgp_messages(four_octet: bool) -> None:
    ctx = corpus.FOUR if four_octet else corpus.TWO
    run(
        f"bgp-messages-{'four' if four_octet else 'two'}-octet",
        corpus.BGP_SEEDS,
        lambda d: messages.decode(d, ctx),
        errors.BgpError,
        keep=16,  # the marker: past it is where the parsing is
        count=MUTATIONS // 2,  # each decoder gets MUTATIONS inputs: half in each context
    )


@pytest.mark.parametrize("four_octet", [True, False])
def test_bgp_path_attributes(four_octet: bool) -> None:
    ctx = corpus.FOUR if four_octet else corpus.TWO
    run(
        f"bgp-attributes-{'four' if four_octet else 'two'}-octet",
        corpus.ATTRIBUTE_SEEDS,
        lambda d: attributes.unpack_all(d, ctx),
        errors.BgpError,
        count=MUTATIONS // 2,
    )


def test_bfd() -> None:
    run("bfd", corpus.BFD_SEEDS, bfd.decode, bfd.BfdError)


def test_membership_signed() -> None:
    """Packets signed again after the damage (a key holder may send anything): the body
    decoder is what gets fuzzed, not only the signature check."""
    run(
        "membership",
        corpus.MEMBER_SEEDS,
        lambda d: wire.decode(d, [corpus.KEY]),
        wire.PacketRejected,
        keep=4,
        transform=corpus._resigned,
    )
