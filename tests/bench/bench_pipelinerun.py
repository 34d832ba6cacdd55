"""Benchmark ``dataops run`` on the inventory example at a million rows against one DuckDB statement.

Run it from the repository root with the project's virtualenv (``make bench`` does exactly this)::

    .venv/bin/python tests/bench/bench_pipelinerun.py                   # 1,000,000 rows, seed 1
    .venv/bin/python tests/bench/bench_pipelinerun.py --rows 200000     # quicker
    .venv/bin/python tests/bench/bench_pipelinerun.py --reference-only  # no dataops run, SQL only
    .venv/bin/python tests/bench/bench_pipelinerun.py --keep            # keep the temp folder, print it

What it does, in a fresh temporary folder:

1. writes the CSV with ``examples/inventory/generate.py`` (``--rows``, ``--seed``; the generator's default
   0.3% bad rows);
2. runs the *reference*: one DuckDB SQL statement, in this process, doing the work of
   ``examples/inventory/pipelinerun.yaml`` (typing, required columns, expectations, standardize, dedupe,
   derive, both aggregates), best of ``--repeat`` runs (the statement is :data:`REFERENCE_SQL`; its
   semantics are spelled out there);
3. runs ``.venv/bin/dataops run <copy of the spec reading that CSV> --workdir <tmp>/work --output json``,
   timing the whole command, and reads each stage's ``durationSeconds`` and row counts from its summary;
4. prints stage, seconds and rows/s, the reference's seconds, and the ratio whole run / reference;
5. checks that the run's two KPI tables (read from its warehouse) equal the reference's: counts exactly,
   sums, maxima and averages within a relative 1e-6 (and half a cent), and that the validate stage rejected
   and the transform stage kept as many rows as the reference did.

The exit code is 0 when the run succeeded and agrees with the reference, 1 otherwise (a failed command
prints the tail of its stderr). This file is not a test module: pytest does not collect it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import duckdb
import pyarrow as pa
import typer
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "inventory" / "pipelinerun.yaml"
GENERATOR = ROOT / "examples" / "inventory" / "generate.py"
DATAOPS = ROOT / ".venv" / "bin" / "dataops"
STDERR_TAIL_LINES = 30
REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 0.005

# The spec's work as one statement. $path is the CSV. Semantics, step by step:
#   read       every column as VARCHAR; the cells "", "NULL" and "N/A" (exactly) are NULL.
#   typing     a non-NULL cell that TRY_CAST cannot turn into the declared type rejects the row
#              (INT64 -> BIGINT, NUMERIC -> DECIMAL(38, 9), DATE, TIMESTAMP, BOOL).
#   required   a NULL in resource_id, resource_type, resource_group, monthly_cost or updated_at rejects it.
#   expect     on the typed, not yet standardized values; NULLs pass (as in Great Expectations):
#              0 <= monthly_cost <= 100000, 0 <= cpu_cores <= 512, resource_id matches ^res-[0-9]{6}$.
#   standardize  trim, then lower case where asked, then '' -> NULL (emptyAsNull), then nullValues
#              ('unknown' location -> NULL), then fillNull (NULL owner -> 'unassigned').
#   dedupe     per resource_id the row with the largest updated_at (the data has no ties).
#   derive     cost_per_core = round(monthly_cost / cpu_cores, 2), NULL when cpu_cores is 0 or NULL;
#              cost_band high >= 1000 > medium >= 100 > low; age_days = days from created_date to 2026-01-01.
#   aggregate  GROUP BY the spec's groupBy (a NULL location is a group of its own); IF(is_active, 1, 0)
#              counts a NULL is_active as 0.
# The typed values are read as VARCHAR and cast with TRY_CAST rather than typed in read_csv with
# ignore_errors: DuckDB pushes projections into the CSV reader, so a column the query never uses
# (created_date is only used by age_days) would not be cast, and its bad rows would silently stay.
REFERENCE_SQL = """
WITH raw AS (
    SELECT * FROM read_csv($path, header = true, delim = ',', quote = '"', escape = '"', auto_detect = false,
        nullstr = ['', 'NULL', 'N/A'],
        columns = {'resource_id': 'VARCHAR', 'resource_name': 'VARCHAR', 'resource_type': 'VARCHAR',
                   'resource_group': 'VARCHAR', 'location': 'VARCHAR', 'owner': 'VARCHAR',
                   'cpu_cores': 'VARCHAR', 'monthly_cost': 'VARCHAR', 'created_date': 'VARCHAR',
                   'updated_at': 'VARCHAR', 'is_active': 'VARCHAR'})
),
typed AS MATERIALIZED (
    SELECT resource_id, resource_name, resource_type, resource_group, location, owner,
        TRY_CAST(cpu_cores AS BIGINT) AS cpu_cores,
        TRY_CAST(monthly_cost AS DECIMAL(38, 9)) AS monthly_cost,
        TRY_CAST(created_date AS DATE) AS created_date,
        TRY_CAST(updated_at AS TIMESTAMP) AS updated_at,
        TRY_CAST(is_active AS BOOLEAN) AS is_active,
        (cpu_cores IS NULL OR TRY_CAST(cpu_cores AS BIGINT) IS NOT NULL)
            AND (monthly_cost IS NULL OR TRY_CAST(monthly_cost AS DECIMAL(38, 9)) IS NOT NULL)
            AND (created_date IS NULL OR TRY_CAST(created_date AS DATE) IS NOT NULL)
            AND (updated_at IS NULL OR TRY_CAST(updated_at AS TIMESTAMP) IS NOT NULL)
            AND (is_active IS NULL OR TRY_CAST(is_active AS BOOLEAN) IS NOT NULL) AS typed_ok
    FROM raw
),
valid AS MATERIALIZED (
    SELECT * EXCLUDE (typed_ok) FROM typed
    WHERE typed_ok
        AND resource_id IS NOT NULL AND resource_type IS NOT NULL AND resource_group IS NOT NULL
        AND monthly_cost IS NOT NULL AND updated_at IS NOT NULL
        AND (monthly_cost IS NULL OR monthly_cost BETWEEN 0 AND 100000)
        AND (cpu_cores IS NULL OR cpu_cores BETWEEN 0 AND 512)
        AND (resource_id IS NULL OR regexp_full_match(resource_id, '^res-[0-9]{6}$'))
),
standardized AS (
    SELECT resource_id,
        NULLIF(trim(resource_name), '') AS resource_name,
        NULLIF(lower(trim(resource_type)), '') AS resource_type,
        NULLIF(lower(trim(resource_group)), '') AS resource_group,
        CASE WHEN lower(trim(location)) IN ('', 'unknown') THEN NULL ELSE lower(trim(location)) END AS location,
        coalesce(NULLIF(lower(trim(owner)), ''), 'unassigned') AS owner,
        cpu_cores, monthly_cost, created_date, updated_at, is_active
    FROM valid
),
latest AS (
    SELECT * FROM standardized
    QUALIFY row_number() OVER (PARTITION BY resource_id ORDER BY updated_at DESC) = 1
),
resources AS MATERIALIZED (
    SELECT *,
        round(CASE WHEN cpu_cores = 0 THEN NULL ELSE monthly_cost / cpu_cores END, 2) AS cost_per_core,
        CASE WHEN monthly_cost >= 1000 THEN 'high' WHEN monthly_cost >= 100 THEN 'medium' ELSE 'low' END
            AS cost_band,
        date_diff('day', created_date, DATE '2026-01-01') AS age_days
    FROM latest
),
cost_by_group AS (
    SELECT resource_group, location,
        count(*) AS resources,
        sum(monthly_cost) AS total_monthly_cost,
        avg(monthly_cost) AS avg_monthly_cost,
        count(DISTINCT resource_type) AS resource_types
    FROM resources GROUP BY resource_group, location
),
capacity_by_type AS (
    SELECT resource_type, cost_band,
        count(*) AS resources,
        sum(cpu_cores) AS total_cores,
        max(monthly_cost) AS max_monthly_cost,
        sum(CASE WHEN is_active THEN 1 ELSE 0 END) AS active_resources
    FROM resources GROUP BY resource_type, cost_band
)
SELECT
    (SELECT count(*) FROM typed) AS rows_in,
    (SELECT count(*) FROM valid) AS rows_valid,
    (SELECT count(*) FROM resources) AS rows_out,
    (SELECT list(c) FROM cost_by_group AS c) AS cost_by_group,
    (SELECT list(c) FROM capacity_by_type AS c) AS capacity_by_type
