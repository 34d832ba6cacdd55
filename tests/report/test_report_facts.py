"""What the report reads of a run: rejects summed per reason, and stage results when there is no status
(in a pod)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam.report.facts import SAMPLE_REJECTS, collect
from controller.spec import PipelineRun

pytestmark = pytest.mark.unit

RUN = PipelineRun.model_validate(
    {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "r", "namespace": "team"},
        "spec": {
            "source": {"uri": "in.csv", "columns": [{"name": "id", "type": "INT64"}]},
            "load": {"table": "raw.t"},
        },
    }
)


def _run_dir(workdir: Path) -> Path:
    path = workdir / "runs" / "team" / "r"
    (path / "validate").mkdir(parents=True)
    (path / "load").mkdir()
    return path


def test_rejects_are_counted_per_rule_and_column_with_a_few_rows_each(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    n = 10_000
    pq.write_table(
        pa.table(
            {
                "file": ["in.csv"] * n,
                "row_number": [i // 2 + 1 for i in range(n)],  # each row broke two rules
                "column_name": ["id", None] * (n // 2),
                "rule": ["type:INT64", "too_many_columns"] * (n // 2),
                "value": ["x"] * n,
                "message": ["bad"] * n,
                "line_text": ["x,y"] * n,
            }
        ),
        run_dir / "validate" / "rejects.parquet",
    )

    facts = collect(RUN, tmp_path)

    assert facts.rejected_rows == n // 2
    assert [(r.rule, r.column, r.rows) for r in facts.rejects] == [
        ("too_many_columns", "", n // 2),
        ("type:INT64", "id", n // 2),
    ]
    assert [s["row_number"] for s in facts.rejects[0].samples] == list(range(1, SAMPLE_REJECTS + 1))


def test_without_a_status_the_stage_results_tell_the_phase_and_times(tmp_path: Path) -> None:
    run_dir = _run_dir(tmp_path)
    timing = {"start": "2026-01-01T00:00:00.000Z", "end": "2026-01-01T00:00:02.500Z"}
    (run_dir / "validate" / "result.json").write_text(
        json.dumps({"state": "Succeeded", "rows_in": 3, "rows_out": 3, "timing": timing}), encoding="utf-8"
    )
    (run_dir / "load" / "result.json").write_text(
        json.dumps({"state": "Failed", "message": "raw.t is locked", "timing": timing}), encoding="utf-8"
    )

    facts = collect(RUN, tmp_path)

    assert facts.phase == "Failed"
    assert facts.message == "raw.t is locked"
    assert [(s.name, s.state, s.seconds) for s in facts.stages] == [
        ("validate", "Succeeded", 2.5),
        ("load", "Failed", 2.5),
    ]
