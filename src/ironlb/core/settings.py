"""Settings fields that document themselves: each becomes a CLI flag and an environment variable
(`IRONLB_<COMMAND>_<NAME>`) whose help is the text given where the field is declared."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any


def setting(default: Any = None, *, help: str, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its one-line help."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})
