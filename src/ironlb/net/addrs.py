"""Adding and removing one address of a link over netlink (the control-plane VIP).

pyroute2 stays inside `net/`: callers pass `ipaddress` values and get `NetlinkFailure`.
Both calls are idempotent: adding an address the link has, or removing one it lacks, is not an
error, so a shell may repeat them after a crash or a race with an administrator.
"""

from __future__ import annotations

import errno
import ipaddress

from ironlb.net import links

IFA_F_NODAD = 0x02
"""No duplicate address detection: an IPv6 VIP is usable at once (the VIP moves by design)."""


async def add(
    interface: str,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    prefix: int,
    index: int | None = None,
) -> bool:
    """Add `address/prefix` to `interface` (whose index, when known, saves a dump); False if it
    was there already."""
    flags = IFA_F_NODAD if address.version == 6 else 0
    async with links._rtnl() as ipr:
        index = index if index is not None else await _index(interface)
        try:
            with links._translating():
                await ipr.addr(
                    "add", index=index, address=str(address), prefixlen=prefix, flags=flags
                )
        except links.NetlinkFailure as e:
            if e.errno == errno.EEXIST:
                return False
            raise
    return True


async def remove(
    interface: str,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    prefix: int,
    index: int | None = None,
) -> bool:
    """Remove `address/prefix` from `interface`; False if it was not there (or the link is
    gone)."""
    async with links._rtnl() as ipr:
        try:
            index = index if index is not None else await _index(interface)
        except links.NetlinkFailure as e:
            if e.errno == errno.ENODEV:
                return False
            raise
        try:
            with links._translating():
                await ipr.addr("del", index=index, address=str(address), prefixlen=prefix)
        except links.NetlinkFailure as e:
            if e.errno in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ENODEV):
                return False
            raise
    return True


async def _index(interface: str) -> int:
    for link in await links.links():
        if link.name == interface:
            return link.index
    raise links.NetlinkFailure(f"no interface {interface!r}", errno.ENODEV)
