"""A Dataflow job's state as the planner's outcome of a stage attempt. Pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from controller.observe import outcome_of_dataflow_job
from controller.planner import Outcome, RunStatus, StageRows, StageStatus, StartStage, plan
from controller.spec import PipelineRunSpec
from tests.doubles.stage_runs import SPEC

pytestmark = pytest.mark.unit


def outcome(
    state: str | None, errors: list[str] | None = None, counters: dict[str, int] | None = None
) -> Outcome:
    return outcome_of_dataflow_job(
        "transform", 2, "2026-01-01_00_00_00-1", "ns-run-transform-2", state, errors or [], counters
    )


@pytest.mark.parametrize(
    "state",
    [
        "JOB_STATE_QUEUED",
        "JOB_STATE_PENDING",
        "JOB_STATE_RUNNING",
        "JOB_STATE_CANCELLING",
        "JOB_STATE_RESOURCE_CLEANING_UP",
        "JOB_STATE_UNKNOWN",
    ],
)
def test_a_job_not_yet_finished_is_a_running_attempt(state: str) -> None:
    assert outcome(state).kind == "running"


def test_a_done_job_succeeds_with_the_rows_its_pipeline_counted() -> None:
    done = outcome(
        "JOB_STATE_DONE", counters={"rows_read": 10, "rows_written[a.b]": 3, "rows_written[a.c]": 4}
    )

    assert done.kind == "succeeded"
    assert done.rows == StageRows(10, 7, 0)
    assert (
        done.message
        == "Dataflow job ns-run-transform-2 (2026-01-01_00_00_00-1) done: 7 rows written from 10 rows read"
    )


def test_a_failed_job_is_an_application_failure_carrying_its_error_messages() -> None:
    failed = outcome("JOB_STATE_FAILED", errors=["Workflow failed.", "S01 failed: boom"])

    assert (failed.kind, failed.reason) == ("app", "DataflowJobFailed")
    assert failed.message.endswith("failed: Workflow failed.; S01 failed: boom")


def test_a_failed_job_without_messages_says_where_to_look() -> None:
    assert "see the job's logs" in outcome("JOB_STATE_FAILED").message


def test_a_job_cancelled_outside_the_operator_fails_the_run_without_retry_and_says_how_to_cancel() -> None:
    cancelled = outcome("JOB_STATE_CANCELLED")

    assert (cancelled.kind, cancelled.reason) == ("bad_input", "DataflowJobCancelled")
    assert "spec.cancel: true" in cancelled.message


@pytest.mark.parametrize("state", [None, "JOB_STATE_UPDATED"])
def test_a_vanished_or_replaced_job_is_an_infrastructure_failure(state: str | None) -> None:
    assert outcome(state).kind == "infra"


def test_a_new_attempt_forgets_the_job_of_the_last_one() -> None:
    spec = PipelineRunSpec.model_validate({**SPEC, "retries": {"limit": 2, "backoffSeconds": 0}})
    now = datetime(2026, 2, 3, tzinfo=UTC)
    stages = tuple(
        StageStatus(name=s, state="Succeeded") if s in ("validate", "load") else StageStatus(name=s)
        for s in ("validate", "load", "transform", "aggregate")
    )
    running = replace(
        stages[2],
        state="Running",
        attempt=1,
        start_time=now,
        job="default-shop-transform-1",
        dataflow_job_id="j1",
    )
    status = RunStatus(phase="Transforming", stages=(*stages[:2], running, stages[3]), start_time=now)

    again = plan(spec, status, {"transform": replace(outcome("JOB_STATE_FAILED"), attempt=1)}, now)

    transform = again.status.stage("transform")
    assert transform is not None
    assert (transform.state, transform.attempt, transform.job, transform.dataflow_job_id) == (
        "Running",
        2,
        "",
        "",
    )
    assert StartStage("transform", 2) in again.actions
