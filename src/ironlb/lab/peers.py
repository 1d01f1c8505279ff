"""Other projects' programs the lab runs beside ironlb (ExternalDNS, ...): where their binaries are.

They are built from the Go module proxy by `dev/peers/build.sh NAME` (a recipe per peer in
`dev/peers/NAME.peer`) into the same cache as the kube binaries, keyed by version and inputs;
`make test` builds them beforehand, because a cold build takes minutes and a test must not wait
for it. `IRONLB_PEER_<NAME>_DIR` (say `IRONLB_PEER_EXTERNAL_DNS_DIR`) points at a directory of
binaries built elsewhere instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ironlb.lab import kube, netns

BUILD_SCRIPT = kube.REPO_ROOT / "dev" / "peers" / "build.sh"


def override_variable(name: str) -> str:
    return "IRONLB_PEER_" + name.upper().replace("-", "_") + "_DIR"


def bin_dir(name: str, *, build: bool = True) -> Path:
    """The directory holding peer `name`'s binaries, built first unless `build` is False (then
    LabError if it is not built yet)."""
    override = os.environ.get(override_variable(name))
    if override:
        return Path(override)
    if not BUILD_SCRIPT.is_file():
        raise netns.LabError(
            f"{BUILD_SCRIPT} not found: run from an ironlb checkout"
            f" or set {override_variable(name)}"
        )
    args = [str(BUILD_SCRIPT), name] + ([] if build else ["--dir"])
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0:
        why = proc.stderr.strip() or "not built yet: run `make peers`"
        raise netns.LabError(f"{name} is not available ({' '.join(args)}): {why}")
    return Path(proc.stdout.strip().splitlines()[-1])
