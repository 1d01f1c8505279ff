import hashlib
import hmac
import random
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironlb.core import election
from ironlb.membership import model, replay, settings, states, swim, wire

KEY = b"cluster-key-0123456789abcdef"
OTHER_KEY = b"another-cluster-key-0123456789"

CLUSTER = [election.NodeName(f"node-{i}") for i in (1, 2, 3)]

# Names of members a core knows, or of anyone.
names = st.sampled_from(CLUSTER) | st.from_regex(
    r"[a-z0-9]([-a-z0-9.]{0,60}[a-z0-9])?", fullmatch=True
).map(election.NodeName)
incarnations = st.integers(0, wire.MAX_INCARNATION)
probe_ids = st.integers(0, 2**32 - 1)
metas = st.binary(max_size=model.MAX_META_SIZE)
endpoints = st.builds(
    model.Endpoint,
    ip=st.ip_addresses().map(lambda ip: IPv4Address(ip) if ip.version == 4 else IPv6Address(ip)),
    port=st.integers(0, 65535),
)
updates = st.one_of(
    st.builds(wire.Update, names, st.just(states.MemberState.ALIVE), incarnations, metas),
    st.builds(
        wire.Update,
        names,
        st.sampled_from(
            [states.MemberState.SUSPECT, states.MemberState.DEAD, states.MemberState.LEFT]
        ),
        incarnations,
    ),
)
messages = st.one_of(
    st.builds(wire.Ping, probe_ids, names),
    st.builds(wire.Ack, probe_ids, incarnations, metas),
    st.builds(wire.PingReq, probe_ids, names, endpoints),
    st.just(wire.Gossip()),
)
packets = st.builds(
    wire.Packet,
    sender=names,
    recipient=st.none() | names,
    sequence=st.integers(0, 2**64 - 1),
    message=messages,
    updates=st.lists(updates, max_size=5).map(tuple),
)


def _reason(data: bytes, keys: list[bytes]) -> wire.DropReason:
    with pytest.raises(wire.PacketRejected) as caught:
        wire.decode(data, keys)
    return caught.value.reason


def _signed(body: bytes, key: bytes = KEY) -> bytes:
    return body + hmac.new(key, body, hashlib.sha256).digest()[: wire.TAG_SIZE]


NODE_A, NODE_B = election.NodeName("node-a"), election.NodeName("node-b")
PING = wire.Packet(NODE_A, NODE_B, 7, wire.Ping(1, NODE_B))
LEGACY_PING = wire.Packet(NODE_A, None, 7, wire.Ping(1, NODE_B))


@given(packets)
def test_round_trip_and_size(packet: wire.Packet) -> None:
    data = wire.encode(packet, KEY)
    assert wire.size(packet) == len(data)
    assert wire.decode(data, [KEY]) == packet


def test_wire_layout_of_a_ping() -> None:
    data = wire.encode(PING, KEY)
    assert data[:4] == b"IL\x02\x01"
    assert data[4:12] == (7).to_bytes(8, "big")
    assert data[12:26] == b"\x06node-a\x06node-b"  # sender, recipient: both signed
    assert data[26:37] == b"\x00\x00\x00\x01\x06node-b"
    assert data[37:38] == b"\x00"  # no updates
    assert data[38:] == hmac.new(KEY, data[:38], hashlib.sha256).digest()[:16]


def test_wire_layout_of_a_legacy_ping() -> None:
    # What speakers before version 2 send: no recipient. Still decoded, for rolling upgrades.
    data = wire.encode(LEGACY_PING, KEY)
    assert wire.decode(data, [KEY]) == LEGACY_PING
    assert data[:4] == b"IL\x01\x01"
    assert data[4:12] == (7).to_bytes(8, "big")
    assert data[12:19] == b"\x06node-a"
    assert data[19:30] == b"\x00\x00\x00\x01\x06node-b"
    assert data[30:31] == b"\x00"  # no updates
    assert data[31:] == hmac.new(KEY, data[:31], hashlib.sha256).digest()[:16]


def test_any_of_the_keys_is_accepted() -> None:
    data = wire.encode(PING, OTHER_KEY)
    assert wire.decode(data, [KEY, OTHER_KEY]) == PING
    assert _reason(data, [KEY]) is wire.DropReason.BAD_MAC


def test_rejections_before_the_mac() -> None:
    data = wire.encode(PING, KEY)
    assert _reason(data[:20], [KEY]) is wire.DropReason.BAD_LENGTH
    assert _reason(b"XX" + data[2:], [KEY]) is wire.DropReason.NOT_IRONLB
    assert _reason(data[:2] + b"\x03" + data[3:], [KEY]) is wire.DropReason.UNKNOWN_VERSION
    assert _reason(data[:2] + b"\x00" + data[3:], [KEY]) is wire.DropReason.UNKNOWN_VERSION


