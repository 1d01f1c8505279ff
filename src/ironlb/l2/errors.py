"""The one error the layer-2 decoders raise, with a reason fit for a metric label.

Invariant: decoding untrusted bytes raises `MalformedFrame` and nothing else; `reason` comes from
a closed set, so counting drops by reason cannot blow up a metric's cardinality.
"""

from __future__ import annotations

import enum


class Reason(enum.StrEnum):
    """Why a frame was dropped."""

    TRUNCATED = "truncated"
    UNSUPPORTED_ETHERTYPE = "unsupported_ethertype"
    ARP_HARDWARE = "arp_hardware"
    ARP_PROTOCOL = "arp_protocol"
    ARP_OPERATION = "arp_operation"
    IPV6_VERSION = "ipv6_version"
    UNSUPPORTED_NEXT_HEADER = "unsupported_next_header"
    UNSUPPORTED_ICMPV6_TYPE = "unsupported_icmpv6_type"
    HOP_LIMIT = "hop_limit"
    ICMPV6_CODE = "icmpv6_code"
    CHECKSUM = "checksum"
    ND_OPTION = "nd_option"
    ND_TARGET = "nd_target"
    ND_DAD_FORM = "nd_dad_form"
    NA_SOLICITED_TO_MULTICAST = "na_solicited_to_multicast"


class MalformedFrame(Exception):
    """A frame that is not a well-formed ARP or Neighbor Discovery message we handle."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason
