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

from ironlb.core import config, diagnosis, speakerreport

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
    assert served - {m.KIND for m in config.KINDS.values()} == {
        "ConfigurationState",
        "SpeakerReport",
    }


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, sub in schema.get("properties", {}).items():
        out.add(prefix + name)
        out |= _schema_paths(sub, f"{prefix}{name}.")
        if "items" in sub:
            out |= _schema_paths(sub["items"], f"{prefix}{name}[].")
    return out


def _body_paths(value: Any, prefix: str = "") -> set[str]:
    out = set()
    if isinstance(value, dict):
        for name, sub in value.items():
            out.add(prefix + name)
            out |= _body_paths(sub, f"{prefix}{name}.")
    elif isinstance(value, list):
        for item in value:
            out |= _body_paths(item, prefix.rstrip(".") + "[].")
    return out


def test_speaker_report_schema_keeps_every_field_the_speaker_writes() -> None:
    # A field missing from the schema is pruned by the API server: the doctor would never see it.
    report = diagnosis.SpeakerReport(
        "a",
        key_id="k",
        live=("a",),
        interfaces=(diagnosis.InterfaceReport("eth0", ("198.18.0.1/24",)),),
        announced={"198.18.0.240": "eth0"},
        not_announced={"198.18.0.241": "why"},
        conflicts={"198.18.0.240": "02:00:00:00:00:01"},
        sessions=(diagnosis.SessionReport("r", "198.18.0.9", "Active", 1.0, 1, ("x",), "Up", "y"),),
        problems=("p",),
    )
    body = speakerreport.body(report, "metallb-system")
    schema = storage_schemas()["SpeakerReport"]
    written = _body_paths({"spec": body["spec"], "status": body["status"]})
    assert written <= _schema_paths(schema)
    assert speakerreport.parse(body) == report
