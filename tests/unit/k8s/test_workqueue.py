import asyncio

import pytest

from ironlb.k8s import workqueue

pytestmark = pytest.mark.looptime


async def test_keys_coalesce_and_come_out_in_order() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    for key in ("a", "b", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_a_key_added_while_active_is_processed_again_after_done() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")  # changed while a worker reconciles it
    assert len(q) == 0  # not handed to a second worker concurrently
    q.done("a")
    assert await q.get() == "a"


async def test_add_after_fires_later_and_add_wins_over_a_pending_delay() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    q.add_after("slow", 0.05)
    q.add_after("fast", 3600.0)
    q.add("fast")
    assert await q.get() == "fast"
    assert await asyncio.wait_for(q.get(), 60) == "slow"


async def test_waiting_workers_wake_on_add_and_stop_on_close() -> None:
    q: workqueue.WorkQueue[int] = workqueue.WorkQueue()
    got: list[int | None] = []

    async def worker() -> None:
        while (key := await q.get()) is not None:
            got.append(key)
            q.done(key)
        got.append(None)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(worker())
        tg.create_task(worker())
        await asyncio.sleep(0)
        for i in range(5):
            q.add(i)
        await asyncio.sleep(0.01)
        q.close()
    assert sorted(k for k in got if k is not None) == [0, 1, 2, 3, 4]
    assert got.count(None) == 2


async def test_close_drops_waiting_keys_and_counts_the_ones_in_hand() -> None:
    q: workqueue.WorkQueue[str] = workqueue.WorkQueue()
    q.add("in-hand")
    q.add("waiting")
    assert await q.get() == "in-hand"
    q.close()
    q.add("ignored")
    assert q.active == 1
    assert await q.get() is None
    q.done("in-hand")
    assert q.active == 0
    await asyncio.wait_for(q.idle(), 1)
