"""Leader election between controller replicas through one coordination.k8s.io Lease.

One Lease per controller deployment, never one per Service: API load does not grow with the
number of Services. The decision is `core.lease`; this shell reads and writes the Lease with
optimistic concurrency (a lost race is a 409 and simply means: observe again).

`acquire()` returns once this replica leads; `keep_renewing()` returns only by raising
`LostLeadership` (renewals failed for `renew_deadline`, or another replica took over): the
caller must stop acting as leader at once; the controller exits and restarts clean, as
client-go-based controllers do. `release()` hands the Lease over on a graceful shutdown so the
next replica takes over without waiting for expiry.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable

from ironlb.core import lease
from ironlb.k8s import client as k8s

log = logging.getLogger(__name__)


class LostLeadership(Exception):
    """This replica could not renew its Lease in time and must stop acting as leader."""


def _microtime(now: datetime.datetime | None = None) -> str:
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_record(obj: k8s.Obj) -> lease.Record:
    """The whole leader-election record of a Lease: a renewal changes only renewTime, so
    leaving any field out would hide renewals from `core.lease.observe`."""
    spec = obj.get("spec") or {}
    return lease.Record(
        holder=spec.get("holderIdentity") or None,
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquire_time=spec.get("acquireTime") or None,
        renew_time=spec.get("renewTime") or None,
    )


class LeaderElection:
    def __init__(
        self,
        client: k8s.Client,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self._client = client
        self._namespace = namespace
        self._name = name
        self.identity = identity
        self._duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry = retry_period
        self._clock = clock
        self._seen: lease.Observation | None = None
        self._obj: k8s.Obj | None = None
        self.leading = asyncio.Event()

    async def _read(self) -> lease.Observation:
        try:
            self._obj = await self._client.get(k8s.LEASES, self._name, self._namespace)
            record: lease.Record | None = parse_record(self._obj)
        except k8s.NotFound:
            self._obj, record = None, None
        self._seen = lease.observe(self._seen, record, self._clock())
        return self._seen

    async def _write(self, record: lease.Record) -> None:
        spec: k8s.Obj = {
            "holderIdentity": record.holder,
            "leaseDurationSeconds": record.duration_seconds,
            "leaseTransitions": record.transitions,
            "acquireTime": record.acquire_time,
            "renewTime": record.renew_time,
        }
        if self._obj is None:
            body: k8s.Obj = {
                "metadata": {"name": self._name, "namespace": self._namespace},
                "spec": spec,
            }
            self._obj = await self._client.create(k8s.LEASES, body, self._namespace)
        else:
            body = {**self._obj, "spec": {**(self._obj.get("spec") or {}), **spec}}
            self._obj = await self._client.replace(k8s.LEASES, body, self._namespace)
        self._seen = lease.observe(self._seen, parse_record(self._obj), self._clock())

    async def _try_once(self) -> bool | None:
        """One round: observe, decide, maybe write.

        True: we hold the lease. False: someone else holds a live one. None: we lost a write
        race (409) and must observe again before we know.
        """
        seen = await self._read()
        action = lease.decide(self.identity, seen, self._clock(), self._duration)
        if action is lease.Action.WAIT:
            return False
        try:
            await self._write(
                lease.next_record(self.identity, seen.record, self._duration, stamp=_microtime())
            )
        except k8s.Conflict:
            return None
        if action is lease.Action.ACQUIRE:
            log.info("acquired lease %s/%s as %s", self._namespace, self._name, self.identity)
        return True

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        while not self.leading.is_set():
            try:
                if await self._try_once():
                    self.leading.set()
                    break
            except (k8s.ApiError, k8s.Unreachable) as e:
                log.warning("lease %s: %s", self._name, e)
            await asyncio.sleep(self._retry)

    async def keep_renewing(self) -> None:
        """Renew for ever; raises LostLeadership when renewals fail for `renew_deadline`."""
        last_renewal = self._clock()
        while True:
            await asyncio.sleep(self._retry)
            try:
                held = await self._try_once()
                if held:
                    last_renewal = self._clock()
                    continue
                if held is False:
                    holder = self._seen.record.holder if self._seen and self._seen.record else None
                    log.error("lease %s taken over by %s", self._name, holder)
                    self.leading.clear()
                    raise LostLeadership(f"lease {self._name} is now held by {holder}")
            except (k8s.ApiError, k8s.Unreachable) as e:
                log.warning("lease %s: renewal failed: %s", self._name, e)
            if self._clock() - last_renewal >= self._renew_deadline:
                self.leading.clear()
                raise LostLeadership(
                    f"could not renew lease {self._name} for {self._renew_deadline}s"
                )

    async def release(self) -> None:
        """Give the lease up (graceful shutdown) so another replica need not wait for expiry."""
        if not self.leading.is_set() or self._obj is None:
            return
        self.leading.clear()
        spec = {**(self._obj.get("spec") or {}), "holderIdentity": None, "leaseDurationSeconds": 1}
        try:
            await self._client.replace(k8s.LEASES, {**self._obj, "spec": spec}, self._namespace)
        except (k8s.ApiError, k8s.Unreachable) as e:
            log.warning("lease %s: release failed: %s", self._name, e)
