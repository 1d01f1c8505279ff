"""The kernel's neighbour table (ARP / NDP cache): which MAC an address of the LAN has.

The layer-2 speaker asks it who answered a probe: membership packets flow between the speakers
every few hundred milliseconds, so the kernel holds the MAC of every peer node on a shared
segment. pyroute2 stays inside `net/`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ironlb.net import links

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# NUD_INCOMPLETE and NUD_FAILED entries carry no (or no longer a valid) link-layer address.
_NUD_INCOMPLETE = 0x01
_NUD_FAILED = 0x20


async def macs(addresses: Iterable[IP]) -> dict[IP, str]:
    """The MAC (lower case, colon-separated) the neighbour table holds for each of `addresses`,
    on any interface; an address without a usable entry is left out. One dump, whatever the
    count."""
    wanted = set(addresses)
    if not wanted:
        return {}
    found: dict[IP, str] = {}
    async with links._rtnl() as ipr:
        with links._translating():
            async for message in await ipr.neigh("dump"):
                state = int(message.get("state") or 0)
                if state & (_NUD_INCOMPLETE | _NUD_FAILED):
                    continue
                dst, lladdr = message.get("NDA_DST"), message.get("NDA_LLADDR")
                if dst is None or lladdr is None:
                    continue
                try:
                    ip = ipaddress.ip_address(dst)
                except ValueError:
                    continue
                if ip in wanted:
                    found[ip] = str(lladdr).lower()
    return found
