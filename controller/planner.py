"""The run state machine, written once: (spec, status, observed world, now) -> (next status, actions).

Pure: no clock, no I/O. The Kubernetes controller and the local executor both call :func:`plan`
and carry out the actions it returns; neither decides order, retries, timeouts or the phase.

Failures of a stage attempt come in three kinds:
- ``bad_input``: the data or the spec is wrong; retrying cannot help, the run fails at once;
- ``app``: the stage's process failed; retried with exponential backoff up to ``spec.retries.limit``;
- ``infra``: the pod was evicted, vanished, or its image could not be pulled; retried without using up
  the limit (bounded by ``MAX_INFRA_RETRIES`` so that nothing loops for ever).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from controller.spec import PipelineRunSpec
from controller.stages import PHASE_OF_STAGE, TERMINAL_PHASES, stages_of

MAX_INFRA_RETRIES = 5

StageState = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
OutcomeKind = Literal["running", "succeeded", "bad_input", "app", "infra"]


@dataclass(frozen=True)
class StageRows:
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    bytes_billed: int = 0  # what the stage's warehouse jobs were billed (BigQuery; 0 on DuckDB)


@dataclass(frozen=True)
class StageStatus:
    name: str
    state: StageState = "Pending"
    attempt: int = 0
    app_failures: int = 0
    infra_failures: int = 0
    start_time: datetime | None = None
    completion_time: datetime | None = None
    retry_after: datetime | None = None
    message: str = ""
    reason: str = ""
    rows: StageRows = field(default_factory=StageRows)
    tables: tuple[str, ...] = ()
    job: str = ""  # the attempt's Job, or its Dataflow job's name (set by the executor)
    dataflow_job_id: str = ""  # the attempt's Dataflow job id (``runner: dataflow`` stages)


@dataclass(frozen=True)
class RunStatus:
    phase: str = "Pending"
    stages: tuple[StageStatus, ...] = ()
    start_time: datetime | None = None
    completion_time: datetime | None = None
    reason: str = ""
    message: str = ""
    report: str = ""  # where the run report is (a path in the workdir, a gs:// object)

    def stage(self, name: str) -> StageStatus | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def current_stage(self) -> str | None:
        running = [s.name for s in self.stages if s.state == "Running"]
        if running:
            return running[0]
        pending = [s.name for s in self.stages if s.state == "Pending"]
        return pending[0] if pending and self.phase not in TERMINAL_PHASES else None


@dataclass(frozen=True)
class Outcome:
    """What the executor saw of a stage attempt."""

    stage: str
    attempt: int
    kind: OutcomeKind
    message: str = ""
    reason: str = ""
    rows: StageRows = field(default_factory=StageRows)
    tables: tuple[str, ...] = ()
    report: str = ""  # the run report the attempt wrote, if it wrote one


@dataclass(frozen=True)
class StartStage:
    stage: str
    attempt: int


@dataclass(frozen=True)
class StopStage:
    """Stop a running attempt (cancellation, timeout) and clean up what it created."""

    stage: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class RecordEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class WaitUntil:
    """Nothing to do before ``when`` (a backoff or a timeout to watch)."""

    when: datetime


Action = StartStage | StopStage | RecordEvent | WaitUntil


@dataclass(frozen=True)
class Plan:
    status: RunStatus
    actions: tuple[Action, ...]


def initial_status(spec: PipelineRunSpec) -> RunStatus:
    return RunStatus(phase="Pending", stages=tuple(StageStatus(name=s) for s in stages_of(spec)))


def backoff_seconds(spec: PipelineRunSpec, app_failures: int) -> float:
    """Exponential backoff after the n-th application failure (n >= 1)."""
    delay = spec.retries.backoff_seconds * (2 ** max(app_failures - 1, 0))
    return float(min(delay, spec.retries.max_backoff_seconds))


def plan(spec: PipelineRunSpec, status: RunStatus, observed: dict[str, Outcome], now: datetime) -> Plan:
    """The next status of a run and the actions that take it there."""
    if not status.stages:
        status = initial_status(spec)
    if status.phase in TERMINAL_PHASES:
        return Plan(status, ())
    if status.start_time is None:
        status = replace(status, start_time=now)
    actions: list[Action] = []
    stages = list(status.stages)

    for i, st in enumerate(stages):
        outcome = observed.get(st.name)
        if st.state == "Running" and outcome is not None and outcome.attempt == st.attempt:
            stages[i], events = _apply_outcome(spec, st, outcome, now)
            actions.extend(events)
    report = next((o.report for o in observed.values() if o.report), status.report)
    status = replace(status, stages=tuple(stages), report=report)

    if spec.cancel:
        return _finish(
            status,
            "Cancelled",
            "Cancelled",
            "the run was cancelled (spec.cancel)",
            now,
            actions,
            stop_reason="Cancelled",
        )

    failed = next((s for s in status.stages if s.state == "Failed"), None)
    if failed is not None:
        msg = f"stage {failed.name} failed: {failed.message}"
        return _finish(status, "Failed", failed.reason or "StageFailed", msg, now, actions)

    timed_out = _timeout(spec, status, now)
    if timed_out is not None:
        stage, msg = timed_out
        stages = [
            replace(s, state="Failed", reason="Timeout", message=msg, completion_time=now)
            if s.name == stage
            else s
            for s in status.stages
        ]
        status = replace(status, stages=tuple(stages))
        actions.extend(StopStage(s.name, s.attempt, "Timeout") for s in status.stages if s.name == stage)
        return _finish(status, "Failed", "Timeout", msg, now, actions)

    current = next((s for s in status.stages if s.state != "Succeeded"), None)
    if current is None:
        total = status.stages[-1].rows.rows_out if status.stages else 0
        return _finish(
            status, "Succeeded", "Succeeded", f"all stages succeeded ({total} rows out)", now, actions
        )

    phase = PHASE_OF_STAGE[current.name]
    if current.state == "Pending":
        if current.retry_after is not None and now < current.retry_after:
            actions.append(WaitUntil(current.retry_after))
            return Plan(replace(status, phase=phase if current.attempt else status.phase), tuple(actions))
        started = replace(
            current,
            state="Running",
            attempt=current.attempt + 1,
            start_time=now,
            completion_time=None,
            retry_after=None,
            message="",
            reason="",
            job="",
            dataflow_job_id="",
        )
        status = _put(status, started)
        actions.append(StartStage(current.name, started.attempt))
        if status.phase != phase:
            actions.append(
                RecordEvent("Normal", phase, f"stage {current.name} started (attempt {started.attempt})")
            )
        status = replace(status, phase=phase, reason=phase, message=f"stage {current.name} running")
    deadline = _next_deadline(spec, status)
    if deadline is not None:
        actions.append(WaitUntil(deadline))
    return Plan(status, tuple(actions))


def _apply_outcome(
    spec: PipelineRunSpec, st: StageStatus, o: Outcome, now: datetime
) -> tuple[StageStatus, list[Action]]:
    if o.kind == "running":
        return st, []
    if o.kind == "succeeded":
        done = replace(
            st,
            state="Succeeded",
            completion_time=now,
            message=o.message,
            reason="Succeeded",
            rows=o.rows,
            tables=o.tables,
        )
        return done, [RecordEvent("Normal", "StageSucceeded", f"stage {st.name} succeeded: {o.message}")]
    if o.kind == "bad_input":
        failed = replace(
            st,
            state="Failed",
            completion_time=now,
            message=o.message,
            reason=o.reason or "BadInput",
            rows=o.rows,
        )
        return failed, [RecordEvent("Warning", failed.reason, f"stage {st.name}: {o.message}")]
    if o.kind == "infra":
        n = st.infra_failures + 1
        if n > MAX_INFRA_RETRIES:
            failed = replace(
                st,
                state="Failed",
                infra_failures=n,
                completion_time=now,
                reason="InfrastructureFailure",
                message=f"{o.message} (infrastructure failure {n} times)",
            )
            return failed, [RecordEvent("Warning", "InfrastructureFailure", failed.message)]
        retry = replace(
            st,
            state="Pending",
            infra_failures=n,
            retry_after=now,
            message=o.message,
            reason=o.reason or "Infrastructure",
        )
        return retry, [RecordEvent("Warning", "StageRetrying", f"stage {st.name}: {o.message}; retrying")]
    n = st.app_failures + 1
    if n > spec.retries.limit:
        failed = replace(
            st,
            state="Failed",
            app_failures=n,
            completion_time=now,
            message=o.message,
            reason=o.reason or "StageFailed",
            rows=o.rows,
        )
        return failed, [RecordEvent("Warning", "StageFailed", f"stage {st.name}: {o.message}")]
    wait = backoff_seconds(spec, n)
    retry = replace(
        st,
        state="Pending",
        app_failures=n,
        retry_after=now + timedelta(seconds=wait),
        message=o.message,
        reason="BackingOff",
    )
    return retry, [
        RecordEvent(
            "Warning",
            "StageRetrying",
            f"stage {st.name} failed ({o.message}); retry {n}/{spec.retries.limit} in {wait:g}s",
        )
    ]


def _timeout(spec: PipelineRunSpec, status: RunStatus, now: datetime) -> tuple[str, str] | None:
    running = next((s for s in status.stages if s.state == "Running"), None)
    if (
        spec.timeouts.run_seconds
        and status.start_time is not None
        and now >= status.start_time + timedelta(seconds=spec.timeouts.run_seconds)
    ):
        name = running.name if running else (status.current_stage or "")
        return name, f"the run exceeded spec.timeouts.runSeconds={spec.timeouts.run_seconds}"
    if (
        running
        and spec.timeouts.stage_seconds
        and running.start_time is not None
        and now >= running.start_time + timedelta(seconds=spec.timeouts.stage_seconds)
    ):
        return running.name, (
            f"stage {running.name} exceeded spec.timeouts.stageSeconds={spec.timeouts.stage_seconds}"
        )
    return None


def _next_deadline(spec: PipelineRunSpec, status: RunStatus) -> datetime | None:
    times = []
    if spec.timeouts.run_seconds and status.start_time is not None:
        times.append(status.start_time + timedelta(seconds=spec.timeouts.run_seconds))
    running = next((s for s in status.stages if s.state == "Running"), None)
    if running and spec.timeouts.stage_seconds and running.start_time is not None:
        times.append(running.start_time + timedelta(seconds=spec.timeouts.stage_seconds))
    return min(times) if times else None


def _put(status: RunStatus, stage: StageStatus) -> RunStatus:
    return replace(status, stages=tuple(stage if s.name == stage.name else s for s in status.stages))


def _finish(
    status: RunStatus,
    phase: str,
    reason: str,
    message: str,
    now: datetime,
    actions: list[Action],
    stop_reason: str | None = None,
) -> Plan:
    stages = []
    for s in status.stages:
        if stop_reason and s.state == "Running":
            actions.append(StopStage(s.name, s.attempt, stop_reason))
            s = replace(s, state="Cancelled", completion_time=now, reason=stop_reason, message=message)
        elif stop_reason and s.state == "Pending":
            s = replace(s, state="Cancelled", reason=stop_reason)
        stages.append(s)
    done = replace(
        status, phase=phase, reason=reason, message=message, completion_time=now, stages=tuple(stages)
    )
    shown = f"{message}; report: {status.report}" if status.report else message
    actions.append(RecordEvent("Normal" if phase == "Succeeded" else "Warning", phase, shown))
    return Plan(done, tuple(actions))
