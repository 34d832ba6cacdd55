"""Validate: read and type the source, run its Great Expectations suite, set bad rows aside.

Writes, under the run's ``validate/`` folder: ``validated.parquet`` (the rows that passed, for the load
stage), ``rejects.parquet``, ``ge_result.json`` (Great Expectations' own result), ``expectations.json`` (each
expectation: pass/fail, unexpected count and sample), ``data_docs.html`` (GE's own Data Docs page of the
result, when the spec has expectations) and ``summary.txt``;
and the rejects table ``<dataset>.<table>_rejects`` next to the raw table, with the row's file, number,
column, rule, value, message and original text. Nothing is loaded into the raw table here.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam.bus import BusError, BusRefused
from beam.io.csv_source import (
    FILE_COL,
    REJECT_SCHEMA,
    ROW_COL,
    CsvRead,
    CsvSource,
    SourceError,
)
from beam.stages.context import StageContext, StageFailed, StageResult
from beam.stages.notify import ERROR, SUCCESS, FileSummary, publish_outcome
from beam.warehouse import LineageRecord, WarehouseError, open_warehouse

if TYPE_CHECKING:
    from beam.validation.expectations import ValidationOutcome

log = logging.getLogger("dataops.validate")

VALIDATED = "validated.parquet"
EXPECTATIONS = "expectations.json"
DATA_DOCS = "data_docs.html"
EXPORT_DIR = "rejects-export"
REJECTS = "rejects.parquet"
SHOWN_REJECTS = 5


def rejects_table_of(table: str) -> str:
    return f"{table}_rejects"


def run(ctx: StageContext) -> StageResult:
    """Validate, then tell the success or error topic (``spec.validate.notify``) of each file."""
    files: list[FileSummary] = []
    try:
        result = _validate(ctx, files)
    except StageFailed as exc:
        _notify(ctx, ERROR, files or [FileSummary(ctx.run.spec.source.uri)], exc)
        raise
    topic = _notify(ctx, SUCCESS, files, None, result.message)
    if topic:
        result.details["notified"] = topic
    return result


def _notify(
    ctx: StageContext, outcome: str, files: list[FileSummary], failed: StageFailed | None, message: str = ""
) -> str | None:
    """Publish; a message that cannot be published fails the stage, saying which and why."""
    try:
        return publish_outcome(
            ctx, outcome, files, failed.reason if failed else "Validated", str(failed) if failed else message
        )
    except BusError as exc:
        if failed is not None:
            raise StageFailed(
                f"{failed}; and its error message was not published: {exc}",
                bad_input=failed.bad_input,
                reason=failed.reason,
                result=failed.result,
            ) from None
        raise StageFailed(
            f"validation passed but its success message was not published: {exc}",
            bad_input=isinstance(exc, BusRefused),
            reason="NotifyFailed",
        ) from None


def _validate(ctx: StageContext, files: list[FileSummary]) -> StageResult:
    spec = ctx.run.spec
    out_dir = ctx.stage_dir("validate")
    with CsvSource(spec.source, out_dir / "tmp") as source:
        try:
            read = source.read()
        except SourceError as exc:
            raise StageFailed(str(exc), reason="BadInput") from None
        if read.rows_total == 0:
            files = ", ".join(read.files)
            raise StageFailed(f"{files}: the header is there but there are no data rows", reason="NoRows")
        typed = read.typed
        expectations = [(e.type, dict(e.kwargs)) for e in spec.validate_.expectations]
        outcome = _run_expectations(typed, expectations)
        rejects = _combine_rejects(source, read, typed, outcome)
    failed_pos = sorted({f.row_number for f in outcome.row_failures}) if outcome else []
    keep = _without_positions(typed, failed_pos)

    bad_rows = _count_bad_rows(rejects)
    files.extend(_file_summaries(read, rejects))
    percent = 100.0 * bad_rows / read.rows_total
    threshold = spec.validate_.rejected_threshold()
    _write_artifacts(ctx, out_dir, keep, rejects, outcome, read, percent)
    billed = _write_rejects_table(ctx, rejects)

    result = StageResult(
        stage="validate",
        rows_in=read.rows_total,
        rows_out=keep.num_rows,
        rows_rejected=bad_rows,
        bytes_billed=billed,
        tables=[rejects_table_of(spec.load.table)],
        artifacts={
            "validated": str(out_dir / VALIDATED),
            "rejects": str(out_dir / REJECTS),
            "report": str(out_dir / "summary.txt"),
            "ge_result": str(out_dir / "ge_result.json"),
        },
        details={"files": list(read.files), "rejectedPercent": round(percent, 3)},
    )
    if outcome is not None and outcome.table_failures:
        names = "; ".join(f"{t.type} (observed {t.observed_value})" for t in outcome.table_failures)
        raise StageFailed(
            f"table-level expectations failed: {names}", reason="ExpectationFailed", result=result
        )
    if bad_rows and percent > threshold:
        raise StageFailed(
            _rejects_message(
                rejects, bad_rows, read.rows_total, percent, threshold, spec.validate_.on_failure
            ),
            reason="RowsRejected",
            result=result,
        )
    result.message = f"{keep.num_rows} of {read.rows_total} rows valid" + (
        f", {bad_rows} rejected ({percent:.2f}%) into {rejects_table_of(spec.load.table)}" if bad_rows else ""
    )
    return result


def _run_expectations(
    typed: pa.Table, expectations: list[tuple[str, dict[str, object]]]
) -> ValidationOutcome | None:
    if not expectations:
        return None
    # Great Expectations takes seconds to import: only a run that declares expectations pays for it.
    from beam.validation.expectations import ExpectationConfigError, validate_frame

    frame = typed.drop_columns([ROW_COL, FILE_COL]).to_pandas()
    for name, dtype in frame.dtypes.items():
        if str(dtype) == "object" and pa.types.is_decimal(typed.schema.field(name).type):
            frame[name] = frame[name].astype("float64")
    try:
        return validate_frame(frame, expectations)
    except ExpectationConfigError as exc:
        raise StageFailed(str(exc), reason="InvalidExpectation") from None


def _combine_rejects(
    source: CsvSource, read: CsvRead, typed: pa.Table, outcome: ValidationOutcome | None
) -> pa.Table:
    if outcome is None or not outcome.row_failures:
        return read.rejects
    pos = [f.row_number for f in outcome.row_failures]
    files = typed.column(FILE_COL).take(pos).to_pylist()
    rows = typed.column(ROW_COL).take(pos).to_pylist()
    texts = _original_texts(source, typed, pos, files, rows)
    extra = pa.table(
        {
            "file": files,
            "row_number": rows,
            "column_name": [f.column for f in outcome.row_failures],
            "rule": [f.rule for f in outcome.row_failures],
            "value": [f.value for f in outcome.row_failures],
            "message": [f.message for f in outcome.row_failures],
            "line_text": texts,
        },
        schema=REJECT_SCHEMA,
    )
    both = pa.concat_tables([read.rejects, extra])
    return both.sort_by([("file", "ascending"), ("row_number", "ascending")])


def _original_texts(
    source: CsvSource, typed: pa.Table, pos: list[int], files: list[str], rows: list[int]
) -> list[str]:
    """The rows' text as read from their files (asked of the still open source)."""
    rebuilt = _row_texts(typed, pos)
    texts: dict[tuple[str, int], str] = {}
    for path in sorted(set(files)):
        wanted = sorted({r for f, r in zip(files, rows, strict=True) if f == path})
        found = source.original_lines(path, wanted)
        texts.update({(path, r): t for r, t in found.items()})
    return [texts.get((f, r), fallback) for f, r, fallback in zip(files, rows, rebuilt, strict=True)]


