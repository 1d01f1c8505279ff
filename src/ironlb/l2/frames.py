"""Whole Ethernet frames of the layer-2 responder: decode what arrives, build what is sent.

`decode_frame` is the only entry point for untrusted bytes: it returns an ARP or Neighbor
Discovery message with its Ethernet header, or raises `errors.MalformedFrame` (also for frames
that are well formed but not ARP/ND: the responder has no use for them either), and never
anything else. The builders return frames ready for an AF_PACKET SOCK_RAW socket, in the forms
Linux neighbours act upon:
- ARP replies go unicast to the asker; gratuitous ARP has sender IP = target IP and is broadcast,
  in a request form (target MAC zero, RFC 5227 announcement) and a reply form (target MAC =
  sender MAC, which Linux requires before it treats a reply as gratuitous);
- Neighbor Advertisements always carry the target link-layer option, with hop limit 255 and a
  correct checksum, from the owned address itself (as Linux answers for its own addresses).
Replies keep the 802.1Q tag of the request, so a socket on a trunk answers on the right VLAN.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from ironlb.l2 import arp, errors, ethernet, ndp

Message = arp.Arp | ndp.NeighborSolicitation | ndp.NeighborAdvertisement


@dataclass(frozen=True, slots=True)
class Frame:
    header: ethernet.Header
    message: Message


def decode_frame(data: bytes) -> Frame:
    header, ethertype, payload = ethernet.decode(data)
    message: Message
    if ethertype == ethernet.EtherType.ARP:
        message = arp.decode(payload)
    elif ethertype == ethernet.EtherType.IPV6:
        message = ndp.decode(payload)
    else:
        raise errors.MalformedFrame(errors.Reason.UNSUPPORTED_ETHERTYPE)
    return Frame(header, message)


def encode_frame(frame: Frame) -> bytes:
    if isinstance(frame.message, arp.Arp):
        return ethernet.encode(frame.header, ethernet.EtherType.ARP, arp.encode(frame.message))
    return ethernet.encode(frame.header, ethernet.EtherType.IPV6, ndp.encode(frame.message))


def arp_request(mac: ethernet.MacAddress, ip: IPv4Address, target_ip: IPv4Address) -> bytes:
    """Who has `target_ip`? Tell `ip` (broadcast)."""
    return _broadcast_arp(arp.Operation.REQUEST, mac, ip, ethernet.ZERO, target_ip)


def arp_probe(mac: ethernet.MacAddress, target_ip: IPv4Address) -> bytes:
    """RFC 5227 probe: is `target_ip` in use? Sender IP 0.0.0.0 so no cache learns from it."""
    return _broadcast_arp(arp.Operation.REQUEST, mac, arp.UNSPECIFIED, ethernet.ZERO, target_ip)


def gratuitous_arp_request(mac: ethernet.MacAddress, ip: IPv4Address) -> bytes:
    """`ip` is at `mac`, as a request (also the RFC 5227 announcement)."""
    return _broadcast_arp(arp.Operation.REQUEST, mac, ip, ethernet.ZERO, ip)


def gratuitous_arp_reply(mac: ethernet.MacAddress, ip: IPv4Address) -> bytes:
    """`ip` is at `mac`, as a reply: for hosts that only update their cache from replies."""
    return _broadcast_arp(arp.Operation.REPLY, mac, ip, mac, ip)


def arp_reply(request: Frame, mac: ethernet.MacAddress) -> bytes:
    """Answer an ARP request (or probe) for an address we own with `mac`, unicast to the asker."""
    asked = request.message
    if not isinstance(asked, arp.Arp) or asked.operation is not arp.Operation.REQUEST:
        raise ValueError(f"not an ARP request: {asked!r}")
    answer = arp.Arp(arp.Operation.REPLY, mac, asked.target_ip, asked.sender_mac, asked.sender_ip)
    header = ethernet.Header(asked.sender_mac, mac, request.header.vlan)
    return encode_frame(Frame(header, answer))


def neighbor_advertisement(request: Frame, mac: ethernet.MacAddress) -> bytes:
    """Answer a Neighbor Solicitation for an address we own with `mac` (RFC 4861 §7.2.4).

    A DAD solicitation (from ::) is answered to all nodes and not solicited; any other is
    answered to its source, at its source link-layer address (or the frame's source MAC when it
    has none). Override is set: the address is ours, not an anycast or proxied one.
    """
    asked = request.message
    if not isinstance(asked, ndp.NeighborSolicitation):
        raise ValueError(f"not a neighbor solicitation: {asked!r}")
    if asked.is_duplicate_address_detection:
        destination, destination_mac = ndp.ALL_NODES, ndp.multicast_mac(ndp.ALL_NODES)
    else:
        destination = asked.source
        destination_mac = asked.source_link_layer or request.header.source
    answer = ndp.NeighborAdvertisement(
        source=asked.target,
        destination=destination,
        target=asked.target,
        target_link_layer=mac,
        solicited=not asked.is_duplicate_address_detection,
        override=True,
    )
    header = ethernet.Header(destination_mac, mac, request.header.vlan)
    return encode_frame(Frame(header, answer))


def unsolicited_neighbor_advertisement(mac: ethernet.MacAddress, target: IPv6Address) -> bytes:
    """`target` is at `mac`, to all nodes with override set: the IPv6 gratuitous ARP."""
    advertisement = ndp.NeighborAdvertisement(
        source=target,
        destination=ndp.ALL_NODES,
        target=target,
        target_link_layer=mac,
        override=True,
    )
    header = ethernet.Header(ndp.multicast_mac(ndp.ALL_NODES), mac)
    return encode_frame(Frame(header, advertisement))


def duplicate_address_probe(mac: ethernet.MacAddress, target: IPv6Address) -> bytes:
    """RFC 4862 DAD solicitation: is `target` in use? From ::, to its solicited-node group."""
    group = ndp.solicited_node_multicast(target)
    solicitation = ndp.NeighborSolicitation(
        source=ndp.UNSPECIFIED, destination=group, target=target
    )
    header = ethernet.Header(ndp.multicast_mac(group), mac)
    return encode_frame(Frame(header, solicitation))


def _broadcast_arp(
    operation: arp.Operation,
    mac: ethernet.MacAddress,
    sender_ip: IPv4Address,
    target_mac: ethernet.MacAddress,
    target_ip: IPv4Address,
) -> bytes:
    message = arp.Arp(operation, mac, sender_ip, target_mac, target_ip)
    return encode_frame(Frame(ethernet.Header(ethernet.BROADCAST, mac), message))
