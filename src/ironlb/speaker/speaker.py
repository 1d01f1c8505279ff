"""The speaker of one node: decides what this node announces, and announces it.

Every change (a Service, its endpoints, a Node, the configuration, a member joining or dying,
an interface losing carrier) marks the plan dirty; the plan loop recomputes `core.announce`'s
decision from the caches and hands this node's part to the layer-2 announcer core
(`ironlb.l2.announcer`, carried out by `speaker.layer2`) and to BGP. Liveness of the other
speakers comes from membership (SWIM over UDP, HMAC-signed with the key in the `memberlist`
Secret), peers from the Node objects. Membership starts as soon as the Secret has a key (at
start or later, without a restart) and follows key rotation; until then (or with
--membership=false) Node readiness is used, and the metric
`ironlb_membership_key_missing_bool` and the
ConfigurationState condition `membershipReady` say so.

Nothing a plan does waits for the API server: status objects, Events and the
ConfigurationState are written by tasks of their own from the latest wanted state.

Start-up: nothing is announced until the caches have listed and membership has heard from the
peers (or `SETTLE` seconds passed), so a restarting speaker never grabs every address because
it has not met anyone yet. The same holds after an interface regains carrier. Settling, the
wrong-key isolation, probing and the handover are states of the announcer core; this module
feeds it facts.

SIGTERM: publish "draining"; the new owners announce; each of this node's addresses stops
being answered once its new owner claimed it (or `handover_timeout` passed); say goodbye to
the members, exit. A rolling restart loses no request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ironlb.core import addresses, announce, config, election, interfaces, model
from ironlb.k8s import client as k8s
from ironlb.k8s import configsource, configstate, events, reflector
from ironlb.membership import model as member_model
from ironlb.membership import settings as member_settings
from ironlb.membership import transport, wire
from ironlb.net import links as net_links
from ironlb.net import neighbours
from ironlb.speaker import bgp, layer2, metrics, secrets, status
from ironlb.speaker import settings as settings_

log = logging.getLogger(__name__)

MEMBERSHIP_READY = "membershipReady"
BGP_PORT = "bgpPortAvailable"


def node_address(node: model.Node | None) -> str | None:
    """A node's primary address: a host-network pod's podIP, which the kubelet probes (on an
    IPv6-primary dual-stack node, the IPv6 one) and which every speaker computes alike for
    membership."""
    ips = node.host_ips() if node is not None else ()
    return ips[0] if ips else None


class _Endpoints(Mapping[model.ServiceKey, tuple[model.EndpointSlice, ...]]):
    """A Service's EndpointSlices, from the index the slice events keep."""

    def __init__(self, by_service: Mapping[model.ServiceKey, Mapping[str, model.EndpointSlice]]):
        self._by_service = by_service

    def __getitem__(self, key: model.ServiceKey) -> tuple[model.EndpointSlice, ...]:
        found = self._by_service.get(key)
        if not found:
            raise KeyError(key)
        return tuple(found.values())

    def __iter__(self) -> Iterator[model.ServiceKey]:
        return (k for k, v in self._by_service.items() if v)

    def __len__(self) -> int:
        return sum(1 for v in self._by_service.values() if v)


