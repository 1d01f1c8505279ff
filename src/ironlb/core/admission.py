"""Admission decisions for metallb.io objects: what the validating webhook answers.

A change is refused when the object does not parse, lives outside the namespace ironlb reads,
or *introduces* an ERROR problem into the configuration (compared with the configuration
without it). Problems that were already there do not block unrelated changes, so a user can
always fix a broken configuration one object at a time; MetalLB refuses every change while any
part of the configuration is invalid. Warnings go back to kubectl as admission warnings.

Pure: the current objects are passed in; nothing is read or written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ironlb.core import config, validation


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    message: str = ""
    warnings: tuple[str, ...] = ()


def _config(objects: Iterable[config.ConfigKind]) -> config.Config:
    return config.Config.from_objects(objects)


def _without(objects: Iterable[config.ConfigKind], kind: str, name: str) -> list[config.ConfigKind]:
    return [o for o in objects if not (o.KIND == kind and o.name == name)]


def review(
    current: Iterable[config.ConfigKind],
    operation: str,
    raw: Mapping[str, Any] | None,
    *,
    kind: str,
    name: str,
    namespace: str,
    expected_namespace: str,
) -> Verdict:
    """Decide one admission request.

    `current`: the configuration objects in force (parsed); `raw`: the object being created or
    updated (None for DELETE); `kind`/`name`/`namespace`: the object the request is about.
    """
    current = list(current)
    if operation == "DELETE":
        if kind != config.BFDProfile.KIND:
            return Verdict(True)
        problems = validation.rejected(validation.validate_delete(_config(current), kind, name))
        return Verdict(not problems, "; ".join(map(str, problems)))
    if namespace != expected_namespace:
        return Verdict(
            False,
            f"{config.describe(kind, namespace, name)}: ironlb reads metallb.io configuration "
            f"only from namespace {expected_namespace!r}; this object would be ignored",
        )
    if raw is None:
        return Verdict(False, f"{config.describe(kind, namespace, name)}: no object in request")
    try:
        obj = config.parse(raw)
    except config.ConfigError as e:
        return Verdict(False, str(e))
    if not isinstance(obj, config.ConfigKind):
        return Verdict(True)  # status objects are written by ironlb itself
    others = _without(current, kind, name)
    try:
        after = validation.validate(_config([*others, obj]))
    except config.ConfigError as e:
        return Verdict(False, str(e))
    before = set(validation.validate(_config(others)))
    new = [p for p in after if p not in before]
    errors = validation.rejected(new)
    warnings = tuple(str(p) for p in new if p not in errors)
    return Verdict(not errors, "; ".join(map(str, errors)), warnings)
