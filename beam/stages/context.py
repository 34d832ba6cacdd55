"""What every stage receives and returns. The same in a pod and on a laptop.

A stage is run as ``python -m beam.stages <stage> --spec FILE --workdir DIR [--started-at ISO]``;
it writes its :class:`StageResult` as JSON to ``--result-file`` (in a pod: the termination log)
and exits 0 (succeeded), 65 (bad input: do not retry) or 1 (failed: may be retried).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from controller.spec import PipelineRun

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 65


class StageFailed(Exception):
    """The stage cannot finish; ``bad_input`` says retrying will not help (the data or spec is wrong)."""

    def __init__(
        self,
        message: str,
        bad_input: bool = True,
        reason: str = "BadInput",
        result: StageResult | None = None,
    ) -> None:
        super().__init__(message)
        self.bad_input = bad_input
        self.reason = reason
        self.result = result  # what the stage had counted when it gave up (rows read, rejected)


@dataclass(frozen=True)
class StageContext:
    run: PipelineRun
    workdir: Path
    started_at: str  # the run's start time (ISO 8601, UTC): one value for the whole run
    beam_args: list[str] = field(default_factory=list)  # extra pipeline options (--runner, ...)

    @property
    def name(self) -> str:
        return self.run.metadata.name

    @property
    def run_dir(self) -> Path:
        """Files of this run: validated rows, rejects, reports. Named by namespace and run."""
        return self.workdir / "runs" / self.run.metadata.namespace / self.run.metadata.name

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class StageResult:
    stage: str
    state: str = "Succeeded"  # Succeeded | Failed
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    bytes_billed: int = 0  # the stage's warehouse jobs, summed (BigQuery bills queries; loads are free)
    message: str = ""
    reason: str = ""
    tables: list[str] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, str] = field(default_factory=dict)  # start, end: ISO 8601 UTC
    report: str = ""  # the run report's location, set by the run's last stage (or a failed one)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> StageResult:
        return cls(**json.loads(text))


# A user's expression meeting a value it cannot handle (CAST('abc' AS INT64), an overflow): bad input,
# not a crash of ours. Retrying would fail the same way.
EXPRESSION_DATA_ERRORS: tuple[type[Exception], ...] = (duckdb.ConversionException, duckdb.OutOfRangeException)


def expression_failed(exc: Exception, named: dict[str, str]) -> StageFailed:
    """The failure of an expression on the data, naming its spec path when the engine's message shows
    which output column it computed (``named``: quoted output column -> spec path)."""
    text = str(exc)
    first = text.split("\n")[0].split(" [while running")[0]
    where = next((path for column, path in named.items() if f"AS {column}" in text), None)
    prefix = f"{where}: " if where else "an expression of the spec: "
    return StageFailed(
        f"{prefix}failed on the data: {first}; SAFE_CAST and SAFE_DIVIDE give NULL"
        " instead of failing the run",
        reason="ExpressionFailed",
    )
