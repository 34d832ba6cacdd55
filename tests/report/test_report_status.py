"""Where a run's report is: from the stage that wrote it into status.report and the final Event."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from controller import status as status_codec
from controller.observe import outcome_of
from controller.planner import Outcome, RecordEvent, RunStatus, initial_status, plan
from controller.spec import PipelineRunSpec

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REPORT = "/var/lib/dataops/runs/default/r/report.html"


def _spec() -> PipelineRunSpec:
    return PipelineRunSpec.model_validate(
        {"source": {"uri": "x.csv", "columns": [{"name": "id", "type": "INT64"}]}, "load": {"table": "raw.t"}}
    )


def _finish(outcomes: list[Outcome]) -> tuple[RunStatus, list[RecordEvent]]:
    spec = _spec()
    status = plan(spec, initial_status(spec), {}, T0).status
    events: list[RecordEvent] = []
    for n, outcome in enumerate(outcomes, start=1):
        step = plan(spec, status, {outcome.stage: outcome}, T0 + timedelta(seconds=n))
        status = step.status
        events += [a for a in step.actions if isinstance(a, RecordEvent)]
    return status, events


def test_report_of_the_last_stage_becomes_the_runs_and_is_in_the_final_event() -> None:
    status, events = _finish(
        [Outcome("validate", 1, "succeeded"), Outcome("load", 1, "succeeded", report=REPORT)]
    )

    assert status.phase == "Succeeded"
    assert status.report == REPORT
    assert events[-1].reason == "Succeeded"
    assert events[-1].message.endswith(f"report: {REPORT}")


def test_report_of_a_failed_stage_becomes_the_runs() -> None:
    status, events = _finish([Outcome("validate", 1, "bad_input", message="bad rows", report=REPORT)])

    assert status.phase == "Failed"
    assert status.report == REPORT
    assert f"report: {REPORT}" in events[-1].message


def test_status_document_carries_the_report_both_ways() -> None:
    status, _ = _finish([Outcome("validate", 1, "succeeded"), Outcome("load", 1, "succeeded", report=REPORT)])

    doc = status_codec.to_dict(status, 1, T0)

    assert doc["report"] == REPORT
    assert status_codec.from_dict(doc).report == REPORT


def test_report_is_read_from_the_pods_termination_message() -> None:
    job = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    message = json.dumps({"rows_in": 3, "rows_out": 3, "message": "ok", "report": REPORT})
    pod = {
        "metadata": {"name": "r-load-1-x"},
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": message}}}]},
    }

    outcome = outcome_of("load", 1, job, [pod], T0, 60)

    assert outcome.kind == "succeeded"
    assert outcome.report == REPORT
