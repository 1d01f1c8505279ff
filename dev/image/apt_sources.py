"""Prints the one-line apt sources of a Debian suite as this host's apt configures them.

dev/image/build.sh gives these to mmdebstrap, so the image's Debian comes from the mirror (and
snapshot, proxy, ...) this machine already uses: `deb URI SUITE main` for SUITE and its
SUITE-updates / SUITE-security pockets, in apt's order, deb822 `.sources` and one-line `.list`
files alike. A host without SUITE's main pocket (not Debian, another release) gets deb.debian.org.
    python3 dev/image/apt_sources.py bookworm
"""

from __future__ import annotations

import glob
import sys

FALLBACK = (
    "deb http://deb.debian.org/debian {s} main",
    "deb http://deb.debian.org/debian {s}-updates main",
    "deb http://deb.debian.org/debian-security {s}-security main",
)


def _deb822(text: str) -> list[tuple[str, str, list[str]]]:
    entries = []
    for stanza in text.split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or line[:1].isspace() or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"])[0] == "no":
            continue
        for uri in fields.get("uris", []):
            for suite in fields.get("suites", []):
                entries.append((uri, suite, fields.get("components", [])))
    return entries


def _one_line(text: str) -> list[tuple[str, str, list[str]]]:
    entries = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        words = words[1:]
        if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=...]
            while words and not words[0].endswith("]"):
                words = words[1:]
            words = words[1:]
        if len(words) >= 3:
            entries.append((words[0], words[1], words[2:]))
    return entries


def sources(suite: str, etc_apt: str = "/etc/apt") -> list[str]:
    entries = []
    for path in sorted(glob.glob(f"{etc_apt}/sources.list.d/*.sources")):
        with open(path) as f:
            entries += _deb822(f.read())
    for path in [f"{etc_apt}/sources.list", *sorted(glob.glob(f"{etc_apt}/sources.list.d/*.list"))]:
        try:
            with open(path) as f:
                entries += _one_line(f.read())
        except OSError:
            continue
    lines: list[str] = []
    for uri, pocket, components in entries:
        if (pocket == suite or pocket.startswith(suite + "-")) and "main" in components:
            line = f"deb {uri} {pocket} main"
            if line not in lines:
                lines.append(line)
    if not any(line.split()[2] == suite for line in lines):
        return [line.format(s=suite) for line in FALLBACK]
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: apt_sources.py SUITE")
    print("\n".join(sources(sys.argv[1])))