class Speaker:
    def __init__(self, client: k8s.Client, settings: settings_.Settings) -> None:
        self.settings = settings
        self.node = settings.node_name
        ns = settings.namespace
        self.client = client
        self.recorder = events.Recorder(client, "ironlb.io/speaker", self.node)
        self.dirty = asyncio.Event()

        # Planning is incremental: a Service or EndpointSlice event re-plans that Service's
        # addresses, a member coming, going or changing its health those it can move;
        # anything else (configuration, Node objects) re-plans all.
        self._changed: set[model.ServiceKey] = set()
        self._live_changed: set[election.NodeName] = set()
        self._replan_all = True
        self._config_changed = True
        self._endpoints: dict[model.ServiceKey, dict[str, model.EndpointSlice]] = {}
        self._slice_owner: dict[str, model.ServiceKey] = {}
        self._l2_planner = announce.Layer2Planner()
        self._bgp_planner = announce.BgpPlanner(
            self.node, pod_cidrs=settings.pod_cidr_advertisement()
        )
        self._live_planned: dict[election.NodeName, announce.Health] | None = None
        self._node_facts: dict[str, tuple[Mapping[str, str], bool]] = {}
        """Per other Node, what makes it a candidate, as last planned."""

        def config_changed(_key: str) -> None:
            self._config_changed = True
            self.dirty.set()

        self.services = reflector.Reflector(
            client, k8s.SERVICES, model.parse_service, on_change=self._service_changed
        )
        self.slices = reflector.Reflector(
            client, k8s.ENDPOINT_SLICES, model.parse_endpoint_slice, on_change=self._slice_changed
        )
        self.nodes = reflector.Reflector(
            client, k8s.NODES, model.parse_node, on_change=self._node_changed
        )
        self.config = configsource.ConfigSource(client, ns, config_changed)
        # This speaker's own status objects are output, never planning input: a change makes
        # their writer compare again. Another node's ServiceL2Status says that node announced
        # the address (a takeover needs no probe): its Service is planned again, alone.
        l2_statuses = reflector.Reflector(
            client,
            k8s.SERVICE_L2_STATUSES,
            status.parse_l2,
            namespace=ns,
            on_change=self._l2_status_changed,
        )
        bgp_statuses = reflector.Reflector(
            client,
            k8s.SERVICE_BGP_STATUSES,
            status.parse_bgp,
            namespace=ns,
            on_change=lambda key: self.bgp_status.changed(key),
        )
        # Every Secret of the namespace (the membership key, BGP passwords), from a cache: an
        # unreachable API server must never hold up announcing.
        self.secrets = reflector.Reflector(
            client, k8s.SECRETS, secrets.parse_secret, namespace=ns, on_change=self._secret_changed
        )
        self.l2_status = status.Statuses(
            client,
            self.node,
            ns,
            l2_statuses,
            resource=k8s.SERVICE_L2_STATUSES,
            prefix="l2",
            on_new=self._node_assigned,
        )
        self.bgp_status = status.Statuses(
            client, self.node, ns, bgp_statuses, resource=k8s.SERVICE_BGP_STATUSES, prefix="bgp"
        )
        self.bgp = bgp.PeerSessions(self.node, ns, self.secret, on_listen=self._bgp_listen)
        self.layer2 = layer2.AnnouncerShell(
            self.node,
            settings,
            self.recorder,
            service=self._service,
            announced_by=self.l2_status.recorded_by,
            answering_changed=self._answering_changed,
            member_with_mac=self._node_with_mac,
        )
        self.state = configstate.Reporter(
            client,
            ns,
            f"speaker-{self.node}",
            "Speaker",
            node=self.node,
            field_manager=status.FIELD_MANAGER,
        )
        self.excluded = settings.excluded_interfaces  # checked regular expressions
        self.applied: config.Config | None = None
        self.members: transport.Transport | None = None
        self._keys_changed = asyncio.Event()
        self.health = announce.Health()
        self._l2_plan: Mapping[addresses.IP, announce.Announcement] = {}
        # The plan indexed, kept with it (full or by the addresses an event re-decided): what
        # this node announces, the others' owners, and which addresses each Service has.
        self._l2_mine: dict[addresses.IP, announce.Announcement] = {}
        self._l2_others: dict[addresses.IP, str | None] = {}
        self._l2_services_at: dict[addresses.IP, tuple[model.ServiceKey, ...]] = {}
        self._l2_addresses_of: dict[model.ServiceKey, set[addresses.IP]] = {}
        # The same for ServiceBGPStatus: the Services of each planned route, and back.
        self._bgp_services_of: dict[tuple[str, announce.Prefix], tuple[model.ServiceKey, ...]] = {}
        self._bgp_routes_of: dict[model.ServiceKey, set[tuple[str, announce.Prefix]]] = {}
        self._bgp_established: frozenset[str] = frozenset()
        self._bgp_entitled: frozenset[str] | None = None
        self.draining = False
        self.links: Mapping[int, net_links.Link] = {}
        self.plan_error: str | None = None
        """Why the last plan failed (readiness says so), None after a good one."""

    @property
    def caches(self) -> list[reflector.Reflector[Any]]:
        return [
            self.services,
            self.slices,
            self.nodes,
            *self.config.reflectors,
            self.l2_status.cache,
            self.bgp_status.cache,
            self.secrets,
        ]

    def _service(self, key: model.ServiceKey) -> model.Service | None:
        return self.services.items.get(key)

    def _node_assigned(self, key: model.ServiceKey) -> None:
        svc = self._service(key)
        if svc is not None:
            self.recorder.record(
                events.Regarding("v1", "Service", svc.namespace, svc.name, svc.metadata.uid),
                "Normal",
                "nodeAssigned",
                f'announcing from node "{self.node}" with protocol "layer2"',
            )

    # --- membership -----------------------------------------------------------------------------

    def _peers(self) -> dict[election.NodeName, member_model.Endpoint]:
        peers = {}
        for name, node in self.nodes.items.items():
            ip = node_address(node)
            if ip is not None:
                peers[election.NodeName(name)] = member_model.Endpoint(
                    ipaddress.ip_address(ip), self.settings.membership_port
                )
        return peers

    async def _node_with_mac(self, mac: str) -> str | None:
        """The other node whose address the kernel's neighbour table maps to `mac` (membership
        traffic keeps an entry for every peer on a shared segment); None if none does."""
        by_ip: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
        for name, node in self.nodes.items.items():
            if name == self.node:
                continue
            for ip in node.ips:
                by_ip[ip] = name
        found = await neighbours.macs(by_ip)
        wanted = mac.lower()
        return next((by_ip[ip] for ip in sorted(found, key=str) if found[ip] == wanted), None)

    def _node_changed(self, key: str) -> None:
        if self.members is not None:
            self.members.set_peers(self._peers())
        # Another node's status changes often (conditions, addresses) and matters to the plan
        # only through what makes it a candidate; its readiness, where it counts (no
        # membership), is a liveness change. This node's own object feeds BGP as a whole.
        node = self.nodes.items.get(key)
        before = self._node_facts.pop(key, None)
        facts = None if node is None else (node.metadata.labels, node.network_unavailable)
        if facts is not None:
            self._node_facts[key] = facts
        if key == self.node or before is None or before != facts:
            self._replan_all = True
        self.dirty.set()

    def _l2_status_changed(self, key: str) -> None:
        self.l2_status.changed(key)
        found = self.l2_status.cache.items.get(key)
        if found is not None and found.status.node != self.node:
            self._changed.add(status.service_of(found))
            self.dirty.set()

    def _service_changed(self, key: str) -> None:
        self._changed.add(model.ServiceKey(key))
        self.dirty.set()

    def _slice_changed(self, key: str) -> None:
        """Keep the EndpointSlices by Service (a plan never scans them all)."""
        before = self._slice_owner.pop(key, None)
        if before is not None:
            self._endpoints.get(before, {}).pop(key, None)
            self._changed.add(before)
        found = self.slices.items.get(key)
        after = found.service_key if found is not None else None
        if found is not None and after is not None:
            self._slice_owner[key] = after
            self._endpoints.setdefault(after, {})[key] = found
            self._changed.add(after)
        self.dirty.set()

    def secret(self, name: str) -> secrets.SecretData | None:
        return self.secrets.items.get(f"{self.settings.namespace}/{name}")

    def membership_keys(self) -> tuple[bytes, ...] | None:
        """The membership keys, or None (with the reason logged by the caller) if unusable."""
        found = self.secret(self.settings.membership_secret)
        try:
            return secrets.parse_keys(found) if found is not None else None
        except ValueError:
            return None

    def _secret_changed(self, key: str) -> None:
        self.dirty.set()  # a BGP password may have changed
        if key != f"{self.settings.namespace}/{self.settings.membership_secret}":
            return
        keys = self.membership_keys()
        if self.members is not None and keys:
            self.members.set_keys(keys)  # rotation: the first key signs, every key verifies
        self._keys_changed.set()

    async def membership(self, bind: str, config: member_settings.Settings) -> None:
        """Run membership from the moment its key exists until cancelled (after `leave()`)."""
        if not self.settings.membership:
            return
        secret = f"{self.settings.namespace}/{self.settings.membership_secret}"
        while (keys := self.membership_keys()) is None:
            metrics.KEY_MISSING.set(1)
            note = (
                f"membership Secret {secret} missing or without a 'secretkey': dead nodes are"
                " found from Node readiness (tens of seconds instead of under one) until it"
                " exists"
            )
            log.warning("%s", note)
            self.state.set_condition(MEMBERSHIP_READY, False, "SecretMissing", note)
            self._keys_changed.clear()
            await self._keys_changed.wait()
        members = transport.Transport(
            election.NodeName(self.node),
            member_model.Endpoint(ipaddress.ip_address(bind), self.settings.membership_port),
            keys,
            on_event=self._member_event,
            config=config,
            meta=self.health.encode(),
        )
        async with members:
            self.members = metrics.MEMBERSHIP.members = members
            members.set_peers(self._peers())
            metrics.KEY_MISSING.set(0)
            self.state.set_condition(MEMBERSHIP_READY, True, "Running")
            log.info("membership running (key from Secret %s)", secret)
            if self.layer2.core.started:
                # Started late: the peers are unconfirmed for a moment and would look dead;
                # meet them before taking anything new.
                self.layer2.settle()
            self.dirty.set()
            await asyncio.Event().wait()

    async def leave(self) -> None:
        """Say goodbye to the members (shutdown, after the handover)."""
        if self.members is not None:
            await self.members.leave()

    def _bgp_listen(self, problem: str | None) -> None:
        if problem is None:
            self.state.set_condition(BGP_PORT, True, "Listening")
            return
        self.state.set_condition(BGP_PORT, False, "PortInUse", problem)
        node = self.nodes.items.get(self.node)
        self.recorder.record(
            events.Regarding("v1", "Node", "", self.node, node.metadata.uid if node else ""),
            "Warning",
            "BGPListenFailed",
            problem,
        )

    def _member_event(self, event: member_model.Event) -> None:
        log.info("member %s: %s", event.member.name, type(event).__name__.removeprefix("Member"))
        self.dirty.set()

    def _live(self) -> dict[election.NodeName, announce.Health]:
        me = election.NodeName(self.node)
        if self.members is None:
            live = {
                election.NodeName(n): announce.Health()
                for n, node in self.nodes.items.items()
                if node.ready
            }
        else:
            live = {
                name: announce.Health.decode(m.meta)
                for name, m in self.members.members.items()
                if m.state.is_live
            }
        live.pop(me, None)
        if me in self.nodes.items:
            live[me] = self.health
        return live

    def _peers_heard(self) -> bool:
        if self.members is None:
            return True
        return member_model.peers_answered(self.members.members, self.node)

    def _membership_facts(self, live: Mapping[election.NodeName, announce.Health]) -> None:
        """Tell the announcer core what membership knows: whether every peer answered, whether
        some peer is verified, how many packets failed authentication (a wrong key)."""
        if self.members is None:
            self.layer2.membership(running=False, peers_heard=True, verified_peers=False, bad_mac=0)
            return
        self.layer2.membership(
            running=True,
            peers_heard=self._peers_heard(),
            verified_peers=bool(set(live) - {self.node}),
            bad_mac=self.members.dropped.get(wire.DropReason.BAD_MAC, 0),
        )

    # --- the plan -------------------------------------------------------------------------------

    async def plan_once(self) -> None:
        if self._config_changed:
            # Validated when the configuration changes, not on every Service event.
            self._config_changed = False
            cfg, problems = self.config.candidate()
            # Recorded, written by the reporter's own task: a plan never waits for the API.
            if problems or cfg is None:
                self.state.set_valid(False, "; ".join(problems))
            else:
                self.applied = cfg
                self._replan_all = True
                self.state.set_valid(True)
        if self.applied is None:
            return
        health = announce.Health(
            draining=self.draining,
            blind=interfaces.blind(self.links.values(), self.excluded),
            blocked=interfaces.blocked_subnets(self.links.values(), self.excluded),
        )
        if health != self.health:
            self.health = health  # this node's entry of `live`
            if self.members is not None:
                self.members.set_meta(health.encode())
        live = self._live()
        before = self._live_planned
        if before is None:
            self._replan_all = True
        elif live != before:
            self._live_changed |= {
                n for n in live.keys() | before.keys() if live.get(n) != before.get(n)
            }
        self._live_planned = live
        view = announce.View(
            services=self.services.items,
            endpoints=_Endpoints(self._endpoints),
            nodes=self.nodes.items,
            config=self.applied,
            live=live,
            lb_class=self.settings.lb_class,
            ignore_exclude_lb=self.settings.ignore_exclude_lb,
        )
        replan_all, changed, live_changed = self._replan_all, self._changed, self._live_changed
        self._replan_all, self._changed, self._live_changed = False, set(), set()
        affected: set[addresses.IP] | None = None
        if replan_all:
            plan = self._l2_planner.full(view)
            bgp_plan = self._bgp_planner.full(view)
        else:
            affected = self._l2_planner.services(view, changed)
            affected |= self._l2_planner.liveness(view, live_changed)
            plan = self._l2_planner.plan
            bgp_plan = self._bgp_planner.services(view, changed)  # liveness is no BGP input
        if self.draining:
            # The announcer core hands over and takes nothing new; the index follows the plan
            # all the same.
            self._index_l2(plan, affected)
            self._l2_plan = plan
            return
        self._membership_facts(live)
        touched = self._index_l2(plan, affected)
        self.layer2.apply(self._l2_mine, self._l2_others, self.links, affected)
        self._l2_plan = plan
        if touched is None:
            self._publish_l2_status()
        else:
            self._publish_l2_status_of(touched)
        routes_changed = self._bgp_planner.changed
        await self.bgp.apply(
            bgp_plan, self.nodes.items.get(self.node), self.applied, routes_changed
        )
        self._publish_bgp_status(bgp_plan, routes_changed, frozenset(live))

    def _publish_bgp_status(
        self,
        plan: announce.BgpPlan,
        changed: set[tuple[str, announce.Prefix]] | None,
        entitled: frozenset[str],
    ) -> None:
        """ServiceBGPStatus: each Service -> the established peers its routes go to. Kept by
        the routes the plan decided again, unless everything may have changed (a full plan,
        a session up or down, other live nodes)."""
        established = frozenset(self.bgp.established)
        full = (
            changed is None
            or established != self._bgp_established
            or entitled != self._bgp_entitled
        )
        self._bgp_established, self._bgp_entitled = established, entitled
        if full:
            self._bgp_services_of, self._bgp_routes_of = {}, {}
            changed = {(peer, prefix) for peer, routes in plan.routes.items() for prefix in routes}
        assert changed is not None
        touched: set[model.ServiceKey] = set()
        for route_key in changed:
            for key in self._bgp_services_of.pop(route_key, ()):
                touched.add(key)
                held = self._bgp_routes_of[key]
                held.discard(route_key)
                if not held:
                    del self._bgp_routes_of[key]
            peer, prefix = route_key
            route = plan.routes.get(peer, {}).get(prefix)
            if route is not None and route.services:
                self._bgp_services_of[route_key] = route.services
                for key in route.services:
                    self._bgp_routes_of.setdefault(key, set()).add(route_key)
                    touched.add(key)

        def peers_of(key: model.ServiceKey) -> set[str] | None:
            up = {peer for peer, _ in self._bgp_routes_of.get(key, ()) if peer in established}
            return up or None

        if full:
            desired = {key: up for key in self._bgp_routes_of if (up := peers_of(key))}
            self.bgp_status.set(desired, entitled)
        else:
            self.bgp_status.update({key: peers_of(key) for key in touched})

    def _index_l2(
        self,
        plan: Mapping[addresses.IP, announce.Announcement],
        affected: Iterable[addresses.IP] | None,
    ) -> set[model.ServiceKey] | None:
        """Bring the plan's index up to date: all of it (`affected` None: returns None), or
        the addresses an event re-decided (returns the Services whose addresses those were or
        are)."""
        if affected is None:
            self._l2_mine, self._l2_others = {}, {}
            self._l2_services_at, self._l2_addresses_of = {}, {}
            affected = plan.keys()
            touched: set[model.ServiceKey] | None = None
        else:
            touched = set()
        for ip in affected:
            for key in self._l2_services_at.pop(ip, ()):
                if touched is not None:
                    touched.add(key)
                held = self._l2_addresses_of[key]
                held.discard(ip)
                if not held:
                    del self._l2_addresses_of[key]
            self._l2_mine.pop(ip, None)
            self._l2_others.pop(ip, None)
            a = plan.get(ip)
            if a is None:
                continue
            if a.owner == self.node:
                self._l2_mine[ip] = a
            else:
                self._l2_others[ip] = a.owner
            if a.services:
                self._l2_services_at[ip] = a.services
                for key in a.services:
                    self._l2_addresses_of.setdefault(key, set()).add(ip)
                    if touched is not None:
                        touched.add(key)
        return touched

    def _answering_changed(self, ips: set[addresses.IP]) -> None:
        """The addresses this node answers for changed: their Services' status objects follow."""
        # While draining, the status objects stay as they are: a restarting node reads them to
        # know that its addresses were announced before (no probe, which the old owner, still
        # handing over, would answer).
        if not self.draining:
            self._publish_l2_status_of(
                {key for ip in ips for key in self._l2_services_at.get(ip, ())}
            )

    def _l2_status_of(self, key: model.ServiceKey) -> tuple[set[str] | None, set[str] | None]:
        """(the interfaces this node answers for `key`'s addresses on, None if it answers for
        none; their owners, None if `key` has no planned address)."""
        held = self._l2_addresses_of.get(key)
        if held is None:
            return None, None
        plan, announced = self._l2_plan, self.layer2.announced
        interfaces: set[str] | None = None
        owners: set[str] = set()
        for ip in held:
            owner = plan[ip].owner
            if owner:
                owners.add(owner)
            if ip in announced:
                interfaces = (interfaces or set()) | set(announced[ip])
        return interfaces, owners

    def _publish_l2_status(self) -> None:
        desired: dict[model.ServiceKey, set[str]] = {}
        owners: dict[model.ServiceKey, set[str]] = {}
        for key in self._l2_addresses_of:
            interfaces, held_by = self._l2_status_of(key)
            assert held_by is not None
            owners[key] = held_by
            if interfaces is not None:
                desired[key] = interfaces
        self.l2_status.set(desired, owners)

    def _publish_l2_status_of(self, keys: Iterable[model.ServiceKey]) -> None:
        """The same for these Services only (an event re-decided their addresses)."""
        desired: dict[model.ServiceKey, set[str] | None] = {}
        owners: dict[model.ServiceKey, set[str] | None] = {}
        for key in keys:
            desired[key], owners[key] = self._l2_status_of(key)
        self.l2_status.update(desired, owners)

    async def plan_loop(self) -> None:
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            try:
                await self.plan_once()
                self.plan_error = None
            except Exception as e:
                # A bug must not silence the node: keep what is announced, say so (log,
                # metric, readiness), try again.
                metrics.PLAN_ERRORS.inc()
                self._replan_all = self._config_changed = True  # what it consumed is lost
                self.plan_error = f"{type(e).__name__}: {e}"
                log.exception("planning failed; retrying in 1 s")
                await asyncio.sleep(1.0)
                self.dirty.set()

    async def watch_links(self, monitor: net_links.Monitor) -> None:
        async for event in monitor:
            self.links = monitor.links
            if event.change is net_links.Change.CARRIER_UP:
                # Peers may have declared us dead meanwhile: meet them before announcing.
                self.layer2.carrier_up()
            self.dirty.set()

    async def follow_sessions(self) -> None:
        """Re-plan when a BGP session comes up or goes down (status objects follow)."""
        while True:
            await self.bgp.changed.wait()
            self.bgp.changed.clear()
            self.dirty.set()

    @property
    def isolated(self) -> bool:
        """Peers' membership packets fail authentication and none is verified (a wrong key)."""
        return self.layer2.core.isolated

    def ready(self) -> str | None:
        missing = [c.name for c in self.caches if not c.listed.is_set()]
        if missing:
            return f"caches not synced: {', '.join(missing)}"
        if self.plan_error is not None:
            return f"cannot plan: {self.plan_error}"
        return None if self.layer2.core.started else "meeting the other speakers"
