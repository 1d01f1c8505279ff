"""Kubernetes label selectors: parsed once, matched many times.

Job: turn a raw `metav1.LabelSelector` (`matchLabels` + `matchExpressions` with In, NotIn, Exists,
DoesNotExist) into an immutable `Selector`, and match it against a label dict with Kubernetes
semantics. Lists of selectors follow MetalLB: an empty list matches everything, otherwise any
matching selector is a match (`nodeSelectors`, `serviceSelectors`, `ipAddressPoolSelectors`).

Invariants: `parse` rejects only what cannot be evaluated (wrong shapes, unknown operators, In
without values, Exists with values); the Kubernetes syntax of keys and values is reported by
`syntax_problems`, so a manifest that MetalLB would refuse because of a label value such as "*"
still parses and the validator can explain why it matches nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal, cast

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
OPERATORS: tuple[Operator, ...] = ("In", "NotIn", "Exists", "DoesNotExist")

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A selector that cannot be evaluated. `path` is relative to the selector itself."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class _Value:
    """Immutable value object. Not a dataclass: msgspec would decode dataclasses by itself
    instead of handing the raw selector to `parse`."""

    __slots__ = ()

    def _key(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class Requirement(_Value):
    __slots__ = ("key", "operator", "values")
    key: str
    operator: Operator
    values: frozenset[str]

    def __init__(self, key: str, operator: Operator, values: frozenset[str]) -> None:
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "values", values)

    def _key(self) -> tuple[object, ...]:
        return (self.key, self.operator, self.values)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            value = labels.get(self.key)
            return value is None or value not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        op = "in" if self.operator == "In" else "notin"
        return f"{self.key} {op} ({','.join(sorted(self.values))})"


class Selector(_Value):
    """A label selector. The empty selector matches every label set."""

    __slots__ = ("match_expressions", "match_labels")
    match_labels: tuple[tuple[str, str], ...]
    match_expressions: tuple[Requirement, ...]

    def __init__(
        self,
        match_labels: tuple[tuple[str, str], ...] = (),
        match_expressions: tuple[Requirement, ...] = (),
    ) -> None:
        object.__setattr__(self, "match_labels", match_labels)
        object.__setattr__(self, "match_expressions", match_expressions)

    def _key(self) -> tuple[object, ...]:
        return (self.match_labels, self.match_expressions)

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        return all(req.matches(labels) for req in self.match_expressions)

    def syntax_problems(self) -> list[tuple[str, str]]:
        """(relative path, message) for every key or value Kubernetes would refuse."""
        problems: list[tuple[str, str]] = []
        for key, value in self.match_labels:
            path = f"matchLabels[{key!r}]"
            problems.extend((path, m) for m in _key_problems(key))
            problems.extend((path, m) for m in _value_problems(value))
        for i, req in enumerate(self.match_expressions):
            path = f"matchExpressions[{i}]"
            problems.extend((f"{path}.key", m) for m in _key_problems(req.key))
            for value in sorted(req.values):
                problems.extend((f"{path}.values", m) for m in _value_problems(value))
        return problems

    def __str__(self) -> str:
        """Kubernetes' string form, sorted, so that equivalent selectors print the same."""
        parts = [f"{k}={v}" for k, v in self.match_labels]
        parts.extend(str(req) for req in self.match_expressions)
        return ",".join(sorted(parts)) or "<everything>"


EVERYTHING = Selector()


def any_matches(selectors: Sequence[Selector], labels: Mapping[str, str]) -> bool:
    """MetalLB's rule for selector lists: empty matches all, else any one must match."""
    return not selectors or any(s.matches(labels) for s in selectors)


def parse(raw: object) -> Selector:
    """Parse a raw `metav1.LabelSelector` mapping; raise `SelectorError` naming the field."""
    if not isinstance(raw, Mapping):
        raise SelectorError("", f"expected an object, got {type_name(raw)}")
    for field in raw:
        if field not in ("matchLabels", "matchExpressions"):
            raise SelectorError(
                str(field), "unknown field (expected matchLabels, matchExpressions)"
            )
    labels = _or_default(raw.get("matchLabels"), {})
    if not isinstance(labels, Mapping):
        raise SelectorError("matchLabels", f"expected an object, got {type_name(labels)}")
    match_labels: list[tuple[str, str]] = []
    for key, value in labels.items():
        if not isinstance(value, str):
            raise SelectorError(
                f"matchLabels[{key!r}]", f"expected a string, got {type_name(value)}"
            )
        match_labels.append((str(key), value))
    expressions = _or_default(raw.get("matchExpressions"), [])
    if not isinstance(expressions, Sequence) or isinstance(expressions, str):
        raise SelectorError("matchExpressions", f"expected a list, got {type_name(expressions)}")
    requirements = [
        _parse_requirement(f"matchExpressions[{i}]", r) for i, r in enumerate(expressions)
    ]
    return Selector(tuple(sorted(match_labels)), tuple(requirements))


def _parse_requirement(path: str, raw: object) -> Requirement:
    if not isinstance(raw, Mapping):
        raise SelectorError(path, f"expected an object, got {type_name(raw)}")
    for field in raw:
        if field not in ("key", "operator", "values"):
            raise SelectorError(f"{path}.{field}", "unknown field (expected key, operator, values)")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise SelectorError(f"{path}.key", "required, a non-empty string")
    operator = raw.get("operator")
    if operator not in OPERATORS:
        raise SelectorError(
            f"{path}.operator", f"{operator!r} is not one of {', '.join(OPERATORS)}"
        )
    values = _or_default(raw.get("values"), [])
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise SelectorError(f"{path}.values", f"expected a list, got {type_name(values)}")
    for j, value in enumerate(values):
        if not isinstance(value, str):
            raise SelectorError(f"{path}.values[{j}]", f"expected a string, got {type_name(value)}")
    if len(set(values)) != len(values):
        raise SelectorError(f"{path}.values", "duplicate values")
    if operator in ("In", "NotIn") and not values:
        raise SelectorError(f"{path}.values", f"must not be empty for operator {operator}")
    if operator in ("Exists", "DoesNotExist") and values:
        raise SelectorError(f"{path}.values", f"must be empty for operator {operator}")
    return Requirement(key, cast(Operator, operator), frozenset(values))


def _or_default(value: object, default: object) -> object:
    """An absent or null field takes its default; any other value must have the right type."""
    return default if value is None else value


def _key_problems(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        problems.append(f"{key!r}: the prefix before '/' must be a DNS subdomain")
    if not name or len(name) > 63 or not _NAME.match(name):
        problems.append(
            f"{key!r} is not a valid label key: at most 63 characters, alphanumeric, '-', '_' "
            "or '.', starting and ending with an alphanumeric character"
        )
    return problems


def _value_problems(value: str) -> list[str]:
    if value == "" or (len(value) <= 63 and _NAME.match(value)):
        return []
    hint = ""
    if "*" in value:
        hint = (
            " ('*' is not a wildcard in Kubernetes selectors: to select everything, "
            "omit the selector)"
        )
    return [
        f"{value!r} is not a valid label value: at most 63 characters, alphanumeric, '-', '_' "
        f"or '.', starting and ending with an alphanumeric character{hint}"
    ]


def type_name(value: object) -> str:
    """The JSON name of a value's type, for messages ("string", "object", "null"...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, Sequence):
        return "list"
    return type(value).__name__
