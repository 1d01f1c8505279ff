"""Container images for the real-nodes lab: OCI archives built from the repository by
`dev/image/build.sh` (no Docker, no registry), imported into each node's containerd.

`archive("pause")` is the pods' sandbox image, `archive("ironlb")` ironlb's own image (controller,
speaker, and the lab backend the demo Deployment runs). `IRONLB_PAUSE_ARCHIVE` and
`IRONLB_IMAGE_ARCHIVE` name prebuilt archives instead. `reference()` reads the name an archive
gives its image, which is what pods must ask for (with `imagePullPolicy: Never`: a lab node never
pulls).
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

from ironlb.lab import kube, netns

BUILD_SCRIPT = kube.REPO_ROOT / "dev" / "image" / "build.sh"
_OVERRIDES = {"pause": "IRONLB_PAUSE_ARCHIVE", "ironlb": "IRONLB_IMAGE_ARCHIVE"}
# The repository of an image whose archive names only a tag (org.opencontainers.image.ref.name).
_DEFAULT_REPOS = {"pause": "registry.k8s.io/pause", "ironlb": "ghcr.io/ironlb/ironlb"}


def archive(which: str) -> Path:
    """Path of the OCI archive of image `which` ("pause" or "ironlb"), built if needed."""
    if which not in _OVERRIDES:
        raise ValueError(f"unknown lab image {which!r}")
    override = os.environ.get(_OVERRIDES[which])
    if override:
        path = Path(override)
        if not path.is_file():
            raise netns.LabError(f"{_OVERRIDES[which]}={override}: no such file")
        return path
    if not BUILD_SCRIPT.is_file():
        raise netns.LabError(
            f"{BUILD_SCRIPT} not found: set {_OVERRIDES[which]} to an OCI archive of the image"
        )
    args = [str(BUILD_SCRIPT)] + (["pause"] if which == "pause" else [])
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=3600)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise netns.LabError(f"{' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def reference(path: Path, which: str) -> str:
    """The image name `path` carries (what `ctr images import` registers it as)."""
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile("index.json")
            if member is None:
                raise KeyError("index.json")
            index = json.load(member)
    except (OSError, KeyError, tarfile.TarError, json.JSONDecodeError) as e:
        raise netns.LabError(f"{path} is not an OCI archive: {e}") from e
    for manifest in index.get("manifests") or []:
        notes = manifest.get("annotations") or {}
        name = notes.get("io.containerd.image.name")
        if name:
            return str(name)
        ref = notes.get("org.opencontainers.image.ref.name")
        if ref:
            return str(ref) if "/" in ref else f"{_DEFAULT_REPOS[which]}:{ref}"
    raise netns.LabError(f"{path}: the archive names no image (no ref.name annotation)")
