"""The history analysis the controller chaos test asserts with (`support.ownership`): it must
flag a real double assignment and must not flag what the controller legitimately does."""

from __future__ import annotations

from support import ownership
from support.ownership import Sharing, Version

IP = "198.18.64.1"
K1 = Sharing("k1", frozenset({("TCP", 1001)}))
K1_OTHER_PORT = Sharing("k1", frozenset({("TCP", 1002)}))
K2 = Sharing("k2", frozenset({("TCP", 1001)}))
PLAIN = Sharing("", frozenset({("TCP", 80)}))
NOW = 100.0


def grace(seconds: float) -> ownership.Callable[[float], float]:
    return lambda edited: edited + seconds


def judge(
    versions: dict[str, list[Version]],
    deleted: dict[str, float] | None = None,
    seconds: float = 2.0,
) -> list[ownership.DoubleAssignment]:
    return ownership.double_assignments(versions, deleted or {}, grace(seconds), NOW)


def test_two_services_given_one_address_are_flagged() -> None:
    versions = {
        "a": [Version(1.0, (), "ua", PLAIN), Version(1.5, (IP,), "ua", PLAIN)],
        "b": [Version(2.0, (), "ub", PLAIN), Version(3.0, (IP,), "ub", PLAIN)],
    }
    assert judge(versions) == [ownership.DoubleAssignment(IP, "a/ua", "b/ub", 3.0)]


def test_an_address_moved_from_one_service_to_another_is_not_flagged() -> None:
    versions = {
        "a": [Version(1.0, (IP,), "ua", PLAIN), Version(3.0, (), "ua", PLAIN)],
        "b": [Version(2.0, (), "ub", PLAIN), Version(3.0, (IP,), "ub", PLAIN)],
    }
    assert judge(versions) == []


def test_an_address_of_a_deleted_service_reused_is_not_flagged_and_a_new_one_is() -> None:
    versions = {
        "a": [Version(1.0, (IP,), "ua", PLAIN), Version(5.0, (), "ua2", PLAIN)],
        "b": [Version(4.5, (IP,), "ub", PLAIN)],
    }
    assert judge(versions, {"ua": 4.0}) == []
    # The same, but "a" was never seen deleted: it held the address until now.
    assert judge(versions) == [ownership.DoubleAssignment(IP, "a/ua", "b/ub", 4.5)]


def test_sharing_needs_the_same_key_and_other_ports() -> None:
    same_key = {"a": [Version(1.0, (IP,), "ua", K1)], "b": [Version(2.0, (IP,), "ub", K1)]}
    assert judge(same_key) == [ownership.DoubleAssignment(IP, "a/ua", "b/ub", 2.0)]  # port 1001
    ok = {"a": [Version(1.0, (IP,), "ua", K1)], "b": [Version(2.0, (IP,), "ub", K1_OTHER_PORT)]}
    assert judge(ok) == []
    other_key = {"a": [Version(1.0, (IP,), "ua", K1)], "b": [Version(2.0, (IP,), "ub", K2)]}
    assert judge(other_key) == [ownership.DoubleAssignment(IP, "a/ua", "b/ub", 2.0)]


def test_a_key_edit_keeps_the_address_until_the_controller_moves_it_within_the_grace() -> None:
    # a and b share under k1; a's key becomes k2 at 5.0 and the controller moves a at 6.5.
    versions = {
        "a": [
            Version(1.0, (IP,), "ua", K1),
            Version(5.0, (IP,), "ua", K2),
            Version(6.5, ("198.18.64.2",), "ua", K2),
        ],
        "b": [Version(2.0, (IP,), "ub", K1_OTHER_PORT)],
    }
    assert judge(versions, seconds=2.0) == []
    # The same history with a grace of one second: a should have moved by 6.0.
    assert judge(versions, seconds=1.0) == [ownership.DoubleAssignment(IP, "a/ua", "b/ub", 6.0)]


def test_a_key_edit_does_not_excuse_a_new_assignment_under_a_key_nobody_had() -> None:
    # a's key edit (k1 -> k2) does not let c, with a third key, join a's address.
    k3 = Sharing("k3", frozenset({("TCP", 1003)}))
    versions = {
        "a": [Version(1.0, (IP,), "ua", K1), Version(5.0, (IP,), "ua", K2)],
        "c": [Version(5.5, (IP,), "uc", k3)],
    }
    found = judge(versions, seconds=10.0)
    assert found == [ownership.DoubleAssignment(IP, "a/ua", "c/uc", 5.5)]


def test_local_policy_shares_only_with_the_same_selector() -> None:
    local_x = Sharing("k1", frozenset({("TCP", 1)}), (("app", "x"),))
    local_y = Sharing("k1", frozenset({("TCP", 2)}), (("app", "y"),))
    local_x2 = Sharing("k1", frozenset({("TCP", 3)}), (("app", "x"),))
    cluster = Sharing("k1", frozenset({("TCP", 4)}))
    assert ownership.compatible(local_x, local_x2)
    assert not ownership.compatible(local_x, local_y)
    assert not ownership.compatible(local_x, cluster)
    assert not ownership.compatible(PLAIN, PLAIN)


def test_settled_after_waits_for_a_controller_that_ran_long_enough() -> None:
    lifetimes = [(0.0, 1.0), (1.2, 2.0), (2.1, float("inf"))]
    assert ownership.settled_after(0.0, lifetimes, 1.0) == 1.0
    assert ownership.settled_after(0.5, lifetimes, 1.0) == 3.1  # the first two died too soon
    assert ownership.settled_after(5.0, lifetimes, 1.0) == 6.0
    assert ownership.settled_after(0.5, lifetimes[:2], 1.0) == float("inf")


def test_address_changes_after_the_first_assignment() -> None:
    ip2 = "198.18.64.2"
    kept = [Version(1.0, (), "u"), Version(2.0, (IP,), "u"), Version(3.0, (IP,), "u", K1)]
    assert ownership.address_changes(kept) == []
    moved = [*kept, Version(4.0, (ip2,), "u")]
    assert ownership.address_changes(moved) == [(4.0, (IP,), (ip2,))]
    lost = [*kept, Version(4.0, (), "u"), Version(5.0, (IP,), "u")]
    assert ownership.address_changes(lost) == [(4.0, (IP,), ())]
    recreated = [*kept, Version(4.0, (IP,), "v")]
    assert ownership.address_changes(recreated) == [(4.0, (IP,), (IP,))]
