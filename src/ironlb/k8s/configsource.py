"""The metallb.io configuration as the controller and the speakers see it: one reflector per
kind in the configuration namespace, and the judgement of whether what they hold may be applied.

Objects are parsed without `status` (ironlb's own output, such as pool counters): a counter
update must not look like a configuration change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ironlb.core import config, validation
from ironlb.k8s import client as k8s
from ironlb.k8s import reflector

KINDS: tuple[tuple[k8s.Resource, type[config.ConfigKind]], ...] = (
    (k8s.IP_ADDRESS_POOLS, config.IPAddressPool),
    (k8s.L2_ADVERTISEMENTS, config.L2Advertisement),
    (k8s.BGP_ADVERTISEMENTS, config.BGPAdvertisement),
    (k8s.BGP_PEERS, config.BGPPeer),
    (k8s.BFD_PROFILES, config.BFDProfile),
    (k8s.COMMUNITIES, config.Community),
)


def _parser(cls: type[config.ConfigKind]) -> Callable[[k8s.Obj], config.ConfigKind]:
    return lambda raw: config.parse_as({k: v for k, v in raw.items() if k != "status"}, cls)


class ConfigSource:
    def __init__(
        self, client: k8s.Client, namespace: str, on_change: Callable[[str], None]
    ) -> None:
        self.reflectors: list[reflector.Reflector[Any]] = [
            reflector.Reflector(client, res, _parser(cls), namespace=namespace, on_change=on_change)
            for res, cls in KINDS
        ]

    def objects(self) -> list[config.ConfigKind]:
        return [obj for r in self.reflectors for obj in r.items.values()]

    def candidate(self) -> tuple[config.Config | None, list[str]]:
        """The configuration the caches hold now, and every reason it may not be applied
        (objects that do not parse, and blocking validation problems)."""
        problems = [msg for r in self.reflectors for msg in r.invalid.values()]
        try:
            cfg = config.Config.from_objects(self.objects())
        except config.ConfigError as e:
            return None, [*problems, str(e)]
        problems += [str(p) for p in validation.blocking(validation.validate(cfg))]
        return cfg, problems
