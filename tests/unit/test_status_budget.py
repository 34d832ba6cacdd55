"""The status stays under 64 KiB at the most stages, retries, tables and longest messages a spec allows."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller import status as status_codec
from controller.planner import StageRows, initial_status
from controller.planner import plan as plan_run
from controller.spec import MAX_AGGREGATES, PipelineRunSpec

pytestmark = pytest.mark.unit

BUDGET = 64 * 1024
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def biggest_spec() -> PipelineRunSpec:
    dataset = "d" * 60
    return PipelineRunSpec.model_validate(
        {
            "source": {
                "uri": "gs://" + "b" * 63 + "/" + "p" * 900,
                "columns": [{"name": "id", "type": "INT64"}],
            },
            "load": {"table": f"{dataset}.raw"},
            "transform": {"output": {"table": f"{dataset}.tds"}},
            "aggregate": [
                {"output": f"{dataset}.kpi_{i:03d}_" + "t" * 50, "metrics": [{"name": "n", "agg": "count"}]}
                for i in range(MAX_AGGREGATES)
            ],
            "retries": {"limit": 10},  # the most spec.retries.limit allows
        }
    )


def test_the_largest_status_a_spec_allows_fits_the_budget() -> None:
    spec = biggest_spec()
    status = initial_status(spec)
    huge = "x" * 100_000
    stages = tuple(
        replace(
            s,
            state="Failed",
            attempt=spec.retries.limit + 1 + 5,
            app_failures=spec.retries.limit + 1,
            infra_failures=5,
            start_time=NOW,
            completion_time=NOW,
            retry_after=NOW,
            message=huge,
            reason="R" * 200,
            rows=StageRows(10**18, 10**18, 10**18, 10**18),
            tables=(*tuple(a.output.table for a in spec.aggregate), spec.load.table),
            job="j" * 63,
            dataflow_job_id="2026-01-01_00_00_00-" + "9" * 20,
        )
        for s in status.stages
    )
    status = replace(status, phase="Failed", stages=stages, message=huge, reason="R" * 200, report="r" * 2000)
    doc = status_codec.to_dict(status, 10**9, NOW)
    size = len(json.dumps(doc).encode())
    assert size < BUDGET, f"status is {size} bytes"


def test_a_run_planned_through_every_retry_keeps_one_record_per_stage() -> None:
    from controller.planner import Outcome

    spec = biggest_spec()
    status = initial_status(spec)
    sizes = []
    for attempt in range(1, 40):
        step = plan_run(spec, status, {}, NOW)
        status = step.status
        running = next((s for s in status.stages if s.state == "Running"), None)
        if running is None:
            break
        outcome = Outcome(
            running.name, running.attempt, "infra" if attempt % 2 else "app", message="m" * 3000
        )
        status = plan_run(spec, status, {running.name: outcome}, NOW.replace(year=2027)).status
        sizes.append(len(json.dumps(status_codec.to_dict(status, 1, NOW)).encode()))
    assert len(status.stages) == 4
    assert max(sizes) < BUDGET
    assert max(sizes) - min(sizes) < 8 * 1024  # no history grows with retries
