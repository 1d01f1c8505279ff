"""The CRDs in deploy/crds are generated, and declare exactly the fields ironlb's models parse.

A field the model knows but the schema lacks is silently pruned by the API server (the user's
setting vanishes); a field the schema has but the model lacks is rejected by the parser.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from ironlb.core import config

ROOT = Path(__file__).resolve().parents[2]


def storage_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((ROOT / "deploy" / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        for version in doc["spec"]["versions"]:
            if version["storage"]:
                out[doc["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


def test_generated_files_are_current() -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "dev" / "gen_crds.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout


@pytest.mark.parametrize("model", sorted(config.KINDS.values(), key=lambda c: c.KIND))
def test_schema_declares_exactly_the_model_fields(model: type[Any]) -> None:
    schema = storage_schemas()[model.KIND]
    assert schema["properties"]["apiVersion"]
    for part in ("spec", "status"):
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(model)}
        if part not in fields or not hasattr(fields[part], "__struct_fields__"):
            continue
        model_fields = {f.encode_name for f in msgspec.structs.fields(fields[part])}
        schema_fields = set(schema["properties"].get(part, {}).get("properties", {}))
        assert model_fields == schema_fields, f"{model.KIND}.{part}"


def test_every_served_kind_has_a_model() -> None:
    served = set(storage_schemas())
    assert {m.KIND for m in config.KINDS.values()} <= served
    assert served - {m.KIND for m in config.KINDS.values()} == {"ConfigurationState"}
