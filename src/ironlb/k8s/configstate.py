"""ConfigurationState objects: whether a component runs the latest configuration.

MetalLB's kind, so `kubectl get configurationstates -n <namespace>` answers "is my
configuration in force?" for the controller and for every speaker. Written only on change.
"""

from __future__ import annotations

import datetime
import logging

from ironlb.k8s import client as k8s

log = logging.getLogger(__name__)

_MAX_MESSAGE = 30000


class Reporter:
    def __init__(
        self,
        client: k8s.Client,
        namespace: str,
        name: str,
        kind: str,
        *,
        node: str | None = None,
        field_manager: str,
    ) -> None:
        self._client = client
        self._meta = {"name": name, "namespace": namespace}
        self._spec: k8s.Obj = {"type": kind, **({"nodeName": node} if node else {})}
        self._field_manager = field_manager
        self._reported: tuple[bool, str] | None = None

    async def report(self, valid: bool, error: str = "") -> None:
        if self._reported == (valid, error):
            return
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": "configValid",
            "status": "True" if valid else "False",
            "reason": "SyncStateSuccess" if valid else "ConfigError",
            "message": error[:_MAX_MESSAGE],
            "lastTransitionTime": now,
        }
        status = {
            "validConfig": valid,
            "lastError": error[:_MAX_MESSAGE],
            "conditions": [condition],
        }
        try:
            await self._client.apply(
                k8s.CONFIGURATION_STATES,
                {"metadata": self._meta, "spec": self._spec},
                field_manager=self._field_manager,
            )
            await self._client.apply(
                k8s.CONFIGURATION_STATES,
                {"metadata": self._meta, "status": status},
                field_manager=self._field_manager,
                sub="status",
            )
            self._reported = (valid, error)
        except (k8s.ApiError, k8s.Unreachable) as e:
            log.warning("could not write ConfigurationState %s: %s", self._meta["name"], e)
