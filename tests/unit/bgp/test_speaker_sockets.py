"""The byte layouts and choices the speaker hands to the kernel, checked without a socket."""

from __future__ import annotations

import socket
import struct
import sys
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from ironlb.bgp import peers, session, sockets

ROUTER_ID = IPv4Address("198.18.0.11")


def test_md5sig_for_ipv4_matches_struct_tcp_md5sig() -> None:
    raw = sockets.md5sig(IPv4Address("198.18.0.1"), "secret")
    assert len(raw) == 216  # sizeof(struct tcp_md5sig) on Linux
    family = struct.unpack_from("=H", raw, 0)[0]
    assert family == socket.AF_INET
    assert raw[4:8] == IPv4Address("198.18.0.1").packed  # sin_addr after sin_port
    assert raw[8:128] == bytes(120)
    flags, prefixlen, keylen, ifindex = struct.unpack_from("=BBHi", raw, 128)
    assert (flags, prefixlen, keylen, ifindex) == (0, 0, 6, 0)
    assert raw[136:] == b"secret" + bytes(74)


def test_md5sig_for_ipv6_puts_the_address_after_flowinfo() -> None:
    address = IPv6Address("2001:db8::1")
    raw = sockets.md5sig(address, "")
    assert struct.unpack_from("=H", raw, 0)[0] == socket.AF_INET6
    assert raw[8:24] == address.packed
    assert struct.unpack_from("=H", raw, 130)[0] == 0  # no key: removes it


def test_passwords_longer_than_the_kernel_allows_are_refused() -> None:
    sockets.md5sig(IPv4Address("198.18.0.1"), "x" * 80)
    with pytest.raises(ValueError, match="at most 80"):
        sockets.md5sig(IPv4Address("198.18.0.1"), "é" * 41)  # 82 bytes in UTF-8


@pytest.mark.parametrize(
    ("ibgp", "multihop", "ttl"), [(False, False, 1), (False, True, 255), (True, False, 255)]
)
def test_ttl_follows_frr(ibgp: bool, multihop: bool, ttl: int) -> None:
    assert sockets.bgp_ttl(ibgp=ibgp, ebgp_multihop=multihop) == ttl


def test_received_ttl_comes_from_ancillary_data() -> None:
    data = (255).to_bytes(4, sys.byteorder)
    assert sockets.received_ttl([(socket.IPPROTO_IP, socket.IP_TTL, data)]) == 255
    assert sockets.received_ttl([(socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, data)]) == 255
    assert sockets.received_ttl([]) == 0  # unknown: fails every TTL check


def _config(
    peer_asn: int | None = None, dynamic_asn: session.DynamicAsn | None = None
) -> session.SessionConfig:
    return session.SessionConfig(
        local_asn=64500, router_id=ROUTER_ID, peer_asn=peer_asn, dynamic_asn=dynamic_asn
    )


def test_peer_config_derives_ibgp_and_ttl_from_the_asns() -> None:
    ebgp = peers.PeerConfig(_config(peer_asn=64501), ip_address("198.18.0.1"))
    assert (ebgp.ibgp, ebgp.ttl) == (False, 1)
    ibgp = peers.PeerConfig(_config(peer_asn=64500), ip_address("198.18.0.1"))
    assert (ibgp.ibgp, ibgp.ttl) == (True, 255)
    dynamic = peers.PeerConfig(
        _config(dynamic_asn=session.DynamicAsn.INTERNAL), ip_address("198.18.0.1")
    )
    assert dynamic.ibgp
    multihop = peers.PeerConfig(
        _config(peer_asn=64501), ip_address("198.18.0.1"), ebgp_multihop=True
    )
    assert multihop.ttl == 255


def test_peer_config_refuses_mixed_families_bad_ports_and_long_passwords() -> None:
    with pytest.raises(ValueError, match="differ in family"):
        peers.PeerConfig(
            _config(peer_asn=1), ip_address("2001:db8::1"), source_address=ip_address("198.18.0.11")
        )
    with pytest.raises(ValueError, match="port"):
        peers.PeerConfig(_config(peer_asn=1), ip_address("198.18.0.1"), port=0)
    with pytest.raises(ValueError, match="MD5"):
        peers.PeerConfig(_config(peer_asn=1), ip_address("198.18.0.1"), password="x" * 81)


def test_peer_names_carry_the_port_only_when_unusual() -> None:
    assert peers.PeerConfig(_config(peer_asn=1), ip_address("198.18.0.1")).name == "198.18.0.1"
    odd = peers.PeerConfig(_config(peer_asn=1), ip_address("198.18.0.1"), port=1179)
    assert odd.name == "198.18.0.1:1179"
