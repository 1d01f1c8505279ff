"""The speaker's own Prometheus metrics (the layer-2 and BGP shells keep theirs)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, metrics_core

from ironlb.membership import states, transport
from ironlb.speaker import layer2


class _MembershipMetrics:
    """Membership figures read when scraped, so they are never stale between plans."""

    def __init__(self) -> None:
        self.members: transport.Transport | None = None

    def collect(self) -> Iterator[metrics_core.Metric]:
        states_family = metrics_core.GaugeMetricFamily(
            "ironlb_membership_members", "Speakers known to this one, by state", labels=["state"]
        )
        dropped = metrics_core.CounterMetricFamily(
            "ironlb_membership_dropped_packets",
            "Membership packets dropped, by reason",
            labels=["reason"],
        )
        if self.members is not None:
            counts = {s.name.lower(): 0 for s in states.MemberState}
            for m in self.members.members.values():
                counts[m.state.name.lower()] += 1
            for state, n in counts.items():
                states_family.add_metric([state], n)
            for reason, n in self.members.dropped.items():
                dropped.add_metric([str(reason)], n)
        health = metrics_core.GaugeMetricFamily(
            "ironlb_membership_local_health_score",
            "Lifeguard's local health score: 0 healthy; probe timeouts are scaled by 1 + it",
        )
        if self.members is not None:
            health.add_metric([], self.members.health)
        yield states_family
        yield dropped
        yield health


MEMBERSHIP = _MembershipMetrics()
REGISTRY.register(MEMBERSHIP)
ISOLATED = layer2.ISOLATED
KEY_MISSING = Gauge(
    "ironlb_membership_key_missing_bool",
    "1 while membership is on but its Secret (or its 'secretkey') is missing: dead nodes are"
    " then found from Node readiness, in tens of seconds instead of under one",
)
PLAN_ERRORS = Counter("ironlb_speaker_plan_errors", "Plans that failed unexpectedly (see the log)")