"""

Row = dict[str, Any]

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 110)  # a log file: no truncation
app = typer.Typer(add_completion=False, help="Benchmark dataops run against one DuckDB statement.")


@dataclass
class Reference:
    seconds: list[float]
    rows_in: int
    rows_valid: int
    rows_out: int
    kpis: dict[str, list[Row]]  # aggregate output table -> rows

    @property
    def best(self) -> float:
        return min(self.seconds)


@dataclass
class RunResult:
    seconds: float
    returncode: int
    summary: dict[str, Any] | None
    stderr: str
    problem: str = ""
    kpis: dict[str, list[Row]] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregate:
    """One of the spec's aggregates: its output table, group columns and metrics."""

    table: str
    keys: tuple[str, ...]
    metrics: tuple[str, ...]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("inventory_generate", GENERATOR)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the generator at {GENERATOR}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


def spec_aggregates(spec: dict[str, Any]) -> list[Aggregate]:
    return [
        Aggregate(
            table=agg["output"]["table"] if isinstance(agg["output"], dict) else agg["output"],
            keys=tuple(agg.get("groupBy", [])),
            metrics=tuple(m["name"] for m in agg["metrics"]),
        )
        for agg in spec["spec"].get("aggregate", [])
    ]


def run_reference(csv_path: Path, aggregates: list[Aggregate], repeat: int) -> Reference:
    """Run :data:`REFERENCE_SQL` ``repeat`` times in one in-memory DuckDB; keep every time, the last result."""
    con = duckdb.connect()
    seconds: list[float] = []
    row: tuple[Any, ...] | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        row = con.execute(REFERENCE_SQL, {"path": str(csv_path)}).fetchone()
        seconds.append(time.perf_counter() - started)
    con.close()
    assert row is not None
    rows_in, rows_valid, rows_out, cost_by_group, capacity_by_type = row
    by_name = {"cost_by_group": cost_by_group or [], "capacity_by_type": capacity_by_type or []}
    kpis = {agg.table: by_name[agg.table.split(".")[1]] for agg in aggregates}
    return Reference(seconds=seconds, rows_in=rows_in, rows_valid=rows_valid, rows_out=rows_out, kpis=kpis)


