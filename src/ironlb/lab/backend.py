"""A lab backend: answers every HTTP GET, and every UDP datagram, with the name it was given
(its node's name, or its pod's and node's).

In the process lab it runs inside a node namespace and `topology.emulate_kube_proxy` forwards
service addresses to it; on real nodes it is the demo Deployment's container (ironlb's image),
behind kube-proxy. Either way a client's answer says which node (and pod) took the traffic. The
UDP echo answers one datagram with one datagram: a client bounds its own traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from typing import cast

from ironlb.k8s import serving


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.answer = f"{name}\n".encode()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (not a DatagramTransport subclass on every Python).
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.transport is not None:
            self.transport.sendto(self.answer, addr)


async def serve(name: str, listen: list[str], port: int, udp_port: int | None = None) -> None:
    async def hello(_req: serving.Request) -> serving.Response:
        return serving.Response(200, f"{name}\n".encode())

    loop = asyncio.get_running_loop()
    transports: list[asyncio.DatagramTransport] = []
    try:
        if udp_port is not None:
            for address in listen:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Echo(name), local_addr=(address, udp_port), family=family
                )
                transports.append(transport)
        async with asyncio.TaskGroup() as tg:
            for address in listen:
                tg.create_task(serving.Server(address, port, {"/": hello}).serve())
    finally:
        for t in transports:
            t.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--udp-port", type=int, default=None, help="also echo UDP on this port")
    args = parser.parse_args()
    # As a container's PID 1 it gets no default SIGTERM action: without this, a deleted pod
    # would keep serving (a terminating, serving endpoint) for its whole grace period.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(serve(args.name, args.listen, args.port, args.udp_port))


if __name__ == "__main__":
    main()
