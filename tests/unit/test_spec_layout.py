"""partitionBy and clusterBy of the raw and KPI tables name columns those tables have."""

from __future__ import annotations

from typing import Any

import pytest

from controller.spec import PipelineRunSpec
from controller.spec_check import semantic_problems

pytestmark = pytest.mark.unit


def spec(load: dict[str, Any], output: dict[str, Any]) -> PipelineRunSpec:
    return PipelineRunSpec.model_validate(
        {
            "source": {"uri": "x.csv", "columns": [{"name": "id"}, {"name": "day", "type": "DATE"}]},
            "load": {"table": "raw.items", **load},
            "transform": {"output": {"table": "tds.items"}},
            "aggregate": [
                {
                    "output": {"table": "bds.n_by_day", **output},
                    "groupBy": ["day"],
                    "metrics": [{"name": "n", "agg": "count"}],
                }
            ],
        }
    )


def test_layout_over_known_columns_is_sound() -> None:
    assert (
        semantic_problems(spec({"partitionBy": "day", "clusterBy": ["id"]}, {"clusterBy": ["day", "n"]}))
        == []
    )


def test_layout_over_unknown_columns_is_named_by_path() -> None:
    problems = semantic_problems(spec({"partitionBy": "when", "clusterBy": ["idd"]}, {"partitionBy": "id"}))

    assert [path for path, _ in problems] == [
        "spec.load.partitionBy.column[0]",
        "spec.load.clusterBy[0]",
        "spec.aggregate[0].output.partitionBy.column[0]",
    ]
