"""Settings fields that document and check themselves: each becomes a CLI flag and an
environment variable (`IRONLB_<COMMAND>_<NAME>`) whose help is the text given where the field
is declared, and whose value is checked when the settings object is built.

Invariant: a settings object that exists is valid. `validate()` (called from each settings
dataclass's `__post_init__`) runs every field's check once, at start, and raises `SettingError`
naming the field; the CLI turns that into one line naming the flag and the environment variable.
Nothing that runs later (a plan, a reconcile) can meet a bad setting.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

Check = Callable[[Any], str | None]
"""A check: None if the value is fine, else what is wrong with it (a short phrase)."""


class SettingError(ValueError):
    """A setting with a bad value: `field` is the settings field's name."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def setting(
    default: Any = None,
    *,
    help: str,
    factory: Callable[[], Any] | None = None,
    check: Check | None = None,
) -> Any:
    """A dataclass field with its one-line help and its check (skipped for None: unset)."""
    metadata = {"help": help, "check": check}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def validate(settings: Any) -> None:
    """Run every field's check; the first failure raises `SettingError`."""
    for f in dataclasses.fields(settings):
        check = f.metadata.get("check")
        value = getattr(settings, f.name)
        if check is None or value is None:
            continue
        problem = check(value)
        if problem is not None:
            raise SettingError(f.name, problem)


# --- checks ---------------------------------------------------------------------------------------


def port(*, allow_zero: bool = False) -> Check:
    low = 0 if allow_zero else 1

    def check(value: int) -> str | None:
        if not low <= value <= 65535:
            return f"must be a port number from {low} to 65535, got {value}"
        return None

    return check


def positive(value: float) -> str | None:
    return None if value > 0 else f"must be more than 0, got {value:g}"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value:g}"


def at_least(low: int) -> Check:
    def check(value: int) -> str | None:
        return None if value >= low else f"must be at least {low}, got {value}"

    return check


def ip_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"not an IP address: {value!r}"
    return None


def ip_address_or_empty(value: str) -> str | None:
    """An IP address, or empty for "every address of both families"."""
    return None if value == "" else ip_address(value)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def dns_label(value: str) -> str | None:
    """A namespace name (RFC 1123 label)."""
    if _DNS_LABEL.fullmatch(value):
        return None
    return f"not a valid name (lowercase letters, digits and '-', at most 63): {value!r}"


def dns_subdomain(value: str) -> str | None:
    """An object name (Node, Secret, Lease: RFC 1123 subdomain)."""
    if _DNS_SUBDOMAIN.fullmatch(value) and ".." not in value:
        return None
    return f"not a valid object name (lowercase letters, digits, '-' and '.'): {value!r}"


def non_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def readable_file(value: str) -> str | None:
    if not os.path.isfile(value):
        return f"no such file: {value!r}"
    if not os.access(value, os.R_OK):
        return f"cannot be read: {value!r}"
    return None


def regexes(values: Iterable[str]) -> str | None:
    for pattern in values:
        try:
            re.compile(pattern)
        except re.error as e:
            return f"bad regular expression {pattern!r}: {e}"
    return None


def split_patterns(text: str) -> tuple[str, ...]:
    """Split a comma-separated list of regular expressions at the commas that separate them:
    those outside brackets, braces and parentheses and not escaped, so that `^eth{1,2}$` and
    `^(a|b),^c` keep their meaning. A literal comma is written `\\,` or `[,]`."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    in_class = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]" or bool(current and current[-1] == "[")
        elif c == "[":
            in_class = True
        elif c in "({":
            depth += 1
        elif c in ")}":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        current.append(c)
        i += 1
    parts.append("".join(current))
    return tuple(p for p in (p.strip() for p in parts) if p)
