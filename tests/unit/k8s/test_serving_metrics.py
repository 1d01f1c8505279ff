"""The metrics endpoint counts the process's live asyncio tasks (ironlb_asyncio_tasks)."""

from __future__ import annotations

import asyncio

from ironlb.k8s import serving


def tasks_metric(body: bytes) -> float:
    for line in body.decode().splitlines():
        if line.startswith("ironlb_asyncio_tasks "):
            return float(line.split()[1])
    raise AssertionError("ironlb_asyncio_tasks not exported")


async def test_asyncio_tasks_gauge_follows_the_live_tasks() -> None:
    req = serving.Request("GET", "/metrics", "", {}, b"")
    before = tasks_metric((await serving.metrics(req)).body)
    assert before == len(asyncio.all_tasks())
    stop = asyncio.Event()
    extra = [asyncio.create_task(stop.wait()) for _ in range(7)]
    await asyncio.sleep(0)
    assert tasks_metric((await serving.metrics(req)).body) == before + 7
    stop.set()
    await asyncio.gather(*extra)
    assert tasks_metric((await serving.metrics(req)).body) == before
