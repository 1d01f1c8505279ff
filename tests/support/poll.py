"""Waiting for a condition in tests: bounded, with the last value in the failure message."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    within: float = 15.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
    blocking: bool = False,
) -> T:
    """Poll `probe` until it returns something truthy, and return that. `probe` may be a plain
    or an async function; `blocking` runs a plain one in a thread (subprocesses, setns)."""
    deadline = time.monotonic() + within
    while True:
        result = await asyncio.to_thread(probe) if blocking else probe()
        value = cast(T, await result if inspect.isawaitable(result) else result)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within:g} s (last: {value!r})")
        await asyncio.sleep(interval)
