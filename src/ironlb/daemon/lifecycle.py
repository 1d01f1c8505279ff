"""One lifecycle for every daemon (controller, speaker, cpvip): startup -> run -> shutdown.

As in uvicorn's `Server.serve`, the steps of a start and of a stop have names: a daemon is a list
of startup phases and a list of shutdown phases, run in order and each logged, so a start or a
stop that hangs says where.

- **startup**: the phases enter contexts (`enter`) and start named tasks (`start`), all on one
  `AsyncExitStack`. Whatever was started is unwound in reverse order (a task is cancelled and
  awaited, a context exited) however the daemon ends: after the shutdown phases, when a startup
  phase raises (its exception comes out of `serve`), or when a task fails.
- **run**: until the first SIGTERM or SIGINT. A signal during startup cancels the startup: nothing
  was served yet, so there is nothing to hand over.
- **shutdown**: the shutdown phases in order, all within `grace` seconds (and each within its own
  `timeout`); a phase that raises is logged, the next one still runs, and the exception comes out
  of `serve` after the unwinding.
- A **second signal** cuts short whatever runs (a phase or the unwinding), unwinds, and `serve`
  returns `FORCED`.
- A task that **fails** stops the daemon at once, without the shutdown phases (it is broken; the
  kubelet restarts it), and its exception comes out of `serve` after the unwinding, as from a
  TaskGroup. A task or phase that raises `Exit` stops it at once too, with that exit status and
  one log line instead of a traceback.

The order of events is the contract, not the clock: nothing here reads the time except through
the event loop's own timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

FORCED = 130
"""Exit status when a second signal cut the shutdown short (128 + SIGINT, as a shell reports an
interrupted program)."""

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Exit(Exception):
    """Stop the daemon at once (no shutdown phases) with exit status `code`: the way out for a
    condition the daemon knows, such as a lost Lease, that is not a bug."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Phase:
    """One named step of a start or a stop."""

    name: str
    step: Callable[[], Awaitable[None]]
    timeout: float | None = None
    """Seconds this step may take (a shutdown step that takes longer is abandoned, and the next
    one runs; a startup step that takes longer fails the start)."""


