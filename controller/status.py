"""RunStatus <-> the status object a user reads (Kubernetes conventions, camelCase). Pure.

One shape for both executors: the CR's ``status`` in the cluster, ``status.json`` on a laptop. The size
is bounded: one record per stage (the last attempt, with counters), never a growing history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.planner import RunStatus, StageRows, StageStatus

CONDITION_TYPES = ("Ready", "Running", "Failed")


def _ts(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _parse_ts(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def _present(d: dict[str, Any]) -> dict[str, Any]:
    """Without its unset (None) fields: the API server drops nulls, so what we compare is what it keeps."""
    return {k: v for k, v in d.items() if v is not None}


def stage_to_dict(s: StageStatus) -> dict[str, Any]:
    return _present(
        {
            "name": s.name,
            "state": s.state,
            "attempt": s.attempt,
            "appFailures": s.app_failures,
            "infraFailures": s.infra_failures,
            "startTime": _ts(s.start_time),
            "completionTime": _ts(s.completion_time),
            "retryAfter": _ts(s.retry_after),
            "durationSeconds": _duration(s.start_time, s.completion_time),
            "rowsIn": s.rows.rows_in,
            "rowsOut": s.rows.rows_out,
            "rowsRejected": s.rows.rows_rejected,
            "bytesBilled": s.rows.bytes_billed,
            "tables": list(s.tables),
            "job": s.job or None,  # the Job, or the Dataflow job's name (absent before it starts)
            "dataflowJobId": s.dataflow_job_id or None,  # absent but on Dataflow
            "reason": s.reason,
            "message": s.message[:2000],
        }
    )


def stage_from_dict(d: dict[str, Any]) -> StageStatus:
    return StageStatus(
        name=d["name"],
        state=d.get("state", "Pending"),
        attempt=int(d.get("attempt", 0)),
        app_failures=int(d.get("appFailures", 0)),
        infra_failures=int(d.get("infraFailures", 0)),
        start_time=_parse_ts(d.get("startTime")),
        completion_time=_parse_ts(d.get("completionTime")),
        retry_after=_parse_ts(d.get("retryAfter")),
        message=d.get("message", ""),
        reason=d.get("reason", ""),
        rows=StageRows(
            int(d.get("rowsIn", 0)),
            int(d.get("rowsOut", 0)),
            int(d.get("rowsRejected", 0)),
            int(d.get("bytesBilled", 0)),
        ),
        tables=tuple(d.get("tables", ())),
        job=d.get("job", ""),
        dataflow_job_id=d.get("dataflowJobId", ""),
    )


def conditions(
    status: RunStatus, generation: int, now: datetime, previous: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Ready / Running / Failed conditions; lastTransitionTime moves only when a status flips."""
    terminal = status.phase in ("Succeeded", "Failed", "Cancelled")
    wanted = {
        "Ready": status.phase == "Succeeded",
        "Running": not terminal and status.phase != "Pending",
        "Failed": status.phase in ("Failed", "Cancelled"),
    }
    before = {c["type"]: c for c in previous or []}
    out = []
    for ctype in CONDITION_TYPES:
        value = "True" if wanted[ctype] else "False"
        old = before.get(ctype)
        changed = old is None or old.get("status") != value
        out.append(
            {
                "type": ctype,
                "status": value,
                "reason": status.reason or status.phase,
                "message": status.message[:1000],
                "observedGeneration": generation,
                "lastTransitionTime": _ts(now) if changed else old["lastTransitionTime"],  # type: ignore[index]
            }
        )
    return out


def to_dict(
    status: RunStatus, generation: int, now: datetime, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    current = status.current_stage
    rows_out = next((s.rows.rows_out for s in reversed(status.stages) if s.state == "Succeeded"), 0)
    return _present(
        {
            "phase": status.phase,
            "reason": status.reason,
            "message": status.message[:2000],
            "observedGeneration": generation,
            "currentStage": current or "",
            "startTime": _ts(status.start_time),
            "completionTime": _ts(status.completion_time),
            "durationSeconds": _duration(status.start_time, status.completion_time),
            "rows": rows_out,
            "report": status.report or None,
            "stages": [stage_to_dict(s) for s in status.stages],
            "conditions": conditions(status, generation, now, (previous or {}).get("conditions")),
        }
    )


def from_dict(d: dict[str, Any] | None) -> RunStatus:
    if not d:
        return RunStatus()
    return RunStatus(
        phase=d.get("phase", "Pending"),
        stages=tuple(stage_from_dict(s) for s in d.get("stages", [])),
        start_time=_parse_ts(d.get("startTime")),
        completion_time=_parse_ts(d.get("completionTime")),
        reason=d.get("reason", ""),
        message=d.get("message", ""),
        report=str(d.get("report") or ""),
    )