def write_spec_copy(spec: dict[str, Any], csv_path: Path, folder: Path) -> Path:
    copy = deepcopy(spec)
    copy["spec"]["source"]["uri"] = str(csv_path)
    path = folder / "pipelinerun.yaml"
    path.write_text(yaml.safe_dump(copy, sort_keys=False), encoding="utf-8")
    return path


def run_dataops(dataops: Path, spec_path: Path, workdir: Path) -> RunResult:
    """Run the whole ``dataops run`` command, timed from outside; parse its JSON summary."""
    command = [str(dataops), "run", str(spec_path), "--workdir", str(workdir), "--output", "json"]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    except OSError as exc:
        return RunResult(time.perf_counter() - started, -1, None, "", f"cannot start {dataops}: {exc}")
    seconds = time.perf_counter() - started
    try:
        summary = json.loads(done.stdout)
    except json.JSONDecodeError:
        summary = None
    result = RunResult(seconds, done.returncode, summary if isinstance(summary, dict) else None, done.stderr)
    if result.summary is None:
        result.problem = f"`{' '.join(command)}` exited {done.returncode} without a JSON summary on stdout"
    elif done.returncode != 0 or result.summary.get("phase") != "Succeeded":
        result.problem = (
            f"`{' '.join(command)}` exited {done.returncode}, phase {result.summary.get('phase')!r}:"
            f" {result.summary.get('reason', '')} {result.summary.get('message', '')}".rstrip()
        )
    return result


def find_warehouse(summary: dict[str, Any], workdir: Path, table: str) -> Path | None:
    """The DuckDB file holding ``table``: the summary's ``warehouse``, else any ``*.duckdb`` in the workdir."""
    named = [Path(summary["warehouse"])] if summary.get("warehouse") else []
    schema, name = table.split(".")
    for path in [*named, *sorted(workdir.rglob("*.duckdb"))]:
        if not path.is_file():
            continue
        con = duckdb.connect(str(path), read_only=True)
        try:
            found = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [schema, name],
            ).fetchone()
        finally:
            con.close()
        if found and found[0]:
            return path
    return None


