"""The images users and the real-node lab run: built without Docker, run by containerd + runc.

`dev/image/build.sh` (cached by its inputs; a cold build takes minutes, so these tests have a long
timeout) makes ironlb's image and the Kubernetes pause image as OCI archives. Each is imported
into a containerd of this test's own (tests/support/containerd.py: private mount and network
namespaces, its own directories) exactly as `ctr -n k8s.io images import` on a node would, and
run with runc: non-root, read-only root filesystem, no pip or setuptools inside. The image's
configuration is compared with the Dockerfile's, so the two recipes cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import containerd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "dev" / "image" / "build.sh"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
IRONLB = f"ghcr.io/ironlb/ironlb:{VERSION}"
USER = "65532:65532"


def build(target: str) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the image tests need root (mmdebstrap, namespaces): run `make test`")
    p = subprocess.run(
        [str(BUILD), target], capture_output=True, text=True, timeout=800, check=False
    )
    assert p.returncode == 0, f"build.sh {target} failed:\n{p.stderr[-3000:]}"
    archive = Path(p.stdout.strip().splitlines()[-1])
    assert archive.is_file(), p.stdout
    # --path names the same, already built archive: the script's cache is consistent.
    again = subprocess.run(
        [str(BUILD), target, "--path"], capture_output=True, text=True, timeout=60, check=True
    )
    assert again.stdout.strip() == str(archive)
    return archive


@pytest.fixture(scope="module")
def ironlb_archive() -> Path:
    return build("ironlb")


@pytest.fixture(scope="module")
def pause_archive() -> Path:
    return build("pause")


@pytest.fixture(scope="module")
def node(ironlb_archive: Path, pause_archive: Path) -> Iterator[containerd.Containerd]:
    with containerd.Containerd.start() as c:
        assert IRONLB in c.import_archive(ironlb_archive)
        c.import_archive(pause_archive)
        yield c


def oci_image(archive: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(index.json, manifest, config) of a single-image OCI archive."""
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> dict[str, Any]:
            f = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert f is not None
            return json.load(f)

        f = tar.extractfile("index.json")
        assert f is not None
        index = json.load(f)
        (entry,) = index["manifests"]
        manifest = blob(entry["digest"])
        return index, manifest, blob(manifest["config"]["digest"])


def test_ironlb_runs_as_non_root_from_a_read_only_root(node: containerd.Containerd) -> None:
    version = node.run(IRONLB, "ironlb", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"ironlb, version {VERSION}"
    ident = node.run(IRONLB, "id")
    assert ident.stdout.split()[:2] == ["uid=65532(ironlb)", "gid=65532(ironlb)"], ident
    # The root really is read-only here, so the run above proves ironlb needs no writes.
    write = node.run(IRONLB, "sh", "-c", "echo > /venv/probe")
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr + write.stdout


def test_entrypoint_and_controller_help(node: containerd.Containerd) -> None:
    default = node.run(IRONLB)  # entrypoint `ironlb`, command `--help`
    assert default.returncode == 0, default.stderr
    assert "Usage: ironlb" in default.stdout
    for component in ("controller", "speaker"):
        help_ = node.run(IRONLB, "ironlb", component, "--help")
        assert help_.returncode == 0, help_.stderr
        assert f"Usage: ironlb {component}" in help_.stdout


def test_no_installer_left_in_the_image(node: containerd.Containerd) -> None:
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('pip', 'setuptools', 'wheel', 'ensurepip') if u.find_spec(m)])"
    )
    for python in ("/venv/bin/python", "/usr/bin/python3"):
        found = node.run(IRONLB, python, "-c", probe)
        assert found.returncode == 0, found.stderr
        assert found.stdout.strip() == "[]", f"{python}: {found.stdout}"
    commands = node.run(IRONLB, "sh", "-c", "command -v pip pip3 easy_install; true")
    assert commands.stdout.strip() == ""


def test_pause_image_is_named_for_containerd_and_runs(
    node: containerd.Containerd, pause_archive: Path
) -> None:
    names = node.ctr("images", "ls", "--quiet").stdout.split()
    pause = [n for n in names if n.startswith("registry.k8s.io/pause:")]
    assert pause == ["registry.k8s.io/pause:3.10.2"], names
    # The version pause.c was compiled with (build/pause/Makefile: v$(TAG)-$(REV)).
    version = node.run(pause[0], "/pause", "-v")
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(r"pause\.c v3\.10\.2-v1\.\d+\.\d+", version.stdout.strip()), version
    assert oci_image(pause_archive)[2]["config"]["User"] == "65535:65535"


def test_archive_names_the_full_reference(ironlb_archive: Path) -> None:
    index, manifest, _ = oci_image(ironlb_archive)
    (entry,) = index["manifests"]
    assert entry["annotations"] == {
        "org.opencontainers.image.ref.name": IRONLB,
        "io.containerd.image.name": IRONLB,
    }
    assert len(manifest["layers"]) == 1


def dockerfile_config() -> dict[str, Any]:
    """USER, ENTRYPOINT, CMD, ENV and LABEL of the Dockerfile's final stage."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    config: dict[str, Any] = {"Env": {}, "Labels": {}}
    for line in final.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "USER":
            config["User"] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            config[word.capitalize() if word == "CMD" else "Entrypoint"] = json.loads(rest)
        elif word in ("ENV", "LABEL"):
            pairs = dict(kv.split("=", 1) for kv in shlex.split(rest))
            config["Env" if word == "ENV" else "Labels"].update(pairs)
    return config


def test_image_config_is_the_dockerfiles(ironlb_archive: Path) -> None:
    _, _, image = oci_image(ironlb_archive)
    config = image["config"]
    docker = dockerfile_config()
    assert config["User"] == docker["User"] == USER
    assert config["Entrypoint"] == docker["Entrypoint"] == ["ironlb"]
    assert config["Cmd"] == docker["Cmd"]
    env = dict(e.split("=", 1) for e in config["Env"])
    for key, value in docker["Env"].items():
        assert env[key] == value.replace("$PATH", env["PATH"].split(":", 1)[1]), key
    assert {**docker["Labels"], "org.opencontainers.image.version": VERSION} == config["Labels"]
    assert image["os"] == "linux"
