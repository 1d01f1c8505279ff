"""MetalLB's log level `warn` (its manifests and charts pass it) is accepted and means WARNING."""

import logging

import pytest

from ironlb import cli


@pytest.mark.parametrize("component", ["controller", "speaker"])
def test_warn_is_a_log_level(component: str) -> None:
    ctx = cli.cli.commands[component].make_context(component, ["--log-level=warn"])
    assert ctx.params["log_level"] == "warn"


def test_warn_logs_warnings_and_above() -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    try:
        cli._setup_logging("text", "warn")
        assert root.level == logging.WARNING
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