def read_run_kpis(result: RunResult, workdir: Path, aggregates: list[Aggregate]) -> None:
    assert result.summary is not None
    for agg in aggregates:
        warehouse = find_warehouse(result.summary, workdir, agg.table)
        if warehouse is None:
            result.problem = f"the run reported success but no DuckDB file under {workdir} has {agg.table}"
            return
        schema, name = agg.table.split(".")
        con = duckdb.connect(str(warehouse), read_only=True)
        try:
            cursor = con.execute(f'SELECT * FROM "{schema}"."{name}"')
            columns = [d[0] for d in cursor.description]
            result.kpis[agg.table] = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
        finally:
            con.close()


def same_value(ours: Any, theirs: Any) -> bool:
    if ours is None or theirs is None:
        return ours is None and theirs is None
    if isinstance(ours, int | str | bool) and isinstance(theirs, int | str | bool):
        return bool(ours == theirs)
    return math.isclose(float(ours), float(theirs), rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE)


def compare_kpis(reference: list[Row], run: list[Row], agg: Aggregate) -> list[str]:
    """Differences between two versions of one KPI table, keyed by its group columns."""
    missing_columns = [c for c in (*agg.keys, *agg.metrics) if run and c not in run[0]]
    if missing_columns:
        return [f"{agg.table}: the run's table has no column {', '.join(missing_columns)}"]
    ref_rows = {tuple(r[k] for k in agg.keys): r for r in reference}
    run_rows = {tuple(r[k] for k in agg.keys): r for r in run}
    problems = [
        f"{agg.table}: group {key} only in the reference" for key in ref_rows.keys() - run_rows.keys()
    ]
    problems += [f"{agg.table}: group {key} only in the run" for key in run_rows.keys() - ref_rows.keys()]
    for key in ref_rows.keys() & run_rows.keys():
        for metric in agg.metrics:
            ours, theirs = ref_rows[key][metric], run_rows[key][metric]
            if not same_value(ours, theirs):
                problems.append(f"{agg.table}: group {key} {metric}: reference {ours}, run {theirs}")
    return sorted(problems)


def stage_table(result: RunResult, reference: Reference) -> Table:
    table = Table(title="dataops run, stage by stage", title_justify="left")
    for column in ("stage", "state", "rows in", "rows out", "rejected", "seconds", "rows/s"):
        table.add_column(column, justify="left" if column in ("stage", "state") else "right", no_wrap=True)
    stages = result.summary.get("stages", []) if result.summary else []
    for stage in stages:
        seconds = stage.get("durationSeconds")
        rows = stage.get("rowsIn") or stage.get("rowsOut") or 0
        rate = f"{rows / seconds:,.0f}" if rows and seconds else "-"
        table.add_row(
            str(stage.get("name")),
            str(stage.get("state")),
            f"{stage.get('rowsIn', 0) or 0:,}",
            f"{stage.get('rowsOut', 0) or 0:,}",
            f"{stage.get('rowsRejected', 0) or 0:,}",
            f"{seconds:.2f}" if seconds is not None else "-",
            rate,
        )
    staged = sum(s.get("durationSeconds") or 0 for s in stages)
    table.add_row("stages total", "", "", "", "", f"{staged:.2f}", "", end_section=True)
    table.add_row("whole run", "", f"{reference.rows_in:,}", "", "", f"{result.seconds:.2f}",
                  f"{reference.rows_in / result.seconds:,.0f}")  # fmt: skip
    table.add_row("reference", "best", f"{reference.rows_in:,}", f"{reference.rows_out:,}",
                  f"{reference.rows_in - reference.rows_valid:,}", f"{reference.best:.2f}",
                  f"{reference.rows_in / reference.best:,.0f}")  # fmt: skip
    return table


