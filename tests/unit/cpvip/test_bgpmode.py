"""bgp mode's session settings: what `ironlb cpvip --mode bgp` flags become for the speaker's BGP
code (pure; the sessions themselves run in tests/e2e/test_cpvip_bgp.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from ironlb.bgp import families
from ironlb.cpvip import bgpmode, settings
from ironlb.cpvip import main as arp_main

RID = ipaddress.IPv4Address("198.51.100.7")


def make(**values: object) -> settings.Settings:
    base = {"mode": "bgp", "bgp_peer_asn": 64500, "bgp_local_asn": 64520}
    return settings.Settings(**{**base, **values})  # type: ignore[arg-type]


def test_one_session_per_router_for_the_vips_family_only() -> None:
    s = make(address="192.0.2.30", bgp_peers=("198.51.100.1", "198.51.100.2"), bgp_hold_time=3)
    configs = bgpmode.peer_configs(s, RID, "")
    assert [str(c.address) for c in configs] == ["198.51.100.1", "198.51.100.2"]
    (session,) = {c.session for c in configs}
    assert (session.local_asn, session.peer_asn, session.router_id) == (64520, 64500, RID)
    assert session.families == {families.Family.IPV4_UNICAST}
    assert session.timers.hold_time == 3
    assert session.graceful_restart is None  # a restart withdraws: the router must not wait
    assert all(c.port == 179 and c.source_address is None for c in configs)
    v6 = make(
        address="2001:db8:2::30",
        bgp_peers=("2001:db8::1",),
        bgp_peer_port=1179,
        bgp_source_address="2001:db8::7",
    )
    (c6,) = bgpmode.peer_configs(v6, RID, "secret")
    assert c6.session.families == {families.Family.IPV6_UNICAST}
    assert (c6.port, str(c6.source_address), c6.password) == (1179, "2001:db8::7", "secret")


def test_password_file(tmp_path: Path) -> None:
    assert bgpmode.read_password(None) == ""
    good = tmp_path / "pw"
    good.write_text("s3cret \nignored\n")
    assert bgpmode.read_password(str(good)) == "s3cret"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(arp_main.StartError, match="first line is empty"):
        bgpmode.read_password(str(empty))
    s = make(address="192.0.2.30", bgp_peers=("198.51.100.1",))
    with pytest.raises(ValueError, match="at most 80"):
        bgpmode.peer_configs(s, RID, "x" * 81)
