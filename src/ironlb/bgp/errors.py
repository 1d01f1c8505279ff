"""BGP errors: one exception type, and it is the NOTIFICATION the RFCs say to send.

Every decoder and validator in `ironlb.bgp` raises `BgpError(code, subcode, data)` and nothing
else, so the session turns any failure into exactly one NOTIFICATION (RFC 4271 §6) without a
translation table. Errors that RFC 7606 downgrades to "treat-as-withdraw" are not raised: the
UPDATE decoder attaches them to the decoded message instead (see `messages.Update`).

Codes and subcodes: RFC 4271 §4.5, RFC 5492 (Unsupported Capability), RFC 6608 (FSM error
subcodes), RFC 4486 (Cease subcodes), RFC 7313 (ROUTE-REFRESH message error).
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    MESSAGE_HEADER = 1
    OPEN_MESSAGE = 2
    UPDATE_MESSAGE = 3
    HOLD_TIMER_EXPIRED = 4
    FSM = 5
    CEASE = 6
    ROUTE_REFRESH_MESSAGE = 7


class HeaderSubcode(enum.IntEnum):
    CONNECTION_NOT_SYNCHRONIZED = 1
    BAD_MESSAGE_LENGTH = 2
    BAD_MESSAGE_TYPE = 3


class OpenSubcode(enum.IntEnum):
    UNSPECIFIC = 0
    UNSUPPORTED_VERSION_NUMBER = 1
    BAD_PEER_AS = 2
    BAD_BGP_IDENTIFIER = 3
    UNSUPPORTED_OPTIONAL_PARAMETER = 4
    UNACCEPTABLE_HOLD_TIME = 6
    UNSUPPORTED_CAPABILITY = 7


class UpdateSubcode(enum.IntEnum):
    MALFORMED_ATTRIBUTE_LIST = 1
    UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2
    MISSING_WELL_KNOWN_ATTRIBUTE = 3
    ATTRIBUTE_FLAGS_ERROR = 4
    ATTRIBUTE_LENGTH_ERROR = 5
    INVALID_ORIGIN_ATTRIBUTE = 6
    INVALID_NEXT_HOP_ATTRIBUTE = 8
    OPTIONAL_ATTRIBUTE_ERROR = 9
    INVALID_NETWORK_FIELD = 10
    MALFORMED_AS_PATH = 11


class FsmSubcode(enum.IntEnum):
    UNSPECIFIED = 0
    UNEXPECTED_MESSAGE_IN_OPEN_SENT = 1
    UNEXPECTED_MESSAGE_IN_OPEN_CONFIRM = 2
    UNEXPECTED_MESSAGE_IN_ESTABLISHED = 3


class CeaseSubcode(enum.IntEnum):
    MAXIMUM_PREFIXES_REACHED = 1
    ADMINISTRATIVE_SHUTDOWN = 2
    PEER_DECONFIGURED = 3
    ADMINISTRATIVE_RESET = 4
    CONNECTION_REJECTED = 5
    OTHER_CONFIGURATION_CHANGE = 6
    CONNECTION_COLLISION_RESOLUTION = 7
    OUT_OF_RESOURCES = 8


class RouteRefreshSubcode(enum.IntEnum):
    INVALID_MESSAGE_LENGTH = 1


_SUBCODES: dict[int, type[enum.IntEnum]] = {
    ErrorCode.MESSAGE_HEADER: HeaderSubcode,
    ErrorCode.OPEN_MESSAGE: OpenSubcode,
    ErrorCode.UPDATE_MESSAGE: UpdateSubcode,
    ErrorCode.FSM: FsmSubcode,
    ErrorCode.CEASE: CeaseSubcode,
    ErrorCode.ROUTE_REFRESH_MESSAGE: RouteRefreshSubcode,
}


def describe(code: int, subcode: int) -> str:
    """Human-readable "code/subcode" for logs, tolerating codes newer than this module."""
    try:
        code_name = ErrorCode(code).name
    except ValueError:
        return f"code {code}/subcode {subcode}"
    subcodes = _SUBCODES.get(code)
    try:
        sub_name = subcodes(subcode).name if subcodes is not None else str(subcode)
    except ValueError:
        sub_name = str(subcode)
    return f"{code_name}/{sub_name}"


class BgpError(Exception):
    """A protocol error, carrying the NOTIFICATION (code, subcode, data) that reports it."""

    def __init__(
        self, code: ErrorCode, subcode: int = 0, data: bytes = b"", reason: str = ""
    ) -> None:
        self.code = code
        self.subcode = subcode
        self.data = data
        self.reason = reason
        super().__init__(
            f"{describe(code, subcode)}: {reason}" if reason else describe(code, subcode)
        )
