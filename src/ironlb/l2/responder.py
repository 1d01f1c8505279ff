"""The layer-2 responder: ARP and NDP answers for the addresses this node announces on a link.

One `Responder` per interface, with one raw socket per family (ARP; IPv6 Neighbor Discovery),
each filtered in the kernel (`bpf`), non-blocking and read by the event loop. Every frame goes
through `frames.decode_frame`; a malformed one is counted by reason and dropped, and nothing a
frame contains can raise out of the loop. For each well-formed frame:
- an ARP request or probe for an owned address, broadcast or sent to this interface's MAC, gets a
  reply with this interface's MAC, unicast to the asker;
- a Neighbor Solicitation for an owned address, to a multicast group or to this MAC, gets a
  Neighbor Advertisement with this MAC (solicited, override; a DAD probe is answered to all
  nodes). The solicited-node group of every owned IPv6 address is joined (`rawsocket`);
- another MAC claiming an owned address (ARP sender, NA target, NS source) is a conflict:
  counted, logged, and passed to `on_conflict(address, mac)`, which is the speaker's to act upon;
- during `probe(address)`, the same claims, or another host probing for the address too (RFC 5227
  §2.1.1), end the probe with that host's MAC.
Frames this host sends are never seen (the BPF programs drop outgoing frames); frames whose
sender is this interface's own MAC (looped back by the network) are ignored.

`announce` / `withdraw` change the owned addresses at once: a frame handled after `withdraw`
returns is not answered. When and how often to announce gratuitously is the speaker's policy;
`send_gratuitous` sends one announcement.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

import prometheus_client
from prometheus_client import metrics_core

from ironlb.l2 import arp, bpf, errors, ethernet, frames, ndp, rawsocket

log = logging.getLogger(__name__)

Address: TypeAlias = IPv4Address | IPv6Address
ConflictHandler: TypeAlias = Callable[[Address, ethernet.MacAddress], None]

_FRAME_SIZE = 9216
"""Bytes read per frame: a jumbo frame. ARP and ND are far smaller; a longer frame is truncated
and then dropped as malformed."""
_BATCH = 64
"""Frames handled per wake-up, so that a flood cannot keep the loop from everything else."""


class _ExactNameCounter:
    """A per-address counter exposed under exactly its name.

    prometheus_client exposes every counter as `<name>_total`; MetalLB's Go client does not
    add the suffix, and dashboards query MetalLB's names. So these are exposed untyped, which
    PromQL handles like counters.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self._name = name
        self._documentation = documentation
        self._counts: collections.Counter[str] = collections.Counter()
        prometheus_client.REGISTRY.register(self)

    def inc(self, address: Address) -> None:
        self._counts[str(address)] += 1

    def collect(self) -> Iterator[metrics_core.Metric]:
        family = metrics_core.UnknownMetricFamily(self._name, self._documentation, labels=["ip"])
        for ip, count in sorted(self._counts.items()):
            family.add_metric([ip], count)
        yield family


REQUESTS_RECEIVED = _ExactNameCounter(
    "metallb_layer2_requests_received", "ARP requests and neighbor solicitations for owned IPs."
)
RESPONSES_SENT = _ExactNameCounter(
    "metallb_layer2_responses_sent", "ARP replies and neighbor advertisements sent for owned IPs."
)
GRATUITOUS_SENT = _ExactNameCounter(
    "metallb_layer2_gratuitous_sent",
    "Gratuitous ARP packets and unsolicited neighbor advertisements sent for owned IPs.",
)
MALFORMED_FRAMES = prometheus_client.Counter(
    "ironlb_layer2_malformed_frames_total",
    "Frames the layer-2 responder dropped as not well-formed ARP or NDP, by reason.",
    ["reason"],
)
CONFLICTS = prometheus_client.Counter(
    "ironlb_layer2_conflicts_total",
    "Frames from another MAC claiming an address this node announces.",
)


class Responder:
    """ARP and NDP for the owned addresses on one interface; use as `async with`.

    `mac` is the interface's MAC for the responder's whole life: when the link's MAC changes
    (`net.links` reports LINK_CHANGED), the speaker replaces the responder.
    """

    def __init__(
        self,
        interface: str,
        index: int,
        mac: ethernet.MacAddress,
        *,
        on_conflict: ConflictHandler,
    ) -> None:
        self.interface = interface
        self.index = index
        self.mac = mac
        self._on_conflict = on_conflict
        self._owned: set[Address] = set()
        self._probes: dict[Address, asyncio.Future[ethernet.MacAddress]] = {}
        self._arp_socket: socket.socket | None = None
        self._nd_socket: socket.socket | None = None
        self._memberships: rawsocket.Memberships | None = None
        self._resources = contextlib.ExitStack()

    @property
    def owned(self) -> frozenset[Address]:
        return frozenset(self._owned)

    async def __aenter__(self) -> Responder:
        loop = asyncio.get_running_loop()
        with contextlib.ExitStack() as stack:
            self._arp_socket = stack.enter_context(
                rawsocket.open_filtered(self.interface, ethernet.EtherType.ARP, bpf.ARP)
            )
            self._nd_socket = stack.enter_context(
                rawsocket.open_filtered(
                    self.interface, ethernet.EtherType.IPV6, bpf.NEIGHBOR_DISCOVERY
                )
            )
            self._memberships = rawsocket.Memberships(self._nd_socket, self.index)
            stack.callback(self._memberships.close)
            self._memberships.update(self._owned_ipv6())
            for sock in (self._arp_socket, self._nd_socket):
                loop.add_reader(sock, self._read, sock)
                stack.callback(loop.remove_reader, sock)
            self._resources = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._resources.close()
        self._arp_socket = self._nd_socket = self._memberships = None

    def announce(self, address: Address) -> None:
        """Answer for `address` from now on."""
        if address in self._owned:
            return
        self._owned.add(address)
        if isinstance(address, IPv6Address) and self._memberships is not None:
            self._memberships.add(address)

    def withdraw(self, address: Address) -> None:
        """Stop answering for `address`, at once."""
        if address not in self._owned:
            return
        self._owned.discard(address)
        if isinstance(address, IPv6Address) and self._memberships is not None:
            self._memberships.remove(address)

    def send_gratuitous(self, address: Address) -> None:
        """Tell the LAN that owned `address` is at this interface's MAC: a gratuitous ARP request
        and reply (some hosts update their cache from only one of them), or an unsolicited
        Neighbor Advertisement with override to all nodes."""
        if address not in self._owned:
            raise ValueError(f"{address} is not announced on {self.interface}")
        if isinstance(address, IPv4Address):
            sock = self._socket(self._arp_socket)
            announcements = [
                frames.gratuitous_arp_request(self.mac, address),
                frames.gratuitous_arp_reply(self.mac, address),
            ]
        else:
            sock = self._socket(self._nd_socket)
            announcements = [frames.unsolicited_neighbor_advertisement(self.mac, address)]
        for frame in announcements:
            if self._send(sock, frame):
                GRATUITOUS_SENT.inc(address)

    async def probe(
        self, address: Address, *, duration: float = 1.0, probes: int = 3
    ) -> ethernet.MacAddress | None:
        """The MAC of another host using `address`, or None if none shows up within `duration`.

        Sends `probes` RFC 5227 ARP probes (or RFC 4862 DAD solicitations), evenly spread over
        `duration`, from no address, so that no neighbour learns anything from them.
        """
        if address in self._probes:
            raise RuntimeError(f"already probing {address} on {self.interface}")
        if isinstance(address, IPv4Address):
            sock = self._socket(self._arp_socket)
            frame = frames.arp_probe(self.mac, address)
        else:
            sock = self._socket(self._nd_socket)
            frame = frames.duplicate_address_probe(self.mac, address)
        answered: asyncio.Future[ethernet.MacAddress] = asyncio.get_running_loop().create_future()
        self._probes[address] = answered
        try:
            for _ in range(probes):
                self._send(sock, frame)
                done, _ = await asyncio.wait({answered}, timeout=duration / probes)
                if done:
                    return answered.result()
            return None
        finally:
            del self._probes[address]

    # --- receiving ------------------------------------------------------------------------------

    def _read(self, sock: socket.socket) -> None:
        for _ in range(_BATCH):
            try:
                data = sock.recv(_FRAME_SIZE)
            except BlockingIOError:
                return
            except OSError as e:
                # ENETDOWN once when the interface goes down; the speaker follows link events.
                log.warning("%s: reading frames: %s", self.interface, e.strerror)
                return
            self._handle(data)

    def _handle(self, data: bytes) -> None:
        try:
            frame = frames.decode_frame(data)
        except errors.MalformedFrame as e:
            MALFORMED_FRAMES.labels(e.reason.value).inc()
            log.debug("%s: dropped a malformed frame (%s)", self.interface, e.reason.value)
            return
        message = frame.message
        if isinstance(message, arp.Arp):
            self._arp_received(frame, message)
        elif isinstance(message, ndp.NeighborSolicitation):
            self._solicitation_received(frame, message)
        else:
            self._advertisement_received(frame, message)

    def _arp_received(self, frame: frames.Frame, message: arp.Arp) -> None:
        if message.sender_mac == self.mac:
            return
        if message.kind is arp.Kind.PROBE:
            self._probed(message.target_ip, message.sender_mac)
        else:
            self._claimed(message.sender_ip, message.sender_mac)
        if (
            message.kind in (arp.Kind.REQUEST, arp.Kind.PROBE)
            and message.target_ip in self._owned
            and frame.header.destination in (ethernet.BROADCAST, self.mac)
        ):
            answer = frames.arp_reply(frame, self.mac)
            self._answer(self._socket(self._arp_socket), message.target_ip, answer)

    def _solicitation_received(
        self, frame: frames.Frame, message: ndp.NeighborSolicitation
    ) -> None:
        sender = message.source_link_layer or frame.header.source
        if sender == self.mac:
            return
        if message.is_duplicate_address_detection:
            self._probed(message.target, sender)
        else:
            self._claimed(message.source, sender)
        destination = frame.header.destination
        if message.target in self._owned and (
            destination == self.mac or destination.packed[0] & 1  # multicast or broadcast
        ):
            answer = frames.neighbor_advertisement(frame, self.mac)
            self._answer(self._socket(self._nd_socket), message.target, answer)

    def _advertisement_received(
        self, frame: frames.Frame, message: ndp.NeighborAdvertisement
    ) -> None:
        sender = message.target_link_layer or frame.header.source
        if sender != self.mac:
            self._claimed(message.target, sender)

    def _claimed(self, address: Address, mac: ethernet.MacAddress) -> None:
        """Another host says `address` is at `mac`."""
        self._probed(address, mac)
        if address in self._owned:
            CONFLICTS.inc()
            # Debug only: a flood of forged claims must not flood the log (the owner of the
            # responder reports conflicts, rate-limited).
            log.debug("%s: %s is claimed by %s too", self.interface, address, mac)
            self._on_conflict(address, mac)

    def _probed(self, address: Address, mac: ethernet.MacAddress) -> None:
        """Another host uses, or wants, `address`: the answer to our probe, if we are probing."""
        answered = self._probes.get(address)
        if answered is not None and not answered.done():
            answered.set_result(mac)

    # --- sending --------------------------------------------------------------------------------

    def _answer(self, sock: socket.socket, address: Address, frame: bytes) -> None:
        REQUESTS_RECEIVED.inc(address)
        if self._send(sock, frame):
            RESPONSES_SENT.inc(address)

    def _send(self, sock: socket.socket, frame: bytes) -> bool:
        try:
            sock.send(frame)
        except OSError as e:
            log.warning("%s: a frame was not sent: %s", self.interface, e.strerror)
            return False
        return True

    def _socket(self, sock: socket.socket | None) -> socket.socket:
        if sock is None:
            raise RuntimeError(f"the responder on {self.interface} is not running")
        return sock

    def _owned_ipv6(self) -> set[IPv6Address]:
        return {address for address in self._owned if isinstance(address, IPv6Address)}
