"""The speaker exports Lifeguard's local health score of its membership."""

from __future__ import annotations

from typing import Any, cast

from ironlb.speaker import metrics


class _Members:
    members: dict[str, Any] = {}
    dropped: dict[str, int] = {}
    health = 3


def test_local_health_score_is_exported() -> None:
    collector = metrics._MembershipMetrics()
    assert all(
        not family.samples
        for family in collector.collect()
        if family.name == "ironlb_membership_local_health_score"
    )
    collector.members = cast(Any, _Members())
    families = {family.name: family for family in collector.collect()}
    samples = families["ironlb_membership_local_health_score"].samples
    assert [sample.value for sample in samples] == [3]
