"""What a stage attempt's Job and Pods say happened, as a planner :class:`Outcome`. Pure.

- the Job completed -> ``succeeded`` (rows and message from the pod's termination message);
- the container exited 65 -> ``bad_input`` (the data or spec is wrong; no retry);
- the container exited otherwise -> ``app`` (retried up to ``spec.retries.limit``);
- the pod was evicted or disrupted, vanished, or cannot pull its image for too long, or the Job itself
  vanished -> ``infra`` (retried without using up the limit).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from controller.planner import Outcome, StageRows

EXIT_BAD_INPUT = 65
IMAGE_ERRORS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
    }
)


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or []}


def _result(message: str | None) -> dict[str, Any]:
    if not message:
        return {}
    try:
        data = json.loads(message)
    except ValueError:
        return {"message": message.strip()[-500:]}
    return data if isinstance(data, dict) else {}


def _rows(result: dict[str, Any]) -> StageRows:
    return StageRows(
        int(result.get("rows_in", 0) or 0),
        int(result.get("rows_out", 0) or 0),
        int(result.get("rows_rejected", 0) or 0),
        int(result.get("bytes_billed", 0) or 0),
    )


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def image_error(pod: dict[str, Any]) -> str | None:
    """Why the pod's container cannot start (its image cannot be pulled, its config is wrong), if so."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in IMAGE_ERRORS:
            return str(waiting["reason"])
    return None


def _disrupted(pod: dict[str, Any]) -> str | None:
    status = pod.get("status") or {}
    if status.get("reason") in ("Evicted", "Preempting", "NodeLost", "Shutdown", "Terminated"):
        return (
            f"pod {pod['metadata']['name']} {status['reason'].lower()}: {status.get('message', '')}".strip()
        )
    cond = _conditions(pod).get("DisruptionTarget")
    if cond and cond.get("status") == "True":
        return f"pod {pod['metadata']['name']} disrupted ({cond.get('reason', '')})"
    return None


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def outcome_of(
    stage: str,
    attempt: int,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    now: datetime,
    image_grace_seconds: int,
) -> Outcome:
    """The outcome of one stage attempt, from its Job (None if absent) and the Job's pods."""
    if job is None:
        return Outcome(
            stage,
            attempt,
            "infra",
            message=f"the Job of {stage} attempt {attempt} vanished",
            reason="JobVanished",
        )
    conds = _conditions(job)
    if (
        conds.get("Complete", {}).get("status") == "True"
        or conds.get("SuccessCriteriaMet", {}).get("status") == "True"
    ):
        term = next((t for t in map(_terminated, pods) if t), None)
        result = _result(term.get("message") if term else None)
        return Outcome(
            stage,
            attempt,
            "succeeded",
            message=str(result.get("message", "")),
            rows=_rows(result),
            tables=tuple(result.get("tables", ())),
            report=str(result.get("report") or ""),
        )
    failed = (
        conds.get("Failed", {}).get("status") == "True"
        or conds.get("FailureTarget", {}).get("status") == "True"
    )
    for pod in pods:
        disruption = _disrupted(pod)
        if disruption and (failed or (pod.get("status") or {}).get("phase") == "Failed"):
            return Outcome(stage, attempt, "infra", message=disruption, reason="PodDisrupted")
    terms = [t for t in map(_terminated, pods) if t and t.get("exitCode") not in (None, 0)]
    if terms:
        term = terms[-1]
        result = _result(term.get("message"))
        code = int(term.get("exitCode", 1))
        message = str(result.get("message") or f"exited with status {code} ({term.get('reason', '')})")
        if code == EXIT_BAD_INPUT:
            return Outcome(
                stage,
                attempt,
                "bad_input",
                message=message,
                reason=str(result.get("reason") or "BadInput"),
                rows=_rows(result),
                report=str(result.get("report") or ""),
            )
        if code in (137, 143) and not result:
            return Outcome(
                stage, attempt, "infra", message=f"container killed (exit {code})", reason="Killed"
            )
        return Outcome(
            stage,
            attempt,
            "app",
            message=message,
            reason=str(result.get("reason") or "StageFailed"),
            rows=_rows(result),
            report=str(result.get("report") or ""),
        )
    if failed:
        reason = conds.get("Failed", {}).get("reason", "")
        return Outcome(
            stage,
            attempt,
            "infra",
            message=f"the pod of {stage} attempt {attempt} vanished ({reason})",
            reason="PodVanished",
        )
    for pod in pods:
        waiting = image_error(pod)
        created = _parse_time(pod["metadata"].get("creationTimestamp"))
        if waiting and created and (now - created).total_seconds() > image_grace_seconds:
            return Outcome(
                stage, attempt, "infra", message=f"pod {pod['metadata']['name']}: {waiting}", reason=waiting
            )
    return Outcome(stage, attempt, "running")


