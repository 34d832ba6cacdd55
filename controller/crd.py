"""The CustomResourceDefinitions, generated from the spec model: one source for both. Pure.

``python -m controller.crd crds/`` rewrites ``crds/*.yaml``; a test checks the files match.
Pydantic's JSON schema becomes a structural OpenAPI v3 schema: references inlined, ``Optional``
as ``nullable``, a field that takes several shapes as a preserved value with a CEL type check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from controller.spec import IngestionSourceSpec, PipelineRunSpec

GROUP = "dataops.io"
VERSION = "v1alpha1"
CATEGORY = "dataops"

_CEL_TYPE = {
    "string": "string",
    "integer": "int",
    "number": "double",
    "boolean": "bool",
    "array": "list",
    "object": "map",
}
_KEEP = (
    "description",
    "type",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "format",
    "default",
)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].split("/")[-1]]
            merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """One JSON-schema node to a structural OpenAPI v3 node."""
    desc = {"description": node["description"]} if "description" in node else {}
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) == 1:
            default = {"default": node["default"]} if node.get("default") is not None else {}
            out = _structural({**options[0], **desc, **default})
            if nullable:
                out["nullable"] = True
            return out
        # Several shapes (a column or a list, a name or an object): kept as written. The API server
        # allows no CEL rule on an untyped node; the controller checks the shape against the model.
        shapes = ", ".join(sorted({_CEL_TYPE[o.get("type", "object")] for o in options}))
        return {
            "description": f"{node.get('description', '')} ({shapes})".strip(),
            "x-kubernetes-preserve-unknown-fields": True,
        }
    if "const" in node:
        return {**desc, "type": "string", "enum": [node["const"]]}
    kind = node.get("type")
    if kind is None:
        return {**desc, "x-kubernetes-preserve-unknown-fields": True}
    out = {k: node[k] for k in _KEEP if k in node and node[k] is not None}
    if kind == "object":
        props = node.get("properties")
        if props:
            out["properties"] = {name: _structural(sub) for name, sub in props.items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = _structural(node.get("items", {}))
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    return _structural(_resolve(raw, raw.get("$defs", {})))


def _immutable_rule(spec_schema: dict[str, Any], mutable: set[str]) -> dict[str, str]:
    parts = []
    for name in sorted(spec_schema["properties"]):
        if name in mutable:
            continue
        if name in spec_schema.get("required", []):
            parts.append(f"self.{name} == oldSelf.{name}")
        else:
            parts.append(
                f"(has(self.{name}) ? has(oldSelf.{name}) && self.{name} == oldSelf.{name} : "
                f"!has(oldSelf.{name}))"
            )
    return {
        "rule": " && ".join(parts),
        "message": f"spec is immutable once the run exists; only {', '.join(sorted(mutable))} may change",
    }


def pipelinerun_crd() -> dict[str, Any]:
    spec = structural_schema(PipelineRunSpec)
    spec["x-kubernetes-validations"] = [
        _immutable_rule(spec, {"cancel", "rerun"}),
        {
            "rule": "!has(self.aggregate) || size(self.aggregate) == 0 || has(self.transform)",
            "message": "aggregate reads the transform's output table: add spec.transform",
        },
    ]
    metric = spec["properties"]["aggregate"]["items"]["properties"]["metrics"]["items"]
    metric["x-kubernetes-validations"] = [
        {"rule": "!(has(self.column) && has(self.expr))", "message": "give 'column' or 'expr', not both"},
        {
            "rule": "has(self.column) || has(self.expr) || self.agg == 'count'",
            "message": "this agg needs 'column' or 'expr'",
        },
    ]
    columns: list[dict[str, Any]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
        {"name": "Rows", "type": "integer", "jsonPath": ".status.rows"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Report", "type": "string", "jsonPath": ".status.report", "priority": 1},
    ]
    return _crd("PipelineRun", "pipelineruns", ["dpr"], spec, columns)


def ingestionsource_crd() -> dict[str, Any]:
    spec = structural_schema(IngestionSourceSpec)
    spec["x-kubernetes-validations"] = [
        {
            "rule": "has(self.files) || has(self.consolidation)",
            "message": "an IngestionSource needs spec.files, spec.consolidation, or both",
        },
    ]
    spec["properties"]["files"]["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.notifications) || self.prefix.startsWith('gs://')",
            "message": "notifications need a gs:// prefix (a bucket's object notifications)",
        },
    ]
    columns: list[dict[str, Any]] = [
        {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
        {"name": "Active", "type": "integer", "jsonPath": ".status.activeRuns"},
        {"name": "Last Cycle", "type": "date", "jsonPath": ".status.lastCycle.time"},
        {"name": "Merged", "type": "integer", "jsonPath": ".status.lastCycle.rowsMerged"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]
    return _crd("IngestionSource", "ingestionsources", ["dis"], spec, columns)


def _crd(
    kind: str, plural: str, short: list[str], spec: dict[str, Any], columns: list[dict[str, Any]]
) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            # Status is ours and kopf's (progress, last-handled state): never pruned.
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "dataops-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated from controller/spec.py by `python -m controller.crd crds/`: do not edit.\n"
    return {
        "pipelineruns.dataops.io.yaml": header
        + yaml.safe_dump(pipelinerun_crd(), sort_keys=False, width=120),
        "ingestionsources.dataops.io.yaml": header
        + yaml.safe_dump(ingestionsource_crd(), sort_keys=False, width=120),
    }


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "crds")
    target.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (target / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
