"""The example's Looker Studio data-source document names every field of its KPI tables."""

from __future__ import annotations

import re

import pytest

from controller.spec_check import load_checked
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

EXAMPLE = ROOT / "examples" / "inventory"


def test_example_data_source_document_lists_every_kpi_field_with_its_role() -> None:
    run = load_checked(EXAMPLE / "pipelinerun.yaml")
    text = (EXAMPLE / "looker-studio.md").read_text(encoding="utf-8")

    sections = dict(re.findall(r"^## `([^`]+)`[^\n]*\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))

    assert set(sections) == {a.output.table for a in run.spec.aggregate}
    for aggregate in run.spec.aggregate:
        rows = dict(
            re.findall(
                r"^\| `(\w+)` \|[^|]*\|[^|]*\| (Dimension|Metric) \|",
                sections[aggregate.output.table],
                flags=re.M,
            )
        )
        assert rows == {c: "Dimension" for c in aggregate.group_by} | {
            m.name: "Metric" for m in aggregate.metrics
        }
