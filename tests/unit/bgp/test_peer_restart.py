"""A session waiting out its idle-hold backoff when the peer connects (a restarted router): it
restarts on that connection alone. An outgoing attempt of its own would collide with it, and
the two sides may resolve a collision differently (ironlb keeps a connection it saw reach
Established, the router the one the BGP Identifiers pick while its side is in OpenConfirm), so
that both connections close and the session flaps. No connection is made: the connection's
transport is a stand-in, and the socket factory records any attempt."""

from __future__ import annotations

import asyncio
import socket
from ipaddress import IPv4Address, ip_address
from typing import Any

from ironlb.bgp import fsm, messages, peers, session

ROUTER = ip_address("198.18.0.1")
NODE = "198.18.0.11"


class Transport:
    """Stands in for the accepted connection's transport: records what is written."""

    def __init__(self) -> None:
        self.written = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # only for its TTL

    def get_extra_info(self, name: str) -> Any:
        return {"sockname": (NODE, 179), "peername": (str(ROUTER), 40000), "socket": self.sock}[
            name
        ]

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.sock.close()

    abort = close


async def test_a_peer_connecting_during_the_backoff_gets_no_colliding_attempt() -> None:
    attempts: list[tuple[int, int]] = []

    def socket_factory(family: int, kind: int) -> socket.socket:
        attempts.append((family, kind))
        raise OSError("no network in unit tests")

    config = session.SessionConfig(local_asn=64510, router_id=IPv4Address(NODE), peer_asn=64500)
    listener = peers.Listener([])
    peer = peers.Peer(
        peers.PeerConfig(config, ROUTER), listener=listener, socket_factory=socket_factory
    )
    transport = Transport()
    conn = peers._Connection(lambda _: None, outbound=False)
    async with asyncio.TaskGroup() as tasks:
        # As run() leaves it after a session failed: started, its core Idle (the backoff).
        peer._tasks, peer._started = tasks, True
        assert peer.state is fsm.State.IDLE
        conn.connection_made(transport)  # type: ignore[arg-type]  # a stand-in transport
        assert peer._accept(conn)
        await asyncio.sleep(0)  # an attempt task, had one been made, would run now
        assert peer.state is fsm.State.OPEN_SENT
        assert transport.written[messages.HEADER_SIZE - 1] == messages.MessageType.OPEN
        assert attempts == []
        peer.close()
    transport.close()
