"""ConfigurationState objects: whether a component runs the latest configuration, and the
conditions that keep it from doing its whole job (a port it cannot listen on, a missing key).

MetalLB's kind, so `kubectl get configurationstates -n <namespace>` answers "is my
configuration in force?" for the controller and for every speaker. Written only on change.

Two ways to write: `report()` awaits the write (the controller's configuration loop), `set_valid`
and `set_condition` only record the wanted state and return, and `run()` writes the latest one
in a task of its own, retrying with backoff. Latest wins: one object per reporter, so however
often the state changes while the API server is away, one write catches up. The speaker plans
with the second way: nothing on its failover path may wait for the API server.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass

from ironlb.k8s import client as k8s

log = logging.getLogger(__name__)

_MAX_MESSAGE = 30000
CONFIG_VALID = "configValid"
RETRY_INITIAL = 1.0
RETRY_CAP = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    ok: bool
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class _State:
    valid: bool
    error: str
    conditions: tuple[Condition, ...]


class Reporter:
    def __init__(
        self,
        client: k8s.Client,
        namespace: str,
        name: str,
        kind: str,
        *,
        node: str | None = None,
        field_manager: str,
    ) -> None:
        self._client = client
        self._meta = {"name": name, "namespace": namespace}
        self._spec: k8s.Obj = {"type": kind, **({"nodeName": node} if node else {})}
        self._field_manager = field_manager
        self._valid: tuple[bool, str] | None = None
        self._conditions: dict[str, Condition] = {}
        self._since: dict[str, tuple[bool, str]] = {}
        """Condition type -> (status, lastTransitionTime) last written."""
        self._written: _State | None = None
        self._dirty = asyncio.Event()

    # --- recording (never waits) ----------------------------------------------------------------

    def set_valid(self, valid: bool, error: str = "") -> None:
        self._valid = (valid, error[:_MAX_MESSAGE])
        self._dirty.set()

    def set_condition(self, type_: str, ok: bool, reason: str, message: str = "") -> None:
        """One more condition beside configValid (ok -> status True)."""
        self._conditions[type_] = Condition(type_, ok, reason, message[:_MAX_MESSAGE])
        self._dirty.set()

    def _wanted(self) -> _State | None:
        if self._valid is None:
            return None  # nothing known yet: writing would claim a validity nobody checked
        valid, error = self._valid
        return _State(valid, error, tuple(sorted(self._conditions.values(), key=lambda c: c.type)))

    @property
    def pending(self) -> bool:
        """Something recorded is not written yet."""
        wanted = self._wanted()
        return wanted is not None and wanted != self._written

    # --- writing ------------------------------------------------------------------------------

    async def report(self, valid: bool, error: str = "") -> None:
        """Record and write now (logged, not raised, on failure)."""
        self.set_valid(valid, error)
        try:
            await self._write_latest()
        except (k8s.ApiError, k8s.Unreachable) as e:
            log.warning("could not write ConfigurationState %s: %s", self._meta["name"], e)

    async def run(self) -> None:
        """Write the latest recorded state whenever it changes, until cancelled."""
        delay = RETRY_INITIAL
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._write_latest()
                delay = RETRY_INITIAL
            except (k8s.ApiError, k8s.Unreachable) as e:
                log.warning(
                    "could not write ConfigurationState %s (retrying in %.0f s): %s",
                    self._meta["name"],
                    delay,
                    e,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP)
                self._dirty.set()

    async def _write_latest(self) -> None:
        wanted = self._wanted()
        if wanted is None or wanted == self._written:
            return
        conditions = [
            Condition(
                CONFIG_VALID,
                wanted.valid,
                "SyncStateSuccess" if wanted.valid else "ConfigError",
                wanted.error,
            ),
            *wanted.conditions,
        ]
        status = {
            "validConfig": wanted.valid,
            "lastError": wanted.error,
            "conditions": [self._condition(c) for c in conditions],
        }
        await self._client.apply(
            k8s.CONFIGURATION_STATES,
            {"metadata": self._meta, "spec": self._spec},
            field_manager=self._field_manager,
        )
        await self._client.apply(
            k8s.CONFIGURATION_STATES,
            {"metadata": self._meta, "status": status},
            field_manager=self._field_manager,
            sub="status",
        )
        self._written = wanted

    def _condition(self, c: Condition) -> k8s.Obj:
        known = self._since.get(c.type)
        if known is None or known[0] != c.ok:
            known = (c.ok, _now())
            self._since[c.type] = known
        return {
            "type": c.type,
            "status": "True" if c.ok else "False",
            "reason": c.reason,
            "message": c.message,
            "lastTransitionTime": known[1],
        }
