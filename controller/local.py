"""The local executor: the planner's actions carried out as local processes, one stage after another.

Each stage runs as ``python -m beam.stages STAGE ...``, the same command line as the stage's pod. The
run's status lives in ``<workdir>/runs/<namespace>/<name>/status.json``, in the same shape as the CR's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller import status as status_codec
from controller.planner import (
    Outcome,
    OutcomeKind,
    RecordEvent,
    RunStatus,
    StageRows,
    StartStage,
    StopStage,
    WaitUntil,
    initial_status,
    plan,
)
from controller.spec import PipelineRun
from controller.stages import TERMINAL_PHASES

EXIT_BAD_INPUT = 65
RUN_DOCUMENT = "run.json"


@dataclass(frozen=True)
class StageEvent:
    """What a person is shown: a stage started, finished, failed; or an event of the planner."""

    kind: str  # "started" | "finished" | "event"
    stage: str = ""
    attempt: int = 0
    outcome: Outcome | None = None
    event: RecordEvent | None = None
    seconds: float = 0.0


@dataclass
class LocalRun:
    run: PipelineRun
    spec_path: Path
    workdir: Path
    on_event: Callable[[StageEvent], None] = lambda _e: None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    extra_args: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.run.metadata.namespace / self.run.metadata.name

    @property
    def status_path(self) -> Path:
        return self.run_dir / "status.json"

    def _previous(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.status_path.read_text(encoding="utf-8"))
            return data
        except (OSError, ValueError):
            return None

    def _save(self, status: RunStatus, previous: dict[str, Any] | None) -> dict[str, Any]:
        doc = status_codec.to_dict(status, self.run.metadata.generation, self.clock(), previous)
        doc["generation"] = self.run.metadata.generation
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        os.replace(tmp, self.status_path)
        return doc

    def _save_run_document(self) -> None:
        """The run as it ran (source URI resolved), for replaying its rejects later."""
        doc = self.run.model_dump(by_alias=True, mode="json", exclude_none=True)
        (self.run_dir / RUN_DOCUMENT).write_text(json.dumps(doc, indent=2), encoding="utf-8")

    def execute(self, resume: bool = False) -> dict[str, Any]:
        """Run to a terminal phase; returns the final status document."""
        spec = self.run.spec
        previous = self._previous()
        status = initial_status(spec)
        if previous and previous.get("generation") == self.run.metadata.generation:
            old = status_codec.from_dict(previous)
            # One start time per run and generation: a re-run writes the same ingestion timestamp.
            status = replace(status, start_time=old.start_time)
            if resume and old.phase == "Failed":
                status = _resume_from_failure(status, old)
        doc = self._save(status, previous)
        self._save_run_document()
        observed: dict[str, Outcome] = {}
        while True:
            step = plan(spec, status, observed, self.clock())
            status = step.status
            observed = {}
            doc = self._save(status, doc)
            for action in step.actions:
                if isinstance(action, RecordEvent):
                    self.on_event(StageEvent(kind="event", event=action))
            if status.phase in TERMINAL_PHASES:
                return doc
            starts = [a for a in step.actions if isinstance(a, StartStage)]
            waits = [a.when for a in step.actions if isinstance(a, WaitUntil)]
            if starts:
                deadline = min(waits) if waits else None
                for start in starts:
                    observed[start.stage] = self._run_stage(start, status, deadline)
            elif any(isinstance(a, StopStage) for a in step.actions):
                continue
            elif waits:
                pause = (min(waits) - self.clock()).total_seconds()
                time.sleep(max(0.0, min(pause, 60.0)))

    def _run_stage(self, start: StartStage, status: RunStatus, deadline: datetime | None) -> Outcome:
        stage_dir = self.run_dir / start.stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        result_file = stage_dir / "result.json"
        result_file.unlink(missing_ok=True)
        started_at = (status.start_time or self.clock()).isoformat(timespec="seconds")
        cmd = [
            sys.executable,
            "-m",
            "beam.stages",
            start.stage,
            "--spec",
            str(self.spec_path),
            "--workdir",
            str(self.workdir),
            "--started-at",
            started_at,
            "--result-file",
            str(result_file),
            *self.extra_args,
        ]
        self.on_event(StageEvent(kind="started", stage=start.stage, attempt=start.attempt))
        t0 = time.monotonic()
        timeout = max((deadline - self.clock()).total_seconds(), 0.1) if deadline else None
        log_path = stage_dir / "stage.log"
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                proc = subprocess.run(
                    cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False, env=_child_env()
                )
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
        seconds = time.monotonic() - t0
        outcome = _outcome_of(start, code, result_file, log_path)
        self.on_event(
            StageEvent(
                kind="finished", stage=start.stage, attempt=start.attempt, outcome=outcome, seconds=seconds
            )
        )
        return outcome


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _outcome_of(start: StartStage, code: int | None, result_file: Path, log_path: Path) -> Outcome:
    if code is None:
        return Outcome(start.stage, start.attempt, "running")
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        kind: OutcomeKind = "infra" if code < 0 else "app"
        return Outcome(
            start.stage,
            start.attempt,
            kind,
            message=f"exited with status {code} and no result: {' | '.join(tail)}",
            reason="NoResult",
        )
    rows = StageRows(
        int(result.get("rows_in", 0)),
        int(result.get("rows_out", 0)),
        int(result.get("rows_rejected", 0)),
        int(result.get("bytes_billed", 0) or 0),
    )
    if code == 0:
        return Outcome(
            start.stage,
            start.attempt,
            "succeeded",
            message=result.get("message", ""),
            rows=rows,
            tables=tuple(result.get("tables", ())),
            report=str(result.get("report") or ""),
        )
    failed: OutcomeKind = "bad_input" if code == EXIT_BAD_INPUT else "app"
    return Outcome(
        start.stage,
        start.attempt,
        failed,
        message=result.get("message", ""),
        reason=result.get("reason", ""),
        rows=rows,
        report=str(result.get("report") or ""),
    )


def _resume_from_failure(fresh: RunStatus, old: RunStatus) -> RunStatus:
    """Keep the stages that succeeded; the failed stage and those after it run again."""
    kept = []
    for new, prev in zip(fresh.stages, old.stages, strict=False):
        kept.append(prev if prev.name == new.name and prev.state == "Succeeded" else new)
    return replace(fresh, stages=tuple(kept) + fresh.stages[len(kept) :])
