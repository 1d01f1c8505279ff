"""The listener's table of peers: who gets a connection from an address, with which MD5 key,
while a peer restarted by a configuration change overlaps its predecessor. No socket is opened:
the listening sockets are stand-ins that record the keys the kernel would get."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, ip_address

import pytest

from ironlb.bgp import peers, session, sockets

ROUTER = ip_address("198.18.0.1")


class RecordingSocket:
    """Stands in for a listening socket: the last TCP MD5 key set per address."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.keys: dict[IPv4Address, bytes] = {}

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        assert (level, option) == (socket.IPPROTO_TCP, sockets.TCP_MD5SIG)
        address = IPv4Address(value[4:8])
        (keylen,) = struct.unpack_from("=H", value, 130)
        self.keys[address] = value[136 : 136 + keylen]


def listener_with(sock: RecordingSocket) -> peers.Listener:
    listener = peers.Listener([])
    listener._sockets.append(sock)  # type: ignore[arg-type]  # what __aenter__ would listen on
    return listener


def peer(listener: peers.Listener, password: str = "") -> peers.Peer:
    config = session.SessionConfig(
        local_asn=64510, router_id=IPv4Address("198.18.0.11"), peer_asn=64500
    )
    return peers.Peer(peers.PeerConfig(config, ROUTER, password=password), listener=listener)


async def test_a_stopping_peer_hands_its_address_and_key_to_its_successor() -> None:
    sock = RecordingSocket()
    listener = listener_with(sock)
    old, new = peer(listener, "old-secret"), peer(listener, "new-secret")
    with listener.registered(old):
        assert listener.peer_for(ROUTER) is old
        assert sock.keys[ROUTER] == b"old-secret"
        old.stop("configuration changed")  # its Cease may take a while to flush
        with listener.registered(new):
            assert listener.peer_for(ROUTER) is new
            assert sock.keys[ROUTER] == b"new-secret"
        # The successor ended first (stopped in turn): the address is free, the key gone.
        assert listener.peer_for(ROUTER) is None
        assert sock.keys[ROUTER] == b""


async def test_a_successor_without_password_removes_the_predecessors_key() -> None:
    sock = RecordingSocket()
    listener = listener_with(sock)
    old = peer(listener, "old-secret")
    with listener.registered(old):
        old.stop()
        with listener.registered(new := peer(listener)):
            assert listener.peer_for(ROUTER) is new
            assert sock.keys[ROUTER] == b""


async def test_the_predecessor_leaving_takes_nothing_from_its_successor() -> None:
    sock = RecordingSocket()
    listener = listener_with(sock)
    old, new = peer(listener, "old-secret"), peer(listener, "new-secret")
    registration = listener.registered(old)
    registration.__enter__()
    old.stop("configuration changed")
    with listener.registered(new):
        registration.__exit__(None, None, None)  # the old peer's run() ends: flushed
        assert listener.peer_for(ROUTER) is new
        assert sock.keys[ROUTER] == b"new-secret"
    assert listener.peer_for(ROUTER) is None
    assert sock.keys[ROUTER] == b""


async def test_two_running_peers_for_one_address_are_refused() -> None:
    listener = listener_with(RecordingSocket())
    first = peer(listener)
    with listener.registered(first):
        second = listener.registered(peer(listener))
        with pytest.raises(peers.SpeakerError, match="two peers with address"):
            second.__enter__()
        assert listener.peer_for(ROUTER) is first
