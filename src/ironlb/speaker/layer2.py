"""Layer-2 announcing on this node: the I/O around the announcer core (`ironlb.l2.announcer`).

Every decision (settling, isolation, probing, refusals, conflicts, handover, gratuitous
schedule) is the core's. This shell only turns inputs into core calls and carries out the
actions the core returns, in order, in its own task (`run`): responders are opened, told what
to answer, asked to probe and to send gratuitous ARP/NA; Events and log lines are written;
probe results and conflicts go straight back to the core, never through a re-plan.

`apply(mine, others, links)` never awaits: it chooses each owned address's interfaces once
(`core.interfaces.choose`) and hands the targets to the core.

Conflict warnings are limited per address by the core, so a hostile host flooding forged claims
cannot make the speakers write to the API server without bound;
`ironlb_layer2_conflict_events_suppressed_total` counts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

from prometheus_client import Counter, Gauge

from ironlb.core import addresses, announce, interfaces, model
from ironlb.k8s import events
from ironlb.l2 import announcer, ethernet, responder
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
SUPPRESSED = Counter(
    "ironlb_layer2_conflict_events_suppressed",
    "Conflicts (another MAC claiming an address this node announces) not reported by an"
    " Event because that address's Event rate limit was reached",
)
ISOLATED = Gauge(
    "ironlb_membership_isolated_bool",
    "1 while peers' packets fail authentication and none is verified: this speaker"
    " has the wrong key and announces nothing",
)
SETTLE = 1.0
"""Seconds to wait for peers to answer before announcing after start or carrier return."""
_ANSWERING = (announcer.State.ANNOUNCING, announcer.State.HANDING_OVER)


def timing(settings: settings_.Settings) -> announcer.Timing:
    return announcer.Timing(
        probe=settings.probe_before_announce,
        gratuitous_interval=settings.gratuitous_interval,
        gratuitous_duration=settings.gratuitous_duration,
        handover_timeout=settings.handover_timeout,
        settle=SETTLE,
    )


class AnnouncerShell:
    """The announcer core of this node and the responders, probes and timers that carry out its
    actions."""

    def __init__(
        self,
        node: str,
        settings: settings_.Settings,
        recorder: events.Recorder,
        *,
        service: Callable[[model.ServiceKey], model.Service | None],
        announced_by: Callable[[Iterable[model.ServiceKey]], set[str]],
        answering_changed: Callable[[set[addresses.IP]], None] = lambda _ips: None,
        member_with_mac: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> None:
        self._node = node
        self._member_with_mac = member_with_mac
        self._events = recorder
        self._service = service
        self._announced_by = announced_by
        self._answering_changed = answering_changed
        self._excluded = settings.excluded_interfaces
        self.core = announcer.Announcer(node, timing(settings))
        self._responders: dict[str, responder.Responder] = {}
        self._links: Mapping[int, net_links.Link] = {}
        self._links_seen: tuple[tuple[int, net_links.Link], ...] = ()
        self._choices: dict[
            addresses.IP, tuple[frozenset[str], interfaces.Choice[net_links.Link]]
        ] = {}
        """Address -> (the interfaces its Services ask for, the interfaces chosen)."""
        self._on: dict[addresses.IP, tuple[str, ...]] = {}
        """Address -> interfaces whose responder answers for it."""
        self._probing: dict[addresses.IP, str] = {}
        self._pending: list[announcer.Action] = []
        self._wake = asyncio.Event()
        self._quiet = asyncio.Event()
        """Set by `run` whenever nothing is being handed over."""
        self._metric_labels: dict[addresses.IP, list[tuple[str, str, str, str]]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        # Read by `speaker.report` (ironlb status / doctor); nothing here decides from them.
        self._wanted: Mapping[addresses.IP, announce.Announcement] = {}
        self._claimed: dict[addresses.IP, ethernet.MacAddress] = {}
        self._in_use_by: dict[addresses.IP, ethernet.MacAddress] = {}

    @property
    def announced(self) -> Mapping[addresses.IP, tuple[str, ...]]:
        """Address -> interfaces answering for it now."""
        return self._on

    @property
    def wanted(self) -> Mapping[addresses.IP, announce.Announcement]:
        """What the last plan asked this node to announce."""
        return self._wanted

    @property
    def claimed(self) -> Mapping[addresses.IP, ethernet.MacAddress]:
        """The last other MAC seen claiming each address this node answers for."""
        return self._claimed

    @property
    def in_use(self) -> Mapping[addresses.IP, ethernet.MacAddress]:
        """Addresses not announced because the probe found another host answering (its MAC)."""
        return self._in_use_by

    # --- inputs: each goes to the core, its actions to the queue --------------------------------

    def _feed(self, actions: list[announcer.Action]) -> None:
        if actions:
            self._pending.extend(actions)
            self._wake.set()

    def settle(self) -> None:
        """Start (or start again) meeting the peers before taking anything new."""
        self._feed(self.core.start(time.monotonic()))

    def carrier_up(self) -> None:
        self._feed(self.core.carrier(time.monotonic(), up=True))

    def membership(
        self, *, running: bool, peers_heard: bool, verified_peers: bool, bad_mac: int
    ) -> None:
        """Membership facts for the next `apply()`, which the speaker makes from the same view
        (the core acts on both together, never on new facts with an old plan)."""
        self.core.record_membership(
            time.monotonic(),
            running=running,
            peers_heard=peers_heard,
            verified_peers=verified_peers,
            bad_mac=bad_mac,
        )

    def apply(
        self,
        mine: Mapping[addresses.IP, announce.Announcement],
        others: Mapping[addresses.IP, str | None],
        links: Mapping[int, net_links.Link],
        changed: Collection[addresses.IP] | None = None,
    ) -> None:
        """Make the core announce exactly `mine`. With `changed`, only those addresses'
        entries in `mine` and `others` changed since the last call: only they (and the ones the
        core has not answered yet, whose `known` may have changed) are worked on, so an event
        costs the addresses it moved, not all this node answers for."""
        self._wanted = mine  # read-only; the speaker replaces it on a full plan
        seen = tuple(links.items())  # the monitor updates its table in place
        if seen != self._links_seen:
            self._choices.clear()  # choices hold while the links do
            self._links_seen = seen
            changed = None
        self._links = links
        if changed is None:
            ips: Collection[addresses.IP] = mine.keys()
            for stale in [ip for ip in self._choices if ip not in mine]:
                del self._choices[stale]
        else:
            ips = set(changed) | (self.core.pending() & mine.keys())
            for ip in changed:
                if ip not in mine:
                    self._choices.pop(ip, None)
        targets = {}
        for ip in ips:
            a = mine.get(ip)
            if a is None:
                continue
            chosen = self._choices.get(ip)
            if chosen is not None and chosen[0] == a.interfaces:
                choice = chosen[1]
            else:
                choice = interfaces.choose(ip, links.values(), a.interfaces, self._excluded)
                self._choices[ip] = (a.interfaces, choice)
            state = self.core.state(ip)
            targets[ip] = announcer.Target(
                tuple(sorted(link.name for link in choice.chosen)),
                a.services,
                refresh=a.refresh,
                # Announced by some node before (restarts included): a failover, no probe.
                known=state in _ANSWERING or bool(self._announced_by(a.services)),
                why_none="; ".join(f"{k}: {v}" for k, v in choice.rejected.items()),
            )
        now = time.monotonic()
        if changed is None:
            self._feed(self.core.plan(now, targets, others))
        else:
            some = {ip: others[ip] for ip in ips if ip in others}
            self._feed(self.core.plan(now, targets, some, ips))

    def _conflict(self, ip: responder.Address, mac: ethernet.MacAddress) -> None:
        self._claimed[ip] = mac
        self._feed(self.core.claimed(time.monotonic(), ip, str(mac)))

    # --- carrying out ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Carry out the core's actions and its timers until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                while True:
                    actions, self._pending = self._pending, []
                    actions += self.core.tick(time.monotonic())
                    await self._carry_out(actions)
                    if self._pending:
                        continue
                    if not self.core.handing_over():
                        self._quiet.set()
                    self._wake.clear()
                    deadline = self.core.next_deadline()
                    delay = None if deadline is None else max(0.0, deadline - time.monotonic())
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            self._tasks = None
            for r in self._responders.values():
                await r.__aexit__(None, None, None)
            self._responders.clear()
            for ip in list(self._on):
                self._forget(ip)

    async def _carry_out(self, actions: list[announcer.Action]) -> None:
        # Only these change what is answered where; gratuitous repeats (most actions, with many
        # addresses) cost no look at the rest.
        moved = {a.address for a in actions if isinstance(a, announcer.Answer | announcer.Stop)}
        before = {ip: self._on.get(ip) for ip in moved}
        for action in actions:
            if isinstance(action, announcer.Probe):
                if self._tasks is not None and action.address not in self._probing:
                    self._probing[action.address] = action.interface
                    self._tasks.create_task(self._probe(action))
            elif isinstance(action, announcer.Answer):
                await self._answer(action)
            elif isinstance(action, announcer.Stop):
                self._stop(action)
            elif isinstance(action, announcer.Gratuitous):
                for name in action.interfaces:
                    if name in self._responders:
                        with contextlib.suppress(ValueError, OSError):
                            self._responders[name].send_gratuitous(action.address)
            elif isinstance(action, announcer.Warn):
                log.warning("%s", action.note)
                if action.reason == "AddressInUse":
                    REFUSED.inc()
                if action.reason:
                    self._warn(action.services, action.reason, action.note)
            elif isinstance(action, announcer.Suppressed):
                SUPPRESSED.inc()
            else:
                ISOLATED.set(int(action.isolated))
                if action.isolated:
                    log.error(
                        "membership packets from peers fail authentication and no peer is "
                        "verified: this node's key differs from the others'; announcing nothing"
                    )
                else:
                    log.info("membership verified again")
        if any(not isinstance(a, announcer.Gratuitous) for a in actions):
            await self._close_unused_responders()
        # An address whose answering failed is fed back to the core, which stops it in a later
        # batch (a Stop, counted then).
        answering = {ip for ip in moved if before[ip] != self._on.get(ip)}
        if answering:
            self._answering_changed(answering)

    async def _probe(self, action: announcer.Probe) -> None:
        """RFC 5227 probe / DAD; the result goes straight back to the core."""
        ip = action.address
        foreign: ethernet.MacAddress | None = None
        failed = ""
        try:
            link = self._link(action.interface)
            if link is None:
                failed = f"interface {action.interface} is gone"
            else:
                r = await self._responder(link)
                foreign = await r.probe(ip, duration=action.duration)
        except OSError as e:
            failed = f"probe failed: {e}"
        finally:
            self._probing.pop(ip, None)
        member = None
        if foreign is None:
            self._in_use_by.pop(ip, None)
        else:
            member = await self._member(str(foreign))
            if member is None:
                self._in_use_by[ip] = foreign
        mac = str(foreign) if foreign else None
        self._feed(self.core.probed(time.monotonic(), ip, mac, member=member, failed=failed))

    async def _member(self, mac: str) -> str | None:
        """The node of this cluster whose MAC `mac` is, if the speaker can tell."""
        if self._member_with_mac is None:
            return None
        try:
            return await self._member_with_mac(mac)
        except (OSError, net_links.NetlinkFailure) as e:  # not knowing: a refusal, the safe side
            log.debug("cannot tell whose MAC %s is: %s", mac, e)
            return None

    async def _answer(self, action: announcer.Answer) -> None:
        ip = action.address
        before = self._on.get(ip, ())
        try:
            for name in action.interfaces:
                link = self._link(name)
                if link is None:
                    raise OSError(f"interface {name} is gone")
                (await self._responder(link)).announce(ip)
        except OSError as e:
            self._on[ip] = tuple(n for n in action.interfaces if n in self._responders)
            self._feed(self.core.failed(time.monotonic(), ip, f"cannot answer for {ip}: {e}"))
            return
        for name in set(before) - set(action.interfaces):
            if name in self._responders:
                self._responders[name].withdraw(ip)
        self._on[ip] = action.interfaces
        if not action.first:
            return
        self._claimed.pop(ip, None)  # a claim from an earlier tenure is old news
        self._in_use_by.pop(ip, None)
        if action.taking_over_from:
            TAKEOVERS.inc()
        log.info(
            "announcing %s on %s (%s)%s",
            ip,
            ", ".join(action.interfaces),
            ", ".join(action.services),
            f", taking over from {action.taking_over_from}" if action.taking_over_from else "",
        )
        labels = [(str(ip), self._node, "layer2", str(key)) for key in action.services]
        for label in labels:
            ANNOUNCED.labels(*label).set(1)
        self._metric_labels[ip] = labels

    def _stop(self, action: announcer.Stop) -> None:
        ip = action.address
        for name in self._on.get(ip, ()):
            if name in self._responders:
                self._responders[name].withdraw(ip)
        level = logging.WARNING if action.warning else logging.INFO
        log.log(level, "stopped announcing %s: %s", ip, action.reason)
        self._forget(ip)

    def _forget(self, ip: addresses.IP) -> None:
        self._on.pop(ip, None)
        for labels in self._metric_labels.pop(ip, ()):
            with contextlib.suppress(KeyError):
                ANNOUNCED.remove(*labels)

    def _link(self, name: str) -> net_links.Link | None:
        return next((link for link in self._links.values() if link.name == name), None)

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
        for ip, names in self._on.items():
            if link.name in names:
                r.announce(ip)
        self._responders[link.name] = r
        return r

    async def _close_unused_responders(self) -> None:
        used = {name for names in self._on.values() for name in names}
        used |= set(self._probing.values())
        for name in [n for n in self._responders if n not in used]:
            await self._responders.pop(name).__aexit__(None, None, None)

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

    # --- handover -------------------------------------------------------------------------------

    async def hand_over(self) -> None:
        """Graceful shutdown: keep answering until another MAC has claimed every address
        announced here (each stops as its claim comes) or the core's handover timeout passed."""
        start = time.monotonic()
        self._quiet.clear()
        self._feed(self.core.drain(start))
        self._wake.set()
        # The core's own timeout ends the handover; this bound only guards against `run` having
        # stopped (shutdown must never hang on it).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.core.timing.handover_timeout + 1.0):
                await self._quiet.wait()
        log.info("handover done after %.2f s", time.monotonic() - start)