def _row_texts(typed: pa.Table, positions: list[int]) -> list[str]:
    """The row as CSV text, rebuilt from its values (for rows that passed typing)."""
    import csv
    import io

    cols = [c for c in typed.column_names if c not in (ROW_COL, FILE_COL)]
    picked = typed.select(cols).take(positions).to_pylist()
    out = []
    for row in picked:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(["" if row[c] is None else _text(row[c]) for c in cols])
        out.append(buf.getvalue())
    return out


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[no-any-return]
    return str(value)


def _without_positions(typed: pa.Table, positions: list[int]) -> pa.Table:
    if positions:
        mask = pa.array([True] * typed.num_rows)
        drop = pc.is_in(pa.array(range(typed.num_rows)), value_set=pa.array(positions))
        typed = typed.filter(pc.and_(mask, pc.invert(drop)))
    return typed.drop_columns([ROW_COL, FILE_COL])


def _file_summaries(read: CsvRead, rejects: pa.Table) -> list[FileSummary]:
    """Per file: rows read, kept and rejected, and its first rejected rows."""
    rows = rejects.to_pylist()
    out = []
    for n, path in enumerate(read.files):
        mine = [r for r in rows if r["file"] == path]
        bad = len({r["row_number"] for r in mine})
        seen = read.file_rows[n] if n < len(read.file_rows) else 0
        out.append(
            FileSummary(
                file=path,
                generation=read.generations[n] if n < len(read.generations) else None,
                rows_in=seen,
                rows_out=seen - bad,
                rows_rejected=bad,
                rejects=[
                    {
                        "row": r["row_number"],
                        "column": r["column_name"],
                        "rule": r["rule"],
                        "message": r["message"],
                    }
                    for r in mine[:SHOWN_REJECTS]
                ],
            )
        )
    return out


def _count_bad_rows(rejects: pa.Table) -> int:
    if rejects.num_rows == 0:
        return 0
    return rejects.select(["file", "row_number"]).group_by(["file", "row_number"]).aggregate([]).num_rows


