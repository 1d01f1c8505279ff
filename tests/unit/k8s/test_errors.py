import contextlib

import pytest

from ironlb.k8s import client as k8s


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, k8s.NotFound), (409, k8s.Conflict), (410, k8s.Gone), (403, k8s.Forbidden)],
)
def test_the_statuses_callers_handle_have_their_own_type(status: int, kind: type) -> None:
    error = k8s.ApiError.of(status, "Reason", "message", 2.0)
    assert type(error) is kind
    assert isinstance(error, k8s.ApiError)
    assert (error.status, error.reason, error.message, error.retry_after) == (
        status,
        "Reason",
        "message",
        2.0,
    )
    with contextlib.suppress(kind):
        raise error


def test_other_statuses_stay_plain_api_errors() -> None:
    for status in (400, 422, 429, 500, 503):
        error = k8s.ApiError.of(status, "Reason", "message")
        assert type(error) is k8s.ApiError
    with pytest.raises(k8s.ApiError), contextlib.suppress(k8s.NotFound):
        raise k8s.ApiError.of(409, "Conflict", "stale")