def test_the_recipient_cannot_be_changed_or_dropped() -> None:
    data = wire.encode(PING, KEY)
    other = data[:19] + b"\x06node-c" + data[26:]
    assert _reason(other, [KEY]) is wire.DropReason.BAD_MAC
    # Nor can it be removed by calling the packet legacy: the version byte is signed.
    legacy = data[:2] + b"\x01" + data[3:19] + data[26:]
    assert _reason(legacy, [KEY]) is wire.DropReason.BAD_MAC


def test_any_flipped_bit_breaks_the_mac() -> None:
    data = wire.encode(PING, KEY)
    for index in range(3, len(data)):
        flipped = bytearray(data)
        flipped[index] ^= 0x10
        assert _reason(bytes(flipped), [KEY]) is wire.DropReason.BAD_MAC


@pytest.mark.parametrize(
    "body",
    [
        b"IL\x01\x09" + bytes(8) + b"\x01a\x00",  # unknown kind
        b"IL\x01\x04" + bytes(8) + b"\x01a\x00\x00",  # trailing byte
        b"IL\x01\x04" + bytes(8) + b"\x01a\x02",  # two updates announced, none present
        b"IL\x01\x04" + bytes(8) + b"\x00\x00",  # empty sender name
        b"IL\x02\x04" + bytes(8) + b"\x01a\x00\x00",  # empty recipient name
        b"IL\x02\x04" + bytes(8) + b"\x01a\x00",  # no recipient at all
        b"IL\x01\x04" + bytes(8) + b"\x02\xff\xfe\x00",  # sender name not UTF-8
        b"IL\x01\x04" + bytes(8) + b"\x01a\x01\x07" + bytes(4) + b"\x01b\x00",  # unknown state
        b"IL\x01\x04" + bytes(8) + b"\x01a\x01\x03" + bytes(4) + b"\x01b\x01m",  # meta on DEAD
        b"IL\x01\x02" + bytes(8) + b"\x01a" + bytes(8) + b"\x41" + bytes(65) + b"\x00",  # meta > 64
        b"IL\x01\x03"
        + bytes(8)
        + b"\x01a"
        + bytes(4)
        + b"\x01b\x05"
        + bytes(6)
        + b"\x00",  # family
    ],
)
def test_authenticated_but_malformed(body: bytes) -> None:
    assert _reason(_signed(body), [KEY]) is wire.DropReason.MALFORMED


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_packet_rejected(data: bytes) -> None:
    with pytest.raises(wire.PacketRejected):
        wire.decode(data, [KEY])


@given(st.sampled_from([1, 2]), st.binary(min_size=9, max_size=120))  # the rest of the preamble
def test_signed_garbage_raises_only_packet_rejected(version: int, garbage: bytes) -> None:
    try:
        wire.decode(_signed(b"IL" + bytes([version]) + garbage), [KEY])
    except wire.PacketRejected as rejected:
        reason = rejected.reason
    else:
        return
    assert reason is wire.DropReason.MALFORMED


@given(st.lists(packets, max_size=8))
def test_a_core_survives_any_authenticated_packet(batch: list[wire.Packet]) -> None:
    # A peer holding the key can say anything: the core must stay consistent, not crash.
    peers = {
        name: model.Endpoint(IPv4Address(f"198.18.0.{i}"), 7946)
        for i, name in enumerate(CLUSTER, 1)
    }
    core = swim.Membership(CLUSTER[0], peers[CLUSTER[0]], [KEY], random.Random(0), 0.0, 1)
    core.set_peers(peers, 0.0)
    for step, packet in enumerate(batch, 1):
        core.receive(peers[CLUSTER[1]], wire.encode(packet, KEY), step * 0.03)
        core.tick(step * 0.03)
    assert set(core.members) == set(CLUSTER)


def test_encode_refuses_what_cannot_be_decoded() -> None:
    with pytest.raises(ValueError, match="node name"):
        wire.encode(wire.Packet(election.NodeName("x" * 254), NODE_A, 1, wire.Gossip()), KEY)
    with pytest.raises(ValueError, match="node name"):
        wire.encode(wire.Packet(NODE_A, election.NodeName("x" * 254), 1, wire.Gossip()), KEY)
    with pytest.raises(ValueError, match="meta"):
        wire.encode(wire.Packet(election.NodeName("a"), NODE_A, 1, wire.Ack(1, 0, bytes(65))), KEY)