def _rejects_message(
    rejects: pa.Table, bad: int, total: int, percent: float, threshold: float, mode: str
) -> str:
    shown = []
    for r in rejects.slice(0, SHOWN_REJECTS).to_pylist():
        where = f"{Path(r['file']).name} row {r['row_number']}" + (
            f" column {r['column_name']}" if r["column_name"] else ""
        )
        shown.append(f"{where}: {r['rule']}: {r['message']}")
    more = f" (and {rejects.num_rows - SHOWN_REJECTS} more)" if rejects.num_rows > SHOWN_REJECTS else ""
    limit = (
        "onFailure: fail rejects any bad row"
        if mode == "fail" and threshold == 0
        else f"more than maxRejectedPercent={threshold:g}%"
    )
    return f"{bad} of {total} rows rejected ({percent:.2f}%), {limit}: " + "; ".join(shown) + more


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_artifacts(
    ctx: StageContext,
    out_dir: Path,
    keep: pa.Table,
    rejects: pa.Table,
    outcome: ValidationOutcome | None,
    read: CsvRead,
    percent: float,
) -> None:
    _atomic_parquet(keep, out_dir / VALIDATED)
    _atomic_parquet(rejects, out_dir / REJECTS)
    _write_rejects_export(out_dir, rejects, read)
    ge = (
        outcome.ge_result
        if outcome
        else {"success": True, "results": [], "statistics": {"evaluated_expectations": 0}}
    )
    _atomic_text(json.dumps(ge, indent=2, default=str), out_dir / "ge_result.json")
    _write_expectations(out_dir, outcome)
    lines = [
        f"run {ctx.name}: {read.rows_total} rows read from {len(read.files)} file(s)",
        f"rejected rows: {_count_bad_rows(rejects)} ({percent:.2f}%)",
    ]
    by_rule = (
        rejects.group_by("rule").aggregate([("row_number", "count")]).to_pylist() if rejects.num_rows else []
    )
    lines += [
        f"  {r['rule']}: {r['row_number_count']}"
        for r in sorted(by_rule, key=lambda r: -r["row_number_count"])
    ]
    if outcome is not None:
        lines += ["", outcome.summary()]
    _atomic_text("\n".join(lines) + "\n", out_dir / "summary.txt")


def _write_expectations(out_dir: Path, outcome: ValidationOutcome | None) -> None:
    """Each expectation's verdict in a plain shape (the run report reads it), and GE's Data Docs page."""
    doc = {
        "success": outcome.success if outcome else True,
        "expectations": [asdict(e) for e in outcome.expectations] if outcome else [],
    }
    _atomic_text(json.dumps(doc, indent=2, default=str), out_dir / EXPECTATIONS)
    (out_dir / DATA_DOCS).unlink(missing_ok=True)
    if outcome is None:
        return
    from beam.validation.data_docs import render_data_docs

    try:
        page = render_data_docs(outcome.ge_result)
    except Exception as exc:  # GE's renderer is a nicety: its failure never fails the validation
        log.warning("Great Expectations could not render its Data Docs page: %s: %s", type(exc).__name__, exc)
        return
    _atomic_text(page, out_dir / DATA_DOCS)


def _write_rejects_export(out_dir: Path, rejects: pa.Table, read: CsvRead) -> None:
    """Per source file, its header and the rejected rows as read: what a person fixes and replays
    with ``dataops replay-rejects``; the reasons go beside it."""
    export = out_dir / EXPORT_DIR
    export.mkdir(exist_ok=True)
    for old in export.glob("*"):
        old.unlink()
    rows = rejects.to_pylist()
    for n, path in enumerate(read.files):
        mine = {
            r["row_number"]: r["line_text"] for r in rows if r["file"] == path and r["line_text"] is not None
        }
        if not mine:
            continue
        header = read.headers[n] if n < len(read.headers) else ""
        lines = ([header] if header else []) + [mine[row] for row in sorted(mine)]
        _atomic_text("\n".join(lines) + "\n", export / f"rejects-{n:03d}.csv")
    reasons = [
        f"{Path(r['file']).name},{r['row_number']},{r['column_name'] or ''},{r['rule']},{_quote(r['message'])}"
        for r in rows
    ]
    _atomic_text(
        "file,row_number,column_name,rule,message\n" + "".join(line + "\n" for line in reasons),
        out_dir / "rejects-reasons.csv",
    )


def _quote(text: str | None) -> str:
    value = (text or "").replace('"', '""')
    return f'"{value}"'


def _write_rejects_table(ctx: StageContext, rejects: pa.Table) -> int:
    """This run's rows of the rejects table; returns the bytes the warehouse billed for it."""
    table = rejects_table_of(ctx.run.spec.load.table)
    n = rejects.num_rows
    data = rejects.append_column("run", pa.array([ctx.name] * n, pa.string())).append_column(
        "rejected_at", pa.array([ctx.started_at] * n, pa.string())
    )
    lineage = LineageRecord(
        table=table,
        run=ctx.name,
        namespace=ctx.run.metadata.namespace,
        stage="validate",
        source_uri=ctx.run.spec.source.uri,
        generation=ctx.run.metadata.generation,
        rows=n,
        written_at=ctx.started_at,
    )
    try:
        warehouse = open_warehouse(ctx.workdir, choice=ctx.run.spec.warehouse)
        warehouse.replace_run_rows(table, data, lineage)
    except WarehouseError as exc:
        raise StageFailed(str(exc), reason="WriteRefused", bad_input=not exc.retryable) from None
    return int(warehouse.bytes_billed)
