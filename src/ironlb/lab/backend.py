"""A lab backend: answers every HTTP GET with the name of the node it runs on.

Runs inside a node namespace; with `topology.emulate_kube_proxy` the node forwards service
addresses to it, so a client's answer says which node took the traffic.
"""

from __future__ import annotations

import argparse
import asyncio

from ironlb.k8s import serving


async def serve(name: str, listen: list[str], port: int) -> None:
    async def hello(_req: serving.Request) -> serving.Response:
        return serving.Response(200, f"{name}\n".encode())

    async with asyncio.TaskGroup() as tg:
        for address in listen:
            tg.create_task(serving.Server(address, port, {"/": hello}).serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--listen", action="append", required=True)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    asyncio.run(serve(args.name, args.listen, args.port))


if __name__ == "__main__":
    main()
