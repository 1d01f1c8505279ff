"""Netlink adapter over pyroute2: links, addresses, link-state events. pyroute2 stays in here."""
