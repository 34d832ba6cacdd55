"""Read the IngestionSource a consolidation cycle runs: from a YAML file, or ``env:NAME`` (JSON or YAML
in an environment variable, as the controller passes specs to pods). Errors name the YAML path and line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.spec import IngestionSource, SpecError, line_of, parse_documents, yaml_path


def load_ingestion_source(spec: Path | str, env: Mapping[str, str] | None = None) -> IngestionSource:
    """The one IngestionSource (with ``spec.consolidation``) of a file or of ``env:NAME``."""
    where = str(spec)
    if where.startswith("env:"):
        name = where[len("env:") :]
        text = (os.environ if env is None else env).get(name)
        if text is None:
            raise SpecError(where, [("", None, f"environment variable {name} is not set")])
    else:
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(where, [("", None, f"cannot read the spec: {exc}")]) from None
    return parse_ingestion_source(text, where)


def parse_ingestion_source(text: str, source: str) -> IngestionSource:
    docs = [(d, i) for d, i in parse_documents(text, source) if d.get("kind") == "IngestionSource"]
    if not docs:
        raise SpecError(source, [("kind", None, "no document of kind IngestionSource in the file")])
    if len(docs) > 1:
        raise SpecError(
            source, [("kind", None, "more than one IngestionSource in the file: give one per file")]
        )
    doc, index = docs[0]
    try:
        parsed = IngestionSource.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(source, _problems(exc, index)) from None
    if parsed.spec.consolidation is None:
        raise SpecError(
            source,
            [
                (
                    "spec.consolidation",
                    line_of(index, ("spec",)),
                    "this IngestionSource has no consolidation to run",
                )
            ],
        )
    return parsed


def _problems(exc: ValidationError, index: dict[tuple[Any, ...], int]) -> list[tuple[str, int | None, str]]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append((yaml_path(loc), line_of(index, loc), err["msg"]))
    return out
