"""The Lease record as the shell reads it from the API: every field a renewal changes must reach
the decision core, or a follower takes over a lease its holder keeps renewing."""

from ironlb.core import lease
from ironlb.k8s import leader


def lease_object(renew_time: str, resource_version: str) -> dict[str, object]:
    return {
        "metadata": {"name": "ironlb-controller", "resourceVersion": resource_version},
        "spec": {
            "holderIdentity": "controller-a",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 0,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": renew_time,
        },
    }


def test_a_renewal_that_changes_only_renew_time_is_a_change() -> None:
    first = leader.parse_record(lease_object("2026-01-01T00:00:00.000000Z", "10"))
    second = leader.parse_record(lease_object("2026-01-01T00:00:02.000000Z", "11"))
    assert first != second


def test_follower_reading_a_renewed_lease_for_a_minute_never_acquires() -> None:
    seen: lease.Observation | None = None
    for second in range(0, 60, 2):
        obj = lease_object(f"2026-01-01T00:00:{second:02d}.000000Z", str(100 + second))
        seen = lease.observe(seen, leader.parse_record(obj), float(second) + 1.0)
        assert lease.decide("controller-b", seen, float(second) + 1.0, 15) is lease.Action.WAIT
