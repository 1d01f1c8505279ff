"""The controller's allocation loop: Services in, addresses in their status out.

Level-triggered: reflectors keep caches of Services, Namespaces and the metallb.io configuration;
any change puts keys on a work queue, and a reconcile compares what the allocator decides with
what the cached Service shows, writing only the difference. Decisions live in `core.alloc`.

Invariants:
- Nothing is allocated before every cache has listed and this replica leads. Then, on the first
  valid configuration, every existing `status.loadBalancer.ingress` is re-reserved *before* any
  Service is reconciled: a restart never moves or duplicates an address. Where shown addresses
  conflict (a sharing key edited while no controller ran), the largest group that may share
  each one keeps it (`alloc.reservation_order`): the edited Service moves, not its old sharers.
- An invalid configuration is never applied: the last valid one stays in force, and the
  problem is reported in the log, in `metallb_k8s_client_config_stale_bool`, and in the
  `ConfigurationState` object `controller` (`kubectl get configurationstates`).
- Every replica judges the configuration it caches, so a standby's
  `metallb_k8s_client_config_loaded_bool` / `_stale_bool` say what it would apply on taking
  over (MetalLB's alerts read them on every replica); only the leader applies and reports.
- An address is never written into one Service's status while another Service's status still
  shows it (unless the two may share it): when addresses move, the clearing write lands first.
  A Service that must wait for its new addresses clears the ones it is losing at once, so two
  moving Services that each wait for the other's old address cannot wait for ever.
- A Service that could not get an address is retried whenever addresses are freed, the
  configuration changes, or another Service it contends with changes (same sharing key, or an
  address one asks for and the other asks for or shows: `alloc.contended`), as MetalLB
  reconsiders a Service refused a shared address once its sharer has become compatible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

from ironlb.controller import metrics
from ironlb.controller import settings as settings_
from ironlb.core import addresses, alloc, backoff, config, model
from ironlb.k8s import client as k8s
from ironlb.k8s import configsource, configstate, events, reflector, workqueue

log = logging.getLogger(__name__)

POOL_ANNOTATION = "metallb.io/ip-allocated-from-pool"
FIELD_MANAGER = "ironlb-controller"
# Waiting for another Service's status to stop showing an address we now hold.
_HANDOVER_RETRY = 0.05


def _ingress(ips: Iterable[addresses.IP]) -> list[k8s.Obj]:
    return [{"ip": str(ip)} for ip in ips]


def _regarding(svc: model.Service) -> events.Regarding:
    return events.Regarding("v1", "Service", svc.namespace, svc.name, svc.metadata.uid)


class Allocations:
    """Caches, allocator and reconcile loop of one controller replica."""

    def __init__(
        self, client: k8s.Client, settings: settings_.Settings, recorder: events.Recorder
    ) -> None:
        self._client = client
        self._settings = settings
        self._events = recorder
        self.queue: workqueue.WorkQueue[model.ServiceKey] = workqueue.WorkQueue()
        self.services = reflector.Reflector(
            client, k8s.SERVICES, model.parse_service, on_change=self._service_changed
        )
        self.namespaces = reflector.Reflector(
            client, k8s.NAMESPACES, model.parse_namespace, on_change=self._namespace_changed
        )
        self.config = configsource.ConfigSource(client, settings.namespace, self._config_changed)
        self.allocator: alloc.Allocator | None = None
        self.applied: config.Config | None = None
        self.config_error: str | None = None
        self._config_dirty = asyncio.Event()
        self._leading = False
        # Observed status.loadBalancer.ingress, indexed both ways.
        self._observed: dict[model.ServiceKey, tuple[addresses.IP, ...]] = {}
        self._shown_by: dict[addresses.IP, set[model.ServiceKey]] = {}
        self._failed: set[model.ServiceKey] = set()
        self._contended: dict[model.ServiceKey, frozenset[str]] = {}
        self._waiting_since: dict[model.ServiceKey, float] = {}
        self._retries: dict[model.ServiceKey, backoff.Backoff] = {}
        self._dirty_pools: set[config.PoolName] = set()
        self._state = configstate.Reporter(
            client, settings.namespace, "controller", "Controller", field_manager=FIELD_MANAGER
        )

    # --- cache events (synchronous: they only record and enqueue) -----------------------------

    @property
    def caches(self) -> list[reflector.Reflector[Any]]:
        return [self.services, self.namespaces, *self.config.reflectors]

    def _service_changed(self, key: str) -> None:
        skey = model.ServiceKey(key)
        svc = self.services.items.get(key)
        shown = svc.ingress_ips if svc is not None else ()
        for ip in self._observed.pop(skey, ()):
            holders = self._shown_by.get(ip)
            if holders is not None:
                holders.discard(skey)
                if not holders:
                    del self._shown_by[ip]
        if shown:
            self._observed[skey] = shown
            for ip in shown:
                self._shown_by.setdefault(ip, set()).add(skey)
        before = self._contended.pop(skey, frozenset())
        now = alloc.contended(svc) if svc is not None else frozenset()
        if now:
            self._contended[skey] = now
        if self.allocator is not None:
            self.queue.add(skey)
            self._reconsider(skey, before | now)

    def _reconsider(self, changed: model.ServiceKey, tokens: frozenset[str]) -> None:
        """Re-queue the Services refused an address that contend with `changed`."""
        if not tokens:
            return
        for waiting in self._failed - {changed}:
            if self._contended.get(waiting, frozenset()) & tokens:
                self.queue.add(waiting)

    def _namespace_changed(self, name: str) -> None:
        if self.allocator is None:
            return
        prefix = name + "/"
        for key in self.services.items:
            if key.startswith(prefix):
                self.queue.add(model.ServiceKey(key))

    def _config_changed(self, _key: str) -> None:
        self._config_dirty.set()

    # --- configuration ---------------------------------------------------------------------

    async def _apply_config(self) -> None:
        cfg, problems = self.config.candidate()
        if problems or cfg is None:
            self.config_error = "; ".join(problems)
            metrics.CONFIG_STALE.set(1)
            log.error("configuration not applied (the last valid one stays): %s", self.config_error)
            await self._state.report(False, self.config_error)
            return
        self.config_error = None
        if cfg == self.applied:
            # Nothing to apply (an object was rewritten without changing the configuration, or
            # an invalid change was undone); only say that what is in force is the latest.
            metrics.CONFIG_STALE.set(0)
            await self._state.report(True, "")
            return
        first = self.allocator is None
        if self.allocator is None:
            self.allocator = alloc.Allocator(cfg)
            self._reserve_existing()
            dropped: list[model.ServiceKey] = []
        else:
            dropped = self.allocator.update_config(cfg)
            for key in dropped:
                self._record_dropped(key)
        previous = self.applied
        self.applied = cfg
        metrics.CONFIG_LOADED.set(1)
        metrics.CONFIG_STALE.set(0)
        if previous is not None:
            for name in set(previous.pools) - set(cfg.pools):
                self._forget_pool_metrics(name)
        self._dirty_pools |= set(cfg.pools)
        log.info(
            "configuration applied: %d pools%s",
            len(cfg.pools),
            f", {len(dropped)} Services lose addresses no pool covers" if dropped else "",
        )
        # Services losing addresses first (their clearing writes unblock the others), then all.
        for key in [*dropped, *map(model.ServiceKey, self.services.items)]:
            self.queue.add(key)
        await self._state.report(True, "")
        if first:
            log.info("re-reserved %d existing assignments", len(self.allocator.snapshot()))

    def _record_dropped(self, key: model.ServiceKey) -> None:
        svc = self.services.items.get(key)
        if svc is not None:
            shown = ", ".join(map(str, svc.ingress_ips)) or "its addresses"
            self._events.record(
                _regarding(svc),
                "Normal",
                "ClearAssignment",
                f"{shown} no longer in any IPAddressPool",
            )
        self._released(key)

    def _reserve_existing(self) -> None:
        assert self.allocator is not None
        shown = [
            svc
            for svc in self.services.items.values()
            if svc.ingress_ips and alloc.is_handled(svc, self._settings.lb_class)
        ]
        for svc in alloc.reservation_order(shown):
            ips = svc.ingress_ips
            result = self.allocator.reserve(svc, ips)
            if isinstance(result, alloc.Failed):
                # assign() will give it new addresses; say why the old ones went.
                note = f"{', '.join(map(str, ips))} cannot be kept: {result.reason}"
                log.warning("%s: %s", svc.key, note)
                self._events.record(_regarding(svc), "Normal", "ClearAssignment", note)

    def _judge_config(self) -> None:
        """A standby's view: whether the configuration it caches could be applied."""
        cfg, problems = self.config.candidate()
        if problems or cfg is None:
            if self.config_error != "; ".join(problems):
                self.config_error = "; ".join(problems)
                log.warning("configuration is invalid: %s", self.config_error)
            metrics.CONFIG_STALE.set(1)
            return
        self.config_error = None
        metrics.CONFIG_LOADED.set(1)
        metrics.CONFIG_STALE.set(0)

    async def watch_config(self) -> None:
        """Once the caches have listed, judge the configuration whenever it changes; the
        leader also applies it."""
        await self.synced()
        self._config_dirty.set()
        while True:
            await self._config_dirty.wait()
            self._config_dirty.clear()
            if self._leading:
                await self._apply_config()
            else:
                self._judge_config()

    # --- reconcile -----------------------------------------------------------------------------

    async def work(self) -> None:
        """One worker: reconcile keys until the queue is closed."""
        while (key := await self.queue.get()) is not None:
            try:
                await self._reconcile(key)
                self._retries.pop(key, None)
            except (k8s.ApiError, k8s.Unreachable) as e:
                reason = "unreachable" if isinstance(e, k8s.Unreachable) else f"http_{e.status}"
                metrics.RECONCILE_ERRORS.labels(reason).inc()
                metrics.UPDATE_ERRORS.inc()
                delay = self._retries.setdefault(key, backoff.Backoff()).next_delay(random.random())
                log.warning("%s: %s; retrying in %.2fs", key, e, delay or 0)
                self.queue.add_after(key, delay or 1.0)
            finally:
                self.queue.done(key)

    def _released(self, key: model.ServiceKey) -> None:
        """Addresses were freed: Services that found none may find some now."""
        if self.applied is not None:
            self._dirty_pools |= set(self.applied.pools)
        for waiting in self._failed - {key}:
            self.queue.add(waiting)

    async def _reconcile(self, key: model.ServiceKey) -> None:
        allocator = self.allocator
        assert allocator is not None
        svc = self.services.items.get(key)
        if svc is None:
            self._forget(key)
            return
        if not alloc.is_handled(svc, self._settings.lb_class):
            self._forget(key)
            if svc.spec.type != "LoadBalancer" and svc.ingress_ips:
                await self._write_status(svc, ())
            return
        ns = self.namespaces.items.get(svc.namespace)
        result = allocator.assign(svc, ns.metadata.labels if ns is not None else {})
        if result.cleared:
            self._events.record(_regarding(svc), "Normal", "ClearAssignment", result.cleared)
            self._released(key)
        if isinstance(result, alloc.Failed):
            if key not in self._failed:
                metrics.ALLOCATION_FAILURES.inc()
            self._failed.add(key)
            self._events.record(
                _regarding(svc),
                "Warning",
                "AllocationFailed",
                f'Failed to allocate IP for "{key}": {result.reason}',
            )
            if svc.ingress_ips:
                await self._write_status(svc, ())
            await self._write_pool_annotation(svc, None)
            return
        self._failed.discard(key)
        allocation = result.allocation
        if result.warning:
            self._events.record(_regarding(svc), "Warning", "AllocationWarning", result.warning)
        if tuple(svc.ingress_ips) != allocation.ips:
            self._waiting_since.setdefault(key, time.monotonic())
            blocked = self._shown_elsewhere(key, allocation.ips)
            if blocked:
                log.debug(
                    "%s: waiting for %s to stop showing %s",
                    key,
                    blocked,
                    ", ".join(map(str, allocation.ips)),
                )
                # Clear what it is losing now: a Service waiting for this one to stop showing
                # an address may be what this one waits for (two moves after a restart).
                kept = tuple(ip for ip in svc.ingress_ips if ip in allocation.ips)
                if kept != tuple(svc.ingress_ips):
                    await self._write_status(svc, kept)
                self.queue.add_after(key, _HANDOVER_RETRY)
                return
            await self._write_status(svc, allocation.ips)
            since = self._waiting_since.pop(key, None)
            if since is not None:
                metrics.ALLOCATION_LATENCY.observe(time.monotonic() - since)
            self._dirty_pools.add(allocation.pool)
            shown = json.dumps([str(ip) for ip in allocation.ips])
            self._events.record(_regarding(svc), "Normal", "IPAllocated", f"Assigned IP {shown}")
        await self._write_pool_annotation(svc, allocation.pool)

    def _forget(self, key: model.ServiceKey) -> None:
        assert self.allocator is not None
        held = self.allocator.release(key)
        self._failed.discard(key)
        self._waiting_since.pop(key, None)
        if held is not None:
            self._released(key)

    def _shown_elsewhere(
        self, key: model.ServiceKey, ips: Iterable[addresses.IP]
    ) -> set[model.ServiceKey]:
        """Services whose status shows one of `ips` although the allocator has not given it
        to them (their clearing write has not landed yet)."""
        assert self.allocator is not None
        blocked: set[model.ServiceKey] = set()
        for ip in ips:
            shown = self._shown_by.get(ip)
            if shown:
                blocked |= shown - {key} - self.allocator.holders(ip)
        return blocked

    async def _write_status(self, svc: model.Service, ips: tuple[addresses.IP, ...]) -> None:
        body = {"status": {"loadBalancer": {"ingress": _ingress(ips) if ips else None}}}
        try:
            await self._client.patch(k8s.SERVICES, svc.name, body, svc.namespace, sub="status")
        except k8s.ApiError as e:
            if not e.not_found:
                raise
        metrics.UPDATES.inc()

    async def _write_pool_annotation(self, svc: model.Service, pool: str | None) -> None:
        if svc.metadata.annotations.get(POOL_ANNOTATION) == pool:
            return
        body = {"metadata": {"annotations": {POOL_ANNOTATION: pool}}}
        try:
            await self._client.patch(k8s.SERVICES, svc.name, body, svc.namespace)
        except k8s.ApiError as e:
            if not e.not_found:
                raise
        metrics.UPDATES.inc()

    # --- pool status -----------------------------------------------------------------------

    def _forget_pool_metrics(self, name: str) -> None:
        for gauge in (
            metrics.ADDRESSES_TOTAL,
            metrics.ADDRESSES_IN_USE,
            metrics.IPV4_TOTAL,
            metrics.IPV4_IN_USE,
            metrics.IPV6_TOTAL,
            metrics.IPV6_IN_USE,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(name)

    async def write_pool_status(self, interval: float = 1.0) -> None:
        """Every `interval`, publish the counters of pools whose usage changed."""
        while True:
            await asyncio.sleep(interval)
            if self.allocator is None or self.applied is None or not self._dirty_pools:
                continue
            dirty, self._dirty_pools = self._dirty_pools, set()
            for name in sorted(dirty):
                if name not in self.applied.pools:
                    continue
                stats = self.allocator.pool_stats(name)
                self._publish_pool_metrics(name, stats)
                body = {
                    "status": {
                        "assignedIPv4": stats.assigned_ipv4,
                        "assignedIPv6": stats.assigned_ipv6,
                        "availableIPv4": stats.available_ipv4,
                        # An IPv6 pool can hold 2**64 addresses; the field is an int64.
                        "availableIPv6": min(stats.available_ipv6, 2**63 - 1),
                    }
                }
                try:
                    await self._client.patch(
                        k8s.IP_ADDRESS_POOLS, name, body, self._settings.namespace, sub="status"
                    )
                except (k8s.ApiError, k8s.Unreachable) as e:
                    log.warning("IPAddressPool %s status not written: %s", name, e)
                    self._dirty_pools.add(name)

    @staticmethod
    def _publish_pool_metrics(name: str, stats: alloc.PoolStats) -> None:
        v4_total = stats.assigned_ipv4 + stats.available_ipv4
        v6_total = stats.assigned_ipv6 + stats.available_ipv6
        metrics.IPV4_TOTAL.labels(name).set(v4_total)
        metrics.IPV4_IN_USE.labels(name).set(stats.assigned_ipv4)
        metrics.IPV6_TOTAL.labels(name).set(v6_total)
        metrics.IPV6_IN_USE.labels(name).set(stats.assigned_ipv6)
        metrics.ADDRESSES_TOTAL.labels(name).set(v4_total + v6_total)
        metrics.ADDRESSES_IN_USE.labels(name).set(stats.assigned_ipv4 + stats.assigned_ipv6)

    # --- lifecycle -------------------------------------------------------------------------

    async def synced(self) -> None:
        """Return once every cache holds a full list."""
        for cache in self.caches:
            await cache.listed.wait()

    def ready(self) -> str | None:
        """None when ready to serve (readiness probe), else why not."""
        missing = [c.name for c in self.caches if not c.listed.is_set()]
        return f"caches not synced: {', '.join(missing)}" if missing else None

    async def lead(self) -> None:
        """The leader's work: apply configuration (`watch_config` runs on every replica),
        reconcile, publish pool status."""
        await self.synced()
        self._leading = True
        self._config_dirty.set()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.write_pool_status())
            for _ in range(self._settings.workers):
                tg.create_task(self.work())
