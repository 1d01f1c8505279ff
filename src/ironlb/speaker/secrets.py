"""The Secrets of the configuration namespace as the speaker uses them: the membership keys
(`memberlist`, rotation: the first key signs, every key verifies) and BGP passwords."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from ironlb.k8s import client as k8s


@dataclass(frozen=True, slots=True)
class SecretData:
    """A Secret of the configuration namespace, as the speaker needs it."""

    type: str
    data: Mapping[str, str]
    """Key -> base64 value, as the API serves it."""


def parse_secret(raw: k8s.Obj) -> SecretData:
    return SecretData(str(raw.get("type", "")), dict(raw.get("data") or {}))


def parse_keys(secret: SecretData) -> tuple[bytes, ...]:
    value = secret.data.get("secretkey")
    if not value:
        raise ValueError("Secret has no 'secretkey'")
    keys = tuple(
        k.strip().encode() for k in base64.b64decode(value).decode().split(",") if k.strip()
    )
    if not keys:
        raise ValueError("Secret's 'secretkey' is empty")
    return keys
