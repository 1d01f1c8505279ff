"""Every command checks its settings before doing anything: a bad flag or environment variable
is one line on stderr naming both, exit status 2, no traceback, no API call (no API server is
needed here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def ironlb(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IRONLB_")}
    return subprocess.run(
        [sys.executable, "-m", "ironlb.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("speaker", "--excluded-interfaces=^eth{1,2}("),
            "ironlb speaker: invalid --excluded-interfaces (IRONLB_SPEAKER_EXCLUDED_INTERFACES):"
            " bad regular expression '^eth{1,2}('",
        ),
        (("speaker", "--metrics-port=0"), "invalid --metrics-port (IRONLB_SPEAKER_METRICS_PORT)"),
        (("speaker", "--metrics-port=http"), "'http' is not a valid integer"),
        (("speaker", "--probe-interval=0"), "invalid --probe-interval"),
        (("speaker", "--bind-address=eth0"), "not an IP address: 'eth0'"),
        (("speaker", "--kubeconfig=/nonexistent"), "no such file: '/nonexistent'"),
        (("controller", "--workers=0"), "invalid --workers (IRONLB_CONTROLLER_WORKERS)"),
        (("controller", "--listen-address=any"), "invalid --listen-address"),
        (("controller", "--lease-duration=-3"), "must be more than 0"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(args: tuple[str, ...], expected: str) -> None:
    assert expected in one_error_line(ironlb(*args))


def test_a_bad_environment_variable_is_named() -> None:
    line = one_error_line(ironlb("speaker", env={"IRONLB_SPEAKER_HANDOVER_TIMEOUT": "-1"}))
    assert "IRONLB_SPEAKER_HANDOVER_TIMEOUT" in line
    line = one_error_line(ironlb("controller", env={"IRONLB_CONTROLLER_METRICS_PORT": "x"}))
    assert "IRONLB_CONTROLLER_METRICS_PORT" in line


def test_a_bad_lab_name_is_one_line() -> None:
    proc = ironlb("lab", "status", "--name=Not_A_Name")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "ironlb lab: a lab name is 3 to 12 lowercase letters or digits"
    ]
