"""The CRDs are generated from the spec model and agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.crd import render_all
from controller.spec import PipelineRunSpec, parse_documents

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_crd_files_are_the_generated_ones() -> None:
    for name, text in render_all().items():
        on_disk = (ROOT / "crds" / name).read_text(encoding="utf-8")
        assert on_disk == text, f"crds/{name} is stale: run `python -m controller.crd crds/`"


def _schema_walk(node: dict[str, object], path: str = "") -> list[str]:
    problems = []
    if "$ref" in node or "anyOf" in node or "additionalProperties" in node:
        problems.append(path)
    if node.get("type") is None and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(path + " (no type)")
    for name, sub in (node.get("properties") or {}).items():  # type: ignore[attr-defined]
        problems += _schema_walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _schema_walk(node["items"], f"{path}[]")  # type: ignore[arg-type]
    return problems


@pytest.mark.parametrize("name", sorted(render_all()))
def test_schemas_are_structural(name: str) -> None:
    crd = yaml.safe_load(render_all()[name])
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _schema_walk(schema) == []


def test_status_is_never_pruned() -> None:
    for text in render_all().values():
        schema = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True


def test_every_spec_field_of_the_model_is_in_the_crd() -> None:
    crd = yaml.safe_load(render_all()["pipelineruns.dataops.io.yaml"])
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    model_fields = {f.alias or n for n, f in PipelineRunSpec.model_fields.items()}
    assert set(spec["properties"]) == model_fields


def test_the_example_pipelinerun_parses_with_the_model() -> None:
    text = (ROOT / "examples" / "inventory" / "pipelinerun.yaml").read_text(encoding="utf-8")
    ((doc, _),) = parse_documents(text, "pipelinerun.yaml")
    assert PipelineRunSpec.model_validate(doc["spec"]).load.table == "inventory_raw.resources"