class TestReplayWindow:
    def test_each_sequence_number_is_accepted_once(self) -> None:
        window = replay.ReplayWindow()
        assert window.accept(10)
        assert not window.accept(10)
        assert window.accept(11)

    def test_reordering_within_the_window_is_accepted(self) -> None:
        window = replay.ReplayWindow()
        assert window.accept(100)
        assert window.accept(100 - replay.WINDOW + 1)
        assert not window.accept(100 - replay.WINDOW + 1)
        assert window.accept(99)

    def test_older_than_the_window_is_refused(self) -> None:
        window = replay.ReplayWindow()
        assert window.accept(100)
        assert not window.accept(100 - replay.WINDOW)

    def test_a_restart_jumps_ahead_by_wall_clock_nanoseconds(self) -> None:
        window = replay.ReplayWindow()
        assert window.accept(1_700_000_000_000_000_000)
        assert window.accept(1_700_000_000_000_000_000 + 10**12)
        assert not window.accept(1_700_000_000_000_000_000)
        assert window.seen == 1

    @given(st.lists(st.integers(0, 300), max_size=100))
    def test_never_accepts_a_number_twice(self, sequence: list[int]) -> None:
        window = replay.ReplayWindow()
        accepted = [n for n in sequence if window.accept(n)]
        assert len(accepted) == len(set(accepted))


class TestStateTable:
    def test_stale_news_never_applies(self) -> None:
        for (state, event), (guard, _) in states.TRANSITIONS.items():
            if guard is states.Guard.NEWER:
                assert states.next_state(state, 5, event, 5) is None
                assert states.next_state(state, 5, event, 6) is not None
            if guard is states.Guard.NOT_OLDER:
                assert states.next_state(state, 5, event, 4) is None
                assert states.next_state(state, 5, event, 5) is not None

    def test_nothing_goes_back_to_unconfirmed(self) -> None:
        assert all(
            target is not states.MemberState.UNCONFIRMED
            for _, target in states.TRANSITIONS.values()
        )

    def test_only_a_newer_alive_brings_a_member_back(self) -> None:
        for gone in (states.MemberState.DEAD, states.MemberState.LEFT):
            for event in (*states.MemberState, *states.Timer):
                target = states.next_state(gone, 3, event, 9)
                assert target in (None, states.MemberState.LEFT, states.MemberState.ALIVE)
            assert states.next_state(gone, 3, states.MemberState.ALIVE, 3) is None

    def test_unlisted_pairs_change_nothing(self) -> None:
        assert states.next_state(states.MemberState.DEAD, 1, states.MemberState.SUSPECT, 2) is None
        assert states.next_state(states.MemberState.LEFT, 1, states.Timer.PROBE_FAILED, 1) is None

    def test_live_states_are_the_candidates(self) -> None:
        live = {state for state in states.MemberState if state.is_live}
        assert live == {states.MemberState.ALIVE, states.MemberState.SUSPECT}


class TestSettings:
    def test_defaults_detect_within_half_a_second_in_small_clusters(self) -> None:
        plain = settings.Settings(lifeguard=False)
        assert plain.detection_bound(3) == pytest.approx(0.45)
        assert plain.detection_bound(8) == pytest.approx(0.45)
        assert plain.suspicion_for(16) == pytest.approx(0.25 * 4 / 3)
        assert plain.detection_bound(64) == pytest.approx(0.70)
        # Lifeguard waits up to one more period for a confirmation (worst case, not typical).
        config = settings.Settings()
        assert config.detection_bound(2) == pytest.approx(0.45)
        assert config.detection_bound(3) == pytest.approx(0.55)
        assert config.detection_bound(64) == pytest.approx(0.80)

    def test_suspicion_shrinks_logarithmically_with_confirmations(self) -> None:
        config = settings.Settings()
        assert config.suspicion_after(3, 0) == pytest.approx(1.0)  # 4 x 0.25, unconfirmed
        assert config.suspicion_after(3, 1) == pytest.approx(0.25)  # n - 2 = 1 confirmer
        assert config.suspicion_after(2, 0) == pytest.approx(0.25)  # nobody could confirm
        assert config.suspicion_after(8, 1) == pytest.approx(1.0 - 0.75 * 0.5)
        assert config.suspicion_after(8, 3) == config.suspicion_after(8, 9) == pytest.approx(0.25)
        assert settings.Settings(lifeguard=False).suspicion_after(8, 0) == pytest.approx(0.25)

    def test_retransmissions_grow_with_log_n(self) -> None:
        config = settings.Settings()
        assert [config.retransmit_limit(n) for n in (1, 3, 5, 50)] == [3, 6, 9, 18]

    @pytest.mark.parametrize(
        "bad",
        [
            {"probe_timeout": 0.1},
            {"probe_interval": 0.01},
            {"indirect_probes": -1},
            {"retransmit_multiplier": 0},
            {"suspicion_timeout": 0},
            {"max_packet_size": 100},
        ],
    )
    def test_rejects_inconsistent_values(self, bad: dict[str, float]) -> None:
        with pytest.raises(ValueError, match=r"must|need"):
            settings.Settings(**bad)  # type: ignore[arg-type]