def image_grace_end(pods: list[dict[str, Any]], image_grace_seconds: int) -> datetime | None:
    """When the first pod that cannot start its container runs out of grace (None: no such pod)."""
    ends = [
        created + timedelta(seconds=image_grace_seconds)
        for pod in pods
        if image_error(pod) and (created := _parse_time(pod["metadata"].get("creationTimestamp")))
    ]
    return min(ends, default=None)


# Dataflow job states (Job.currentState) a stage attempt is still running in.
DATAFLOW_RUNNING = frozenset(
    {
        "JOB_STATE_UNKNOWN",
        "JOB_STATE_STOPPED",  # not yet started
        "JOB_STATE_PENDING",
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_CANCELLING",
        "JOB_STATE_DRAINING",
        "JOB_STATE_RESOURCE_CLEANING_UP",  # done, its resources being released
    }
)


def dataflow_rows(counters: dict[str, int]) -> StageRows:
    """A stage's rows from its pipeline's counters: ``rows_read`` in, ``rows_written[...]`` out."""
    written = sum(v for k, v in counters.items() if k == "rows_written" or k.startswith("rows_written["))
    return StageRows(counters.get("rows_read", 0), written, counters.get("rows_rejected", 0))


def outcome_of_dataflow_job(
    stage: str,
    attempt: int,
    job_id: str,
    name: str,
    state: str | None,
    errors: list[str],
    counters: dict[str, int] | None = None,
) -> Outcome:
    """The outcome of a stage attempt run as a Dataflow job, from the job's state (None: not found).

    - ``JOB_STATE_DONE`` -> ``succeeded``, with the rows its pipeline counted;
    - ``JOB_STATE_FAILED`` -> ``app`` (retried up to ``spec.retries.limit``), with the job's error messages;
    - ``JOB_STATE_CANCELLED`` or drained while the run still wanted it (someone stopped it outside the
      operator) -> ``bad_input``: the run fails at once, saying who to ask;
    - a job that vanished, or was replaced (``JOB_STATE_UPDATED``) -> ``infra``;
    - anything else (queued, pending, running, cancelling, ...) -> ``running``.
    """
    what = f"Dataflow job {name} ({job_id})"
    if state is None:
        return Outcome(stage, attempt, "infra", message=f"{what} vanished", reason="DataflowJobVanished")
    if state in DATAFLOW_RUNNING:
        return Outcome(stage, attempt, "running")
    if state == "JOB_STATE_DONE":
        rows = dataflow_rows(counters or {})
        message = f"{what} done: {rows.rows_out} rows written from {rows.rows_in} rows read"
        return Outcome(stage, attempt, "succeeded", message=message, rows=rows)
    if state == "JOB_STATE_FAILED":
        detail = "; ".join(errors) if errors else "no error message was reported (see the job's logs)"
        return Outcome(stage, attempt, "app", message=f"{what} failed: {detail}", reason="DataflowJobFailed")
    if state in ("JOB_STATE_CANCELLED", "JOB_STATE_DRAINED"):
        return Outcome(
            stage,
            attempt,
            "bad_input",
            message=f"{what} was {state.removeprefix('JOB_STATE_').lower()} outside the operator "
            "(to stop a run, set spec.cancel: true)",
            reason="DataflowJobCancelled",
        )
    return Outcome(stage, attempt, "infra", message=f"{what} ended as {state}", reason="DataflowJobLost")
