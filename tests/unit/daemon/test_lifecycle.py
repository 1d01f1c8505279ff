"""The daemons' lifecycle: phases in order, unwinding in reverse, a second signal forces the exit,
a failure anywhere unwinds what started. Virtual time (looptime): nothing here sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest

from ironlb.daemon import lifecycle

pytestmark = pytest.mark.looptime

TERM = signal.SIGTERM


class _Daemon:
    """A daemon whose phases and contexts write what happens into `seen`."""

    def __init__(self, **kwargs: object) -> None:
        self.life = lifecycle.Lifecycle("test", **kwargs)  # type: ignore[arg-type]
        self.seen: list[str] = []

    @contextlib.asynccontextmanager
    async def context(self, name: str) -> AsyncIterator[None]:
        self.seen.append(f"enter {name}")
        try:
            yield
        finally:
            self.seen.append(f"exit {name}")

    async def forever(self, name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.seen.append(f"cancelled {name}")
            raise

    def phase(self, name: str, *then: str) -> lifecycle.Phase:
        """A phase that notes its name, then does `then`: "enter X", "start X", "signal",
        "raise", "hang", "exit"."""

        async def step() -> None:
            self.seen.append(name)
            for what in then:
                verb, _, arg = what.partition(" ")
                if verb == "enter":
                    await self.life.enter(self.context(arg))
                elif verb == "start":
                    self.life.start(arg, self.forever(arg))
                    await asyncio.sleep(0)  # let it start
                elif verb == "signal":
                    asyncio.get_running_loop().call_soon(self.life.handle_signal, TERM)
                elif verb == "raise":
                    raise RuntimeError(name)
                elif verb == "exit":
                    raise lifecycle.Exit(3, "told to")
                elif verb == "hang":
                    await asyncio.Event().wait()

        return lifecycle.Phase(name, step)


async def test_phases_run_in_order_and_what_started_unwinds_in_reverse() -> None:
    d = _Daemon()
    startup = [d.phase("a", "enter A", "start T"), d.phase("b", "enter B", "signal")]

    async def handover() -> None:
        # The shutdown phases run while everything started is still there.
        d.seen.append("handover")
        assert d.seen[-2] == "enter B"
        assert "exit B" not in d.seen
        assert "cancelled T" not in d.seen

    shutdown = [lifecycle.Phase("handover", handover), d.phase("leave")]
    assert await d.life.serve(startup, shutdown) == 0
    assert d.seen == [
        "a",
        "enter A",
        "b",
        "enter B",
        "handover",
        "leave",
        "exit B",
        "cancelled T",
        "exit A",
    ]
    assert d.life.phase == "stopped"


async def test_a_real_sigterm_starts_the_graceful_shutdown() -> None:
    d = _Daemon()

    async def kill() -> None:
        os.kill(os.getpid(), TERM)

    startup = [d.phase("a", "enter A"), lifecycle.Phase("kill", kill)]
    assert await d.life.serve(startup, [d.phase("handover")]) == 0
    assert d.seen == ["a", "enter A", "handover", "exit A"]
    # The handler is gone afterwards (a later SIGTERM is the default's again).
    assert signal.getsignal(TERM) is signal.SIG_DFL


async def test_a_second_signal_cuts_the_shutdown_short() -> None:
    d = _Daemon()
    startup = [d.phase("a", "enter A", "start T", "signal")]
    shutdown = [d.phase("handover", "signal", "hang"), d.phase("leave")]
    assert await d.life.serve(startup, shutdown) == lifecycle.FORCED
    assert d.seen == ["a", "enter A", "handover", "cancelled T", "exit A"]


async def test_a_second_signal_cuts_a_hanging_unwind_short() -> None:
    d = _Daemon()

    @contextlib.asynccontextmanager
    async def stuck() -> AsyncIterator[None]:
        yield
        d.seen.append("stuck")
        asyncio.get_running_loop().call_soon(d.life.handle_signal, TERM)
        await asyncio.Event().wait()

    async def enter_stuck() -> None:
        await d.life.enter(stuck())

    startup = [d.phase("a", "enter A"), lifecycle.Phase("b", enter_stuck), d.phase("c", "signal")]
    assert await d.life.serve(startup, [d.phase("handover")]) == lifecycle.FORCED
    assert d.seen == ["a", "enter A", "c", "handover", "stuck", "exit A"]


async def test_a_failing_startup_phase_unwinds_what_started() -> None:
    d = _Daemon()
    startup = [
        d.phase("a", "enter A", "start T"),
        d.phase("b", "enter B", "raise"),
        d.phase("c", "enter C"),
    ]
    with pytest.raises(RuntimeError, match="b"):
        await d.life.serve(startup, [d.phase("handover")])
    assert d.seen == ["a", "enter A", "b", "enter B", "exit B", "cancelled T", "exit A"]


async def test_a_signal_during_startup_cancels_it_without_a_shutdown() -> None:
    # Waiting for caches that never list: SIGTERM must still end the process, and with nothing
    # served yet there is nothing to hand over.
    d = _Daemon()
    startup = [d.phase("a", "enter A", "start T", "signal", "hang"), d.phase("b")]
    assert await d.life.serve(startup, [d.phase("handover")]) == 0
    assert d.seen == ["a", "enter A", "cancelled T", "exit A"]


async def test_a_failing_task_stops_the_daemon_without_the_shutdown_phases() -> None:
    d = _Daemon()

    async def broken() -> None:
        await asyncio.sleep(1)
        raise ValueError("bug")

    async def start_broken() -> None:
        d.life.start("broken", broken())

    startup = [d.phase("a", "enter A", "start T"), lifecycle.Phase("b", start_broken)]
    with pytest.raises(ValueError, match="bug"):
        await d.life.serve(startup, [d.phase("handover")])
    assert d.seen == ["a", "enter A", "cancelled T", "exit A"]


async def test_exit_from_a_task_ends_with_its_status() -> None:
    d = _Daemon()

    async def lose() -> None:
        await asyncio.sleep(1)
        raise lifecycle.Exit(1, "lost leadership")

    async def start() -> None:
        d.life.start("lead", lose())

    startup = [d.phase("a", "enter A"), lifecycle.Phase("b", start)]
    assert await d.life.serve(startup, [d.phase("handover")]) == 1
    assert d.seen == ["a", "enter A", "exit A"]


async def test_a_failing_shutdown_phase_does_not_skip_the_next() -> None:
    d = _Daemon()
    startup = [d.phase("a", "enter A", "signal")]
    shutdown = [d.phase("handover", "raise"), d.phase("leave")]
    with pytest.raises(RuntimeError, match="handover"):
        await d.life.serve(startup, shutdown)
    assert d.seen == ["a", "enter A", "handover", "leave", "exit A"]


async def test_shutdown_phases_end_with_the_grace_period() -> None:
    d = _Daemon(grace=10.0)
    startup = [d.phase("a", "enter A", "signal")]
    shutdown = [
        lifecycle.Phase("flush", d.phase("flush", "hang").step, timeout=2.0),
        d.phase("handover", "hang"),
        d.phase("leave"),
    ]
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await d.life.serve(startup, shutdown) == 0
    # The slow flush is given up after its own 2 s, the handover when the 10 s are over.
    assert d.seen == ["a", "enter A", "flush", "handover", "exit A"]
    assert loop.time() - start == pytest.approx(10.0)
