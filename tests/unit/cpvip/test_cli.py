"""`ironlb cpvip` with bad settings: one line naming the flag and its variable, exit status 2,
no traceback (checked before anything touches the network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ironlb import cli


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--address=192.0.2.10/24"], "is a CIDR"),
        (["--address=api.example.com"], "is a hostname"),
        (["--address=192.0.2.10", "--mode=bgp"], "--bgp-peers (IRONLB_CPVIP_BGP_PEERS)"),
        (
            ["--address=192.0.2.10", "--mode=bgp", "--bgp-peers=198.51.100.1"],
            "invalid --bgp-peer-asn (IRONLB_CPVIP_BGP_PEER_ASN): required with --mode bgp",
        ),
        (["--address=192.0.2.10", "--bgp-peer-asn=64500"], "only for --mode bgp"),
        (
            ["--address=192.0.2.10", "--mode=bgp", "--bgp-peers=198.51.100.1", "--peers=1.2.3.4"],
            "invalid --peers (IRONLB_CPVIP_PEERS): only for --mode arp",
        ),
        (["--address=192.0.2.10", "--peers=node-2"], "not IP, IPv4:port or [IPv6]:port"),
        (["--address=192.0.2.10", "--key-file=/nonexistent"], "no such file"),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    expected: str,
) -> None:
    key = tmp_path / "key"
    key.write_text("k" * 32)
    # bgp mode takes no membership key (refused there like every arp-only setting).
    key_arg = [] if "--mode=bgp" in args else [f"--key-file={key}"]
    monkeypatch.setattr(sys, "argv", ["ironlb", "cpvip", *key_arg, *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert "IRONLB_CPVIP_" in lines[0]
