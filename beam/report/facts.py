"""What a run left behind in its workdir, read into plain values for the report.

A run's folder (``<workdir>/runs/<namespace>/<name>``) holds ``status.json`` (the local executor's copy
of the CR status; absent in a pod), each stage's ``result.json``, ``validate/expectations.json`` and
``validate/rejects.parquet``; the KPI tables are read from the warehouse.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from beam.warehouse import open_warehouse
from beam.warehouse.duckdb_warehouse import quote_ident, quote_table
from controller.spec import PipelineRun
from controller.stages import stages_of

MAX_KPI_ROWS = 2_000
"""Rows of a KPI table drawn at most (the first, in groupBy order); the page says when it cut."""
SAMPLE_REJECTS = 5
"""Rejected rows shown per reason."""


class ReportInputError(Exception):
    """A run folder the report cannot read: the message names the file and what is wrong."""


@dataclass(frozen=True)
class StageFact:
    name: str
    state: str
    attempt: int = 0
    start: datetime | None = None
    end: datetime | None = None
    seconds: float | None = None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    message: str = ""
    reason: str = ""
    log: Path | None = None  # the stage process's log, when it ran here


@dataclass(frozen=True)
class ExpectationFact:
    type: str
    kwargs: dict[str, Any]
    success: bool
    unexpected_count: int
    unexpected_percent: float | None
    sample: list[str]
    observed_value: str | None
    error: str | None


@dataclass(frozen=True)
class RejectReason:
    rule: str
    column: str
    rows: int
    samples: list[dict[str, Any]]  # row_number, value, message, line_text


@dataclass(frozen=True)
class KpiMetric:
    name: str
    agg: str


@dataclass(frozen=True)
class KpiTable:
    name: str
    table: str
    group_by: list[str]
    metrics: list[KpiMetric]
    rows: pa.Table | None  # None: the table is not in the warehouse (the stage did not run)
    total_rows: int = 0
    schema: pa.Schema | None = None  # every column of the table, as the warehouse holds it

    @property
    def truncated(self) -> bool:
        return self.rows is not None and self.total_rows > self.rows.num_rows


@dataclass(frozen=True)
class RunFacts:
    name: str
    namespace: str
    phase: str
    message: str
    source_uri: str
    start: datetime | None
    end: datetime | None
    stages: list[StageFact]
    expectations: list[ExpectationFact] | None  # None: the validate stage left no verdict
    validation_success: bool | None
    rejects: list[RejectReason]
    rejected_rows: int
    kpis: list[KpiTable]
    data_docs: Path | None
    on_failure: str = "fail"
    files: dict[str, Path] = field(default_factory=dict)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ReportInputError(f"{path}: not readable as JSON ({exc})") from None


def _ts(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None


def load_run(run_dir: Path) -> PipelineRun:
    """The run as it ran, from the ``run.json`` the local executor keeps beside its status."""
    doc = _read_json(run_dir / "run.json")
    if doc is None:
        raise ReportInputError(f"{run_dir / 'run.json'}: missing; is {run_dir} the folder of a run?")
    try:
        return PipelineRun.model_validate(doc)
    except ValueError as exc:
        raise ReportInputError(f"{run_dir / 'run.json'}: not a PipelineRun ({exc})") from None


def _stage_facts(run: PipelineRun, run_dir: Path, status: dict[str, Any] | None) -> list[StageFact]:
    recorded = {s["name"]: s for s in (status or {}).get("stages", [])}
    facts = []
    for name in stages_of(run.spec):
        s = recorded.get(name)
        result = _read_json(run_dir / name / "result.json") or {}
        timing = result.get("timing") or {}
        start = _ts((s or {}).get("startTime")) or _ts(timing.get("start"))
        end = _ts((s or {}).get("completionTime")) or _ts(timing.get("end"))
        state = (s or {}).get("state") or result.get("state") or "Pending"
        if state == "Running" and result.get("state"):
            state = result["state"]  # the report is written by the stage that just finished
        facts.append(
            StageFact(
                name=name,
                state=state,
                attempt=int((s or {}).get("attempt", 1 if result else 0)),
                start=start,
                end=end,
                seconds=round((end - start).total_seconds(), 3) if start and end else None,
                rows_in=int(result.get("rows_in", (s or {}).get("rowsIn", 0)) or 0),
                rows_out=int(result.get("rows_out", (s or {}).get("rowsOut", 0)) or 0),
                rows_rejected=int(result.get("rows_rejected", (s or {}).get("rowsRejected", 0)) or 0),
                message=str(result.get("message") or (s or {}).get("message") or ""),
                reason=str(result.get("reason") or (s or {}).get("reason") or ""),
                log=run_dir / name / "stage.log" if (run_dir / name / "stage.log").exists() else None,
            )
        )
    return facts


def _expectations(run_dir: Path) -> tuple[list[ExpectationFact] | None, bool | None]:
    doc = _read_json(run_dir / "validate" / "expectations.json")
    if doc is None:
        return None, None
    keys = ExpectationFact.__dataclass_fields__
    try:
        found = [ExpectationFact(**{k: e.get(k) for k in keys}) for e in doc.get("expectations", [])]
    except (AttributeError, TypeError) as exc:
        raise ReportInputError(
            f"{run_dir / 'validate' / 'expectations.json'}: unexpected shape ({exc})"
        ) from None
    return found, bool(doc.get("success"))


def _rejects(run_dir: Path) -> tuple[list[RejectReason], int]:
    """Rejected rows per (rule, column) with the first few of each, and the rows rejected at all; asked
    of DuckDB, so a run with a million rejects reads no more of them than it shows."""
    path = run_dir / "validate" / "rejects.parquet"
    if not path.exists():
        return [], 0
    con = duckdb.connect()
    try:
        con.register("rejects", con.read_parquet(str(path)))
        distinct = con.execute(
            "SELECT count(*) FROM (SELECT DISTINCT file, row_number FROM rejects)"
        ).fetchone()
        found = con.execute(
            "SELECT rule, coalesce(column_name, '') AS col, count(*) OVER w AS n, file, row_number, value,"
            " message, line_text FROM rejects WINDOW w AS (PARTITION BY rule, coalesce(column_name, ''))"
            " QUALIFY row_number() OVER (w ORDER BY file, row_number) <= ?"
            " ORDER BY n DESC, rule, col, file, row_number",
            [SAMPLE_REJECTS],
        ).fetchall()
    except duckdb.Error as exc:
        raise ReportInputError(f"{path}: not readable as the rejects of a run ({exc})") from None
    finally:
        con.close()
    reasons: dict[tuple[str, str], RejectReason] = {}
    for rule, column, n, file, row, value, message, line in found:
        reason = reasons.setdefault((rule, column), RejectReason(rule, column, int(n), []))
        reason.samples.append(
            {"file": file, "row_number": row, "value": value, "message": message, "line_text": line}
        )
    return list(reasons.values()), int(distinct[0]) if distinct else 0


def _kpis(run: PipelineRun, workdir: Path) -> list[KpiTable]:
    if not run.spec.aggregate:
        return []
    warehouse = open_warehouse(workdir)
    out = []
    for i, agg in enumerate(run.spec.aggregate):
        table = agg.output.table
        group_by = list(agg.group_by)
        metrics = [KpiMetric(m.name, m.agg) for m in agg.metrics]
        rows: pa.Table | None = None
        schema: pa.Schema | None = None
        total = 0
        if warehouse.path.exists() and warehouse.exists(table):
            total = warehouse.row_count(table)
            schema = warehouse.schema(table)
            columns = group_by + [m.name for m in metrics]
            order = ", ".join(map(quote_ident, group_by)) or "1"
            select = ", ".join(map(quote_ident, columns))
            rows = warehouse.query_arrow(
                f"SELECT {select} FROM {quote_table(table)} ORDER BY {order} LIMIT {MAX_KPI_ROWS}"
            )
        out.append(KpiTable(agg.name or f"aggregate-{i}", table, group_by, metrics, rows, total, schema))
    return out


def collect(run: PipelineRun, workdir: Path) -> RunFacts:
    """Everything the report shows of ``run``, from its folder under ``workdir`` and the warehouse."""
    run_dir = workdir / "runs" / run.metadata.namespace / run.metadata.name
    status = _read_json(run_dir / "status.json")
    stages = _stage_facts(run, run_dir, status)
    expectations, success = _expectations(run_dir)
    rejects, rejected_rows = _rejects(run_dir)
    phase = (status or {}).get("phase") or _phase_of(stages)
    message = (status or {}).get("message") or next((s.message for s in stages if s.state == "Failed"), "")
    docs = run_dir / "validate" / "data_docs.html"
    return RunFacts(
        name=run.metadata.name,
        namespace=run.metadata.namespace,
        phase=phase,
        message=message,
        source_uri=run.spec.source.uri,
        start=_ts((status or {}).get("startTime")) or next((s.start for s in stages if s.start), None),
        end=_ts((status or {}).get("completionTime"))
        or next((s.end for s in reversed(stages) if s.end), None),
        stages=stages,
        expectations=expectations,
        validation_success=success,
        rejects=rejects,
        rejected_rows=rejected_rows,
        kpis=_kpis(run, workdir),
        data_docs=docs if docs.exists() else None,
        on_failure=run.spec.validate_.on_failure,
        files={
            name: run_dir / rel
            for name, rel in (
                ("status", "status.json"),
                ("ge_result", "validate/ge_result.json"),
                ("summary", "validate/summary.txt"),
                ("rejects_reasons", "validate/rejects-reasons.csv"),
            )
            if (run_dir / rel).exists()
        },
    )


def _phase_of(stages: list[StageFact]) -> str:
    """The run's phase as its stage results tell it (in a pod, where there is no status.json)."""
    if any(s.state == "Failed" for s in stages):
        return "Failed"
    if stages and all(s.state == "Succeeded" for s in stages):
        return "Succeeded"
    return "Running"