class Lifecycle:
    def __init__(
        self, name: str, *, signals: Sequence[signal.Signals] = SIGNALS, grace: float | None = None
    ) -> None:
        self.name = name
        self.phase = "created"
        """Where the daemon is: "startup: <phase>", "running", "shutdown: <phase>", ..."""
        self._signals = tuple(signals)
        self._grace = grace
        self._stack = contextlib.AsyncExitStack()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop = asyncio.Event()
        self._main: asyncio.Task[Any] | None = None
        self._interruptible = False
        """True while a startup phase, the run or a shutdown phase may be cut short."""
        self._cancel_sent = False
        self._forced = False
        self._exit: Exit | None = None
        self._failures: list[Exception] = []

    @property
    def stopping(self) -> bool:
        """A signal, a failure or an `Exit` ended the run."""
        return self._stop.is_set()

    # --- what startup phases use ----------------------------------------------------------------

    async def enter(self, cm: contextlib.AbstractAsyncContextManager[T]) -> T:
        """Enter `cm` now and exit it when the daemon unwinds."""
        return await self._stack.enter_async_context(cm)

    def start(self, name: str, coro: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        """Run `coro` as a task named `<daemon>: <name>`, cancelled and awaited when the daemon
        unwinds (before anything entered earlier is exited). If it fails, the daemon stops."""
        task = asyncio.create_task(coro, name=f"{self.name}: {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._stack.push_async_callback(cancel, task)
        return task

    # --- signals --------------------------------------------------------------------------------

    def handle_signal(self, sig: signal.Signals) -> None:
        """The first signal starts a graceful shutdown; the second forces the exit."""
        if not self._stop.is_set():
            log.info("%s: %s: shutting down (send it again to force)", self.name, sig.name)
            self._stop.set()
            if self.phase.startswith("startup"):
                self._interrupt()
            return
        log.warning("%s: %s again: forcing the exit (in %s)", self.name, sig.name, self.phase)
        self._forced = True
        self._interruptible = True  # the unwinding too
        self._interrupt()

    # --- the lifecycle --------------------------------------------------------------------------

    async def serve(self, startup: Sequence[Phase], shutdown: Sequence[Phase]) -> int:
        """Start, run until signalled, stop; returns the exit status (0 after a graceful stop)."""
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.add_signal_handler(sig, self.handle_signal, sig)
        try:
            await self._serve(startup, shutdown)
        finally:
            for sig in self._signals:
                loop.remove_signal_handler(sig)
            self.phase = "stopped"
        if len(self._failures) == 1:
            raise self._failures[0]
        if self._failures:
            raise ExceptionGroup(f"{self.name} failed", self._failures)
        if self._forced:
            log.warning("%s: stopped (forced)", self.name)
            return FORCED
        if self._exit is not None:
            log.error("%s: %s; exit status %d", self.name, self._exit.reason, self._exit.code)
            return self._exit.code
        log.info("%s: stopped", self.name)
        return 0

    async def _serve(self, startup: Sequence[Phase], shutdown: Sequence[Phase]) -> None:
        try:
            async with self._stack:
                self._interruptible = True
                try:
                    await self._start(startup)
                    if not self._stop.is_set():
                        self.phase = "running"
                        log.info("%s: running", self.name)
                        await self._stop.wait()
                    if not (self._failures or self._exit or self._forced):
                        await self._shut_down(shutdown)
                except asyncio.CancelledError:
                    if not self._interrupted():
                        raise
                except Exit as e:  # from a startup phase
                    self._exit = e
                finally:
                    self._interruptible = self._forced
                self.phase = "unwinding"
                log.info("%s: unwinding", self.name)
        except asyncio.CancelledError:
            if not self._interrupted():  # cancelled from outside
                raise

    async def _start(self, phases: Sequence[Phase]) -> None:
        for phase in phases:
            self.phase = f"startup: {phase.name}"
            log.info("%s: %s", self.name, self.phase)
            async with asyncio.timeout(phase.timeout):
                await phase.step()

    async def _shut_down(self, phases: Sequence[Phase]) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self._grace is None else loop.time() + self._grace
        for phase in phases:
            self.phase = f"shutdown: {phase.name}"
            log.info("%s: %s", self.name, self.phase)
            when = deadline
            if phase.timeout is not None:
                mine = loop.time() + phase.timeout
                when = mine if when is None else min(when, mine)
            try:
                async with asyncio.timeout_at(when) as limit:
                    await phase.step()
            except TimeoutError as e:
                if not limit.expired():
                    self._failed(e, phase.name)
                elif deadline is not None and loop.time() >= deadline:
                    log.warning(
                        "%s: the shutdown grace period (%.1f s) is over in %s; exiting with work"
                        " in flight",
                        self.name,
                        self._grace,
                        phase.name,
                    )
                    return
                else:
                    log.warning(
                        "%s: %s took longer than %s s; going on",
                        self.name,
                        phase.name,
                        phase.timeout,
                    )
            except Exit as e:
                self._exit = e
                return
            except Exception as e:
                self._failed(e, phase.name)

    # --- ends that are not a signal -------------------------------------------------------------

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, Exit):
            if self._exit is None:
                self._exit = exc
        elif isinstance(exc, Exception):
            self._failed(exc, task.get_name())
        else:
            return
        self._stop.set()
        self._interrupt()

    def _failed(self, exc: Exception, where: str) -> None:
        log.error("%s: %s failed: %s: %s", self.name, where, type(exc).__name__, exc)
        self._failures.append(exc)

    def _interrupt(self) -> None:
        """Cut short what `serve` awaits (from a signal handler or a task's end, never from
        `serve` itself)."""
        main = self._main
        if main is None or main.done() or main is asyncio.current_task():
            return
        if self._interruptible and not self._cancel_sent:
            self._cancel_sent = True
            main.cancel()

    def _interrupted(self) -> bool:
        """Whether the CancelledError `serve` caught is this lifecycle's own interruption."""
        if not self._cancel_sent:
            return False
        self._cancel_sent = False
        if self._main is not None:
            self._main.uncancel()
        return True


async def cancel(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended (its exception, if any, stays in the task)."""
    task.cancel()
    await asyncio.wait([task])