def count_problems(result: RunResult, reference: Reference) -> list[str]:
    """The row counts of the run's succeeded validate and transform stages against the reference's."""
    stages = {
        s.get("name"): s for s in (result.summary or {}).get("stages", []) if s.get("state") == "Succeeded"
    }
    expected = {
        ("validate", "rowsIn"): reference.rows_in,
        ("validate", "rowsRejected"): reference.rows_in - reference.rows_valid,
        ("transform", "rowsOut"): reference.rows_out,
    }
    return [
        f"stage {stage} {key}: run {stages[stage].get(key)}, reference {want}"
        for (stage, key), want in expected.items()
        if stage in stages and stages[stage].get(key) != want
    ]


def report_failure(result: RunResult) -> None:
    console.print(f"[red]dataops run failed[/]: {result.problem}", highlight=False)
    tail = result.stderr.strip().splitlines()[-STDERR_TAIL_LINES:]
    if tail:
        console.print(f"last {len(tail)} lines of its stderr:", highlight=False)
        console.print("\n".join(f"  {line}" for line in tail), markup=False, highlight=False)


@app.command()
def main(
    rows: Annotated[int, typer.Option(help="Rows in the generated CSV")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Generator seed")] = 1,
    repeat: Annotated[int, typer.Option(min=1, help="Reference runs; the best counts")] = 3,
    dataops: Annotated[Path, typer.Option(help="The dataops command to benchmark")] = DATAOPS,
    reference_only: Annotated[bool, typer.Option(help="Time the reference SQL only")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the temporary folder (CSV, spec, workdir)")] = False,
) -> None:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    aggregates = spec_aggregates(spec)
    folder = Path(tempfile.mkdtemp(prefix="dataops-bench-"))
    try:
        csv_path = folder / "inventory.csv"
        started = time.perf_counter()
        stats = load_generator().generate(csv_path, rows, seed)
        generated = time.perf_counter() - started
        pa.default_memory_pool().release_unused()  # give the generator's buffers back before the run
        console.print(
            f"generated {stats.rows:,} rows ({stats.resources:,} resources, {stats.bad:,} bad rows,"
            f" {csv_path.stat().st_size / 1e6:.1f} MB) in {generated:.2f}s",
            highlight=False,
        )

        reference = run_reference(csv_path, aggregates, repeat)
        runs = ", ".join(f"{s:.2f}" for s in reference.seconds)
        console.print(
            f"reference SQL: best {reference.best:.2f}s of {repeat} ({runs});"
            f" {reference.rows_in:,} rows in, {reference.rows_in - reference.rows_valid:,} rejected,"
            f" {reference.rows_out:,} resources, "
            + ", ".join(f"{table} {len(kpis)} rows" for table, kpis in reference.kpis.items()),
            highlight=False,
        )
        if reference.rows_in - reference.rows_valid != stats.bad:
            console.print(
                f"[red]the reference rejected {reference.rows_in - reference.rows_valid} rows, the generator"
                f" wrote {stats.bad} bad ones[/]"
            )
            raise typer.Exit(1)
        if reference_only:
            return

        workdir = folder / "work"
        result = run_dataops(dataops, write_spec_copy(spec, csv_path, folder), workdir)
        if not result.problem:
            read_run_kpis(result, workdir, aggregates)
        if result.summary and result.summary.get("stages"):
            console.print(stage_table(result, reference))
        if result.problem:
            report_failure(result)
            for problem in count_problems(result, reference):
                console.print(f"[red]and the stages that ran disagree with the reference[/]: {problem}")
            raise typer.Exit(1)
        console.print(
            f"whole run {result.seconds:.2f}s / reference {reference.best:.2f}s ="
            f" [bold]{result.seconds / reference.best:.1f}x[/]"
        )
        problems = count_problems(result, reference)
        for agg in aggregates:
            problems += compare_kpis(reference.kpis[agg.table], result.kpis[agg.table], agg)
        if problems:
            console.print(f"[red]the run and the reference disagree[/] ({len(problems)} differences):")
            console.print("\n".join(f"  {p}" for p in problems[:20]), markup=False, highlight=False)
            raise typer.Exit(1)
        tables = " and ".join(agg.table for agg in aggregates)
        console.print(
            f"[green]the run and the reference agree[/]: {tables} match (counts exactly, sums and averages"
            f" within {REL_TOLERANCE:g} relative), and so do the rejected and deduplicated row counts",
            highlight=False,
        )
    finally:
        if keep:
            console.print(f"kept {folder}", highlight=False)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    app()
