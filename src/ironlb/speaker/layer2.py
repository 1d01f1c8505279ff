"""Layer-2 announcing on this node: the I/O around `core.announce`'s decision.

`apply(mine, links)` makes the responders answer for exactly the addresses this node owns, on
the interfaces `core.interfaces.choose` picks: losses take effect at once; gains are announced
with gratuitous ARP / unsolicited NA at once, then every `gratuitous_interval` for
`gratuitous_duration` (and every `refresh` seconds after that if the advertisement asks).

An address never announced by any node before (no ServiceL2Status for its Services) is first
probed (RFC 5227 ARP probe / RFC 4862 DAD): if another host answers for it, ironlb refuses to
announce it, with a Warning Event on its Services naming the other MAC, and probes again
later. While announcing, another MAC claiming an owned address is reported the same way;
every claim is counted, but Events (and warnings in the log) are limited per address
(`CONFLICT_EVENTS`), so a hostile host flooding forged claims cannot make the speakers write to
the API server without bound; `ironlb_layer2_conflict_events_suppressed_total` counts the rest.

`hand_over()` (graceful shutdown): keep answering until every owned address has been claimed
by another MAC (the new owners' gratuitous announcements) or the timeout passes, then stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from ironlb.core import addresses, announce, interfaces, model, ratelimit
from ironlb.k8s import events
from ironlb.l2 import ethernet, responder
from ironlb.net import links as net_links
from ironlb.speaker import settings as settings_

log = logging.getLogger(__name__)

ANNOUNCED = Gauge(
    "metallb_speaker_announced",
    "Addresses this speaker announces",
    ["ip", "node", "protocol", "service"],
)
TAKEOVERS = Counter("ironlb_layer2_takeovers", "Addresses this node took over from another")
REFUSED = Counter(
    "ironlb_layer2_refused_addresses",
    "Addresses not announced because another host already uses them",
)
RETRY_IN_USE = 30.0
"""Seconds before an address found in use by another host is probed again."""
CONFLICT_EVENTS = ratelimit.Limit(burst=3, rate=1 / 60)
"""Conflict Events per address: a few at once, then one a minute."""
SUPPRESSED = Counter(
    "ironlb_layer2_conflict_events_suppressed",
    "Conflicts (another MAC claiming an address this node announces) not reported by an"
    " Event because that address's Event rate limit was reached",
)


@dataclass
class _Schedule:
    due: float
    until: float
    refresh: float | None


class Layer2:
    def __init__(
        self,
        node: str,
        settings: settings_.Settings,
        recorder: events.Recorder,
        *,
        service: Callable[[model.ServiceKey], model.Service | None],
        announced_by: Callable[[Iterable[model.ServiceKey]], set[str]],
        changed: Callable[[], None],
    ) -> None:
        self._node = node
        self._settings = settings
        self._events = recorder
        self._service = service
        self._announced_by = announced_by
        self._changed = changed
        self._excluded = settings.excluded_interfaces
        self._responders: dict[str, responder.Responder] = {}
        self._current: dict[addresses.IP, tuple[str, ...]] = {}
        self._wanted: dict[addresses.IP, announce.Announcement] = {}
        self._links: Mapping[int, net_links.Link] = {}
        self._cleared: set[addresses.IP] = set()
        self._probing: set[addresses.IP] = set()
        self._in_use: dict[addresses.IP, float] = {}
        self._in_use_by: dict[addresses.IP, ethernet.MacAddress] = {}  # for ironlb doctor
        self._schedule: dict[addresses.IP, _Schedule] = {}
        self._wake = asyncio.Event()
        self._claimed: dict[addresses.IP, ethernet.MacAddress] = {}
        self._conflict_events: ratelimit.PerKey[addresses.IP] = ratelimit.PerKey(CONFLICT_EVENTS)
        self._suppressed: dict[addresses.IP, int] = {}
        self._handing_over = False
        self._metric_labels: dict[addresses.IP, list[tuple[str, str, str, str]]] = {}
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def announced(self) -> Mapping[addresses.IP, tuple[str, ...]]:
        """Address -> interfaces answering for it now."""
        return self._current

    # --- read by `speaker.report` (ironlb doctor) ---------------------------------------------
    @property
    def wanted(self) -> Mapping[addresses.IP, announce.Announcement]:
        """What the last plan asked this node to announce."""
        return self._wanted

    @property
    def claimed(self) -> Mapping[addresses.IP, ethernet.MacAddress]:
        """The last other MAC seen claiming each address this node announced."""
        return self._claimed

    @property
    def in_use(self) -> Mapping[addresses.IP, ethernet.MacAddress]:
        """Addresses not announced because the probe found another host answering (its MAC)."""
        return self._in_use_by

    async def run(self) -> None:
        """Own the responders and the gratuitous schedule until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self._gratuitous())
        finally:
            self._tasks = None
            for r in self._responders.values():
                await r.__aexit__(None, None, None)
            self._responders.clear()
            for ip in list(self._current):
                self._forget(ip)

    # --- applying the plan ----------------------------------------------------------------------

    async def apply(
        self,
        mine: Mapping[addresses.IP, announce.Announcement],
        links: Mapping[int, net_links.Link],
    ) -> dict[addresses.IP, interfaces.Choice[net_links.Link]]:
        """Announce exactly `mine`; returns each address's interface choice (for status)."""
        self._wanted, self._links = dict(mine), links
        choices = {
            ip: interfaces.choose(ip, links.values(), a.interfaces, self._excluded)
            for ip, a in mine.items()
        }
        for ip in [ip for ip in self._current if ip not in mine]:
            self._withdraw(ip)
        for ip, announcement in mine.items():
            names = tuple(sorted(link.name for link in choices[ip].chosen))
            if not names:
                if ip in self._current:
                    log.warning(
                        "%s: no usable interface left: %s",
                        ip,
                        "; ".join(f"{k}: {v}" for k, v in choices[ip].rejected.items()),
                    )
                    self._withdraw(ip)
                continue
            if ip not in self._current and not await self._may_announce(ip, announcement):
                continue
            await self._announce(ip, announcement, names)
        await self._close_unused_responders()
        return choices

    async def _may_announce(self, ip: addresses.IP, a: announce.Announcement) -> bool:
        if ip in self._cleared or self._settings.probe_before_announce <= 0:
            return True
        if self._announced_by(a.services):
            self._cleared.add(ip)  # announced before: a failover, not a new address
            return True
        if ip in self._probing:
            return False
        if time.monotonic() < self._in_use.get(ip, 0.0):
            return False
        if self._tasks is not None:
            self._probing.add(ip)
            self._tasks.create_task(self._probe(ip, a))
        return False

    async def _probe(self, ip: addresses.IP, a: announce.Announcement) -> None:
        """First-time check that no other host answers for `ip`; then re-plan."""
        try:
            link = next(
                iter(
                    interfaces.choose(ip, self._links.values(), a.interfaces, self._excluded).chosen
                ),
                None,
            )
            if link is None:
                return
            r = await self._responder(link)
            foreign = await r.probe(ip, duration=self._settings.probe_before_announce)
            if foreign is None:
                self._cleared.add(ip)
                self._in_use_by.pop(ip, None)
                return
            self._in_use[ip] = time.monotonic() + RETRY_IN_USE
            self._in_use_by[ip] = foreign
            REFUSED.inc()
            note = (
                f"not announcing {ip}: another host ({foreign}) already answers for it on "
                f"{link.name}; is this pool shared with another cluster or a static host? "
                f"ironlb checks again in {RETRY_IN_USE:.0f} s"
            )
            log.warning("%s", note)
            self._warn(a.services, "AddressInUse", note)
        except OSError as e:
            log.warning("probe of %s failed: %s", ip, e)
        finally:
            self._probing.discard(ip)
            self._changed()

    async def _announce(
        self, ip: addresses.IP, a: announce.Announcement, names: tuple[str, ...]
    ) -> None:
        before = self._current.get(ip, ())
        by_name = {link.name: link for link in self._links.values()}
        for name in names:
            r = await self._responder(by_name[name])
            r.announce(ip)
        for name in set(before) - set(names):
            if name in self._responders:
                self._responders[name].withdraw(ip)
        self._current[ip] = names
        gained = set(names) - set(before)
        if not before:
            self._claimed.pop(ip, None)  # ironlb doctor: a claim from an earlier tenure is old news
            others = self._announced_by(a.services) - {self._node}
            if others:
                TAKEOVERS.inc()
            log.info(
                "announcing %s on %s (%s)%s",
                ip,
                ", ".join(names),
                ", ".join(a.services),
                f", taking over from {', '.join(sorted(others))}" if others else "",
            )
            labels = [(str(ip), self._node, "layer2", str(key)) for key in a.services]
            for label in labels:
                ANNOUNCED.labels(*label).set(1)
            self._metric_labels[ip] = labels
        if gained:
            now = time.monotonic()
            self._schedule[ip] = _Schedule(now, now + self._settings.gratuitous_duration, a.refresh)
            self._wake.set()
        elif ip in self._schedule:
            self._schedule[ip].refresh = a.refresh

    def _withdraw(self, ip: addresses.IP) -> None:
        for name in self._current.get(ip, ()):
            if name in self._responders:
                self._responders[name].withdraw(ip)
        log.info("stopped announcing %s", ip)
        self._forget(ip)

    def _forget(self, ip: addresses.IP) -> None:
        self._current.pop(ip, None)
        self._schedule.pop(ip, None)
        for labels in self._metric_labels.pop(ip, ()):
            with contextlib.suppress(KeyError):
                ANNOUNCED.remove(*labels)

    async def _responder(self, link: net_links.Link) -> responder.Responder:
        r = self._responders.get(link.name)
        if r is not None and r.index == link.index and str(r.mac) == link.mac:
            return r
        if r is not None:
            await r.__aexit__(None, None, None)
        assert link.mac is not None  # choose() only picks Ethernet links
        r = responder.Responder(
            link.name, link.index, ethernet.MacAddress.parse(link.mac), on_conflict=self._conflict
        )
        await r.__aenter__()
        for ip, names in self._current.items():
            if link.name in names:
                r.announce(ip)
        self._responders[link.name] = r
        return r

    async def _close_unused_responders(self) -> None:
        used = {name for names in self._current.values() for name in names}
        for name in [n for n in self._responders if n not in used and not self._probing]:
            await self._responders.pop(name).__aexit__(None, None, None)

    # --- gratuitous announcements ---------------------------------------------------------------

    async def _gratuitous(self) -> None:
        while True:
            now = time.monotonic()
            for ip, sched in list(self._schedule.items()):
                if sched.due > now:
                    continue
                for name in self._current.get(ip, ()):
                    if name in self._responders:
                        with contextlib.suppress(ValueError, OSError):
                            self._responders[name].send_gratuitous(ip)
                nxt = sched.due + self._settings.gratuitous_interval
                if nxt <= sched.until:
                    sched.due = nxt
                elif sched.refresh is not None:
                    sched.due, sched.until = now + sched.refresh, float("inf")
                else:
                    del self._schedule[ip]
            self._wake.clear()
            delay = min((s.due for s in self._schedule.values()), default=now + 3600) - now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._wake.wait()

    # --- conflicts and handover -----------------------------------------------------------------

    def _conflict(self, ip: responder.Address, mac: ethernet.MacAddress) -> None:
        self._claimed[ip] = mac
        if self._handing_over:
            return  # the new owner announcing: what hand_over waits for
        if not self._conflict_events.allow(ip, time.monotonic()):
            SUPPRESSED.inc()
            self._suppressed[ip] = self._suppressed.get(ip, 0) + 1
            return
        a = self._wanted.get(ip)
        note = (
            f"another host ({mac}) claims {ip}, which node {self._node} announces: two "
            "hosts answer for it; check for an overlapping pool or a static address"
        )
        suppressed = self._suppressed.pop(ip, 0)
        if suppressed:
            note += f" ({suppressed} more claims since the last report)"
        log.warning("%s", note)
        self._warn(a.services if a else (), "AddressConflict", note)

    def _warn(self, keys: Iterable[model.ServiceKey], reason: str, note: str) -> None:
        for key in keys:
            svc = self._service(key)
            if svc is not None:
                self._events.record(
                    events.Regarding("v1", "Service", svc.namespace, svc.name, svc.metadata.uid),
                    "Warning",
                    reason,
                    note,
                )

    async def hand_over(self, within: float) -> None:
        """Wait (at most `within` seconds) until another MAC has claimed every address announced
        here, then stop answering."""
        self._handing_over = True
        # Keep answering, but stop announcing: a repeat scheduled by an earlier takeover would
        # pull clients back from the new owner.
        self._schedule.clear()
        pending = set(self._current)
        start = time.monotonic()
        self._claimed.clear()
        while pending and time.monotonic() - start < within:
            pending -= set(self._claimed)
            await asyncio.sleep(0.01)
        if pending:
            log.warning(
                "handover: no new owner announced %s within %.1f s",
                ", ".join(map(str, sorted(pending, key=str))),
                within,
            )
        else:
            log.info(
                "handover: every address announced by its new owner after %.2f s",
                time.monotonic() - start,
            )
        for ip in list(self._current):
            self._withdraw(ip)
