"""The users' own MetalLB manifests, found in their field notes (`../shared/seeds`).

The seeds are prose with YAML embedded in fences, sometimes inside a shell transcript
(`$ cat tmp.yaml` followed by the document and then `$ kubectl apply`), so documents are found by
their `apiVersion: metallb.io/...` line and cut where the YAML ends, not by fences alone.
"""

import re
from pathlib import Path
from typing import Any

import yaml

from ironlb.core import config

SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"
COPY = Path(__file__).resolve().parents[1] / "data" / "seed-manifests.yaml"

_ANCHOR = re.compile(r"^(?P<indent>\s*)apiVersion:\s*metallb\.io/")
_KEY = re.compile(r"^[A-Za-z_][\w.-]*:(\s|$)")


def metallb_documents(text: str) -> list[dict[str, Any]]:
    """The metallb.io documents embedded in `text`, wherever they sit."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        anchor = _ANCHOR.match(line)
        if anchor is None:
            continue
        indent = len(anchor["indent"])
        start = i
        # Keys of the same document written before apiVersion (kind first, say).
        while start > 0 and _is_document_line(lines[start - 1], indent, top_only=True):
            start -= 1
        end = i + 1
        while end < len(lines) and _is_document_line(lines[end], indent, top_only=False):
            end += 1
        body = "\n".join(line[indent:] for line in lines[start:end])
        document = yaml.safe_load(body)
        if isinstance(document, dict) and str(document.get("apiVersion", "")).startswith(
            f"{config.GROUP}/"
        ):
            found.append(document)
    return found


def _is_document_line(line: str, indent: int, *, top_only: bool) -> bool:
    if line.strip() in ("---", "```") or line.lstrip().startswith("```"):
        return False
    if not line.strip():
        return not top_only
    own_indent = len(line) - len(line.lstrip())
    body = line[indent:]
    if own_indent < indent:
        return False
    if own_indent > indent:
        return not top_only
    return bool(_KEY.match(body)) or (not top_only and body.startswith("- "))


def seed_documents() -> list[tuple[str, dict[str, Any]]]:
    """(origin, document) of every manifest: from the seeds if present, else from COPY."""
    if not SEEDS.is_dir():
        return copied_documents()
    return from_seeds()


def copied_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(entry["source"], entry["manifest"]) for entry in yaml.safe_load(COPY.read_text())]


def from_seeds() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}#{n}", document)
        for path in sorted(SEEDS.glob("*.txt"))
        for n, document in enumerate(metallb_documents(path.read_text(encoding="utf-8")))
    ]
