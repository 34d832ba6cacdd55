"""The run state machine: order, retries, backoff, timeouts, cancellation, phases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.planner import (
    MAX_INFRA_RETRIES,
    Outcome,
    RunStatus,
    StartStage,
    StopStage,
    WaitUntil,
    initial_status,
    plan,
)
from controller.spec import PipelineRunSpec

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_spec(**extra: object) -> PipelineRunSpec:
    base: dict[str, object] = {
        "source": {"uri": "x.csv", "columns": [{"name": "id", "type": "INT64"}]},
        "load": {"table": "raw.t"},
        "transform": {"output": {"table": "tds.t"}},
        "aggregate": [{"output": {"table": "bds.t"}, "metrics": [{"name": "n", "agg": "count"}]}],
    }
    base.update(extra)
    return PipelineRunSpec.model_validate(base)


def succeed(status: RunStatus, spec: PipelineRunSpec, now: datetime) -> RunStatus:
    running = next(s for s in status.stages if s.state == "Running")
    outcome = Outcome(running.name, running.attempt, "succeeded")
    return plan(spec, status, {running.name: outcome}, now).status


def test_stages_start_in_order_and_the_run_succeeds() -> None:
    spec = make_spec()
    step = plan(spec, initial_status(spec), {}, T0)
    started = [a.stage for a in step.actions if isinstance(a, StartStage)]
    status = step.status
    assert started == ["validate"]
    assert status.phase == "Validating"
    phases = []
    for _ in range(4):
        status = succeed(status, spec, T0)
        phases.append(status.phase)
    assert phases == ["Loading", "Transforming", "Aggregating", "Succeeded"]


def test_spec_without_transform_has_only_validate_and_load() -> None:
    spec = make_spec(transform=None, aggregate=[])
    assert [s.name for s in initial_status(spec).stages] == ["validate", "load"]


def test_bad_input_fails_the_run_without_retry() -> None:
    spec = make_spec()
    status = plan(spec, initial_status(spec), {}, T0).status
    step = plan(spec, status, {"validate": Outcome("validate", 1, "bad_input", "row 3: abc")}, T0)
    assert step.status.phase == "Failed"
    assert "row 3: abc" in step.status.message
    assert not [a for a in step.actions if isinstance(a, StartStage)]


def test_retry_waits_backoff_then_restarts_the_stage() -> None:
    spec = make_spec(retries={"limit": 2, "backoffSeconds": 10})
    status = plan(spec, initial_status(spec), {}, T0).status
    step = plan(spec, status, {"validate": Outcome("validate", 1, "app", "crashed")}, T0)
    assert [a for a in step.actions if isinstance(a, WaitUntil)] == [WaitUntil(T0 + timedelta(seconds=10))]
    early = plan(spec, step.status, {}, T0 + timedelta(seconds=5))
    assert not [a for a in early.actions if isinstance(a, StartStage)]
    later = plan(spec, early.status, {}, T0 + timedelta(seconds=10))
    assert [a for a in later.actions if isinstance(a, StartStage)] == [StartStage("validate", 2)]


def test_backoff_doubles_and_the_limit_fails_the_run() -> None:
    spec = make_spec(retries={"limit": 2, "backoffSeconds": 10})
    status = plan(spec, initial_status(spec), {}, T0).status
    now = T0
    waits = []
    for attempt in (1, 2):
        step = plan(spec, status, {"validate": Outcome("validate", attempt, "app", "boom")}, now)
        waits.append(next(a.when for a in step.actions if isinstance(a, WaitUntil)) - now)
        now = now + waits[-1]
        status = plan(spec, step.status, {}, now).status
    final = plan(spec, status, {"validate": Outcome("validate", 3, "app", "boom")}, now)
    assert waits == [timedelta(seconds=10), timedelta(seconds=20)]
    assert final.status.phase == "Failed"


def test_infrastructure_failures_do_not_use_up_the_retry_limit() -> None:
    spec = make_spec(retries={"limit": 0})
    status = plan(spec, initial_status(spec), {}, T0).status
    for attempt in range(1, MAX_INFRA_RETRIES + 1):
        step = plan(spec, status, {"validate": Outcome("validate", attempt, "infra", "pod evicted")}, T0)
        status = plan(spec, step.status, {}, T0).status
        assert status.phase == "Validating"
    final = plan(
        spec, status, {"validate": Outcome("validate", MAX_INFRA_RETRIES + 1, "infra", "evicted")}, T0
    )
    assert final.status.phase == "Failed"


def test_stage_timeout_stops_the_stage_and_fails_the_run() -> None:
    spec = make_spec(timeouts={"stageSeconds": 30})
    status = plan(spec, initial_status(spec), {}, T0).status
    step = plan(spec, status, {}, T0 + timedelta(seconds=31))
    assert step.status.phase == "Failed"
    assert step.status.reason == "Timeout"
    assert StopStage("validate", 1, "Timeout") in step.actions


def test_cancel_stops_the_running_stage() -> None:
    spec = make_spec()
    status = plan(spec, initial_status(spec), {}, T0).status
    step = plan(make_spec(cancel=True), status, {}, T0)
    assert step.status.phase == "Cancelled"
    assert StopStage("validate", 1, "Cancelled") in step.actions


def test_a_stale_outcome_of_an_old_attempt_is_ignored() -> None:
    spec = make_spec()
    status = plan(spec, initial_status(spec), {}, T0).status
    step = plan(spec, status, {"validate": Outcome("validate", 7, "succeeded")}, T0)
    assert step.status.phase == "Validating"


def test_a_terminal_run_plans_nothing() -> None:
    spec = make_spec()
    done = RunStatus(phase="Succeeded", stages=initial_status(spec).stages)
    assert plan(spec, done, {}, T0).actions == ()


def _pulling(created: datetime, reason: str | None) -> dict[str, object]:
    state = {"waiting": {"reason": reason}} if reason else {"running": {}}
    return {
        "metadata": {
            "name": "r-validate-1-abcde",
            "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "status": {"phase": "Pending", "containerStatuses": [{"name": "stage", "state": state}]},
    }


def test_a_pod_that_cannot_pull_its_image_is_an_infra_failure_once_its_grace_ends() -> None:
    from controller.observe import image_grace_end, outcome_of

    created = datetime(2026, 1, 1, tzinfo=UTC)
    job = {"metadata": {"name": "r-validate-1"}, "status": {"active": 1}}
    stuck = [_pulling(created, "ImagePullBackOff")]
    assert outcome_of("validate", 1, job, stuck, created + timedelta(seconds=299), 300).kind == "running"
    late = outcome_of("validate", 1, job, stuck, created + timedelta(seconds=301), 300)
    assert (late.kind, late.reason) == ("infra", "ImagePullBackOff")
    # The moment the run must be looked at again: no event marks it.
    assert image_grace_end(stuck, 300) == created + timedelta(seconds=300)
    assert image_grace_end([_pulling(created, None), _pulling(created, "Pending")], 300) is None
