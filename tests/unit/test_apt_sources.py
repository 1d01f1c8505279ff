"""dev/image/apt_sources.py: the image's Debian comes from the mirrors this host's apt uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("apt_sources", REPO / "dev/image/apt_sources.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


apt_sources = _module()


def _etc(tmp_path: Path, files: dict[str, str]) -> str:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return str(tmp_path)


def test_deb822_pockets_of_the_suite_in_order_others_left_out(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path,
        {
            "sources.list.d/debian.sources": (
                "Types: deb deb-src\n"
                "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
                "URIs: http://mirror.example/debian\n"
                "Suites: bookworm bookworm-updates\n"
                "Components: main contrib\n"
                "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
                "\n"
                "Types: deb\n"
                "URIs: http://mirror.example/debian-security\n"
                "Suites: bookworm-security\n"
                "Components: main\n"
                "\n"
                "Types: deb\n"
                "URIs: http://disabled.example/debian\n"
                "Suites: bookworm\n"
                "Components: main\n"
                "Enabled: no\n"
            ),
            "sources.list.d/node.sources": (
                "Types: deb\nURIs: https://deb.nodesource.example/node\nSuites: nodistro\n"
                "Components: main\n"
            ),
            "sources.list.d/cloud.list": "deb https://cloud.example/apt cloud-sdk-bookworm main\n",
        },
    )
    assert apt_sources.sources("bookworm", etc) == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]


def test_one_line_sources_with_options_and_duplicates(tmp_path: Path) -> None:
    etc = _etc(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
                "deb-src http://mirror.example/debian bookworm main\n"
                "deb http://mirror.example/debian bookworm main  # again\n"
                "deb http://mirror.example/debian bookworm-backports contrib\n"
            ),
        },
    )
    assert apt_sources.sources("bookworm", etc) == [
        "deb http://mirror.example/debian bookworm main"
    ]


def test_a_host_without_the_suite_gets_debian_org(tmp_path: Path) -> None:
    etc = _etc(tmp_path, {"sources.list": "deb http://archive.ubuntu.example/ubuntu noble main\n"})
    assert apt_sources.sources("bookworm", etc) == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
