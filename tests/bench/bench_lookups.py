"""Benchmark the TDS lookup: 1,000,000 records enriched from a 100,000-row reference table, against the
same join in one DuckDB statement, in the same run.

Run it from the repository root with the project's virtualenv::

    .venv/bin/python tests/bench/bench_lookups.py                       # 1,000,000 x 100,000
    .venv/bin/python tests/bench/bench_lookups.py --records 200000      # quicker
    .venv/bin/python tests/bench/bench_lookups.py --no-keyed            # the broadcast path only

What it does, in a fresh temporary folder:

1. writes a warehouse (one DuckDB file) with ``bench_raw.orders`` (``--records`` rows, ~9% of them with a
   customer the reference lacks) and ``bench_ref.customers`` (``--reference-rows`` rows, one per key);
2. runs the *reference*: one DuckDB statement over that file, ``COPY (orders LEFT JOIN customers, plus
   the derived net amount) TO parquet``, best of ``--repeat`` runs;
3. runs the TDS pipeline (``beam.pipelines.tds.run_pipeline``, the in-process runner) on a PipelineRun
   with the same lookup and derive, once by broadcast (the reference is under the default
   ``--broadcast-limit-rows``) and, unless ``--no-keyed``, once by the keyed join (limit set below the
   reference's size);
4. prints each time, its rows/s, and the ratio pipeline / reference; checks every output has the
   reference's row count, matched count and sum of the derived column.

The exit code is 0 when every output agrees with the reference, 1 otherwise. This file is not a test
module: pytest does not collect it.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from beam.pipelines import tds  # noqa: E402
from beam.pipelines.chunks import pipeline_options  # noqa: E402
from beam.warehouse import open_warehouse  # noqa: E402
from controller.spec import PipelineRun  # noqa: E402

RAW = "bench_raw.orders"
REFERENCE = "bench_ref.customers"
OUTPUT = "bench_tds.orders"
UNMATCHED_SHARE = 0.09
STARTED_AT = "2026-01-01T00:00:00+00:00"

GENERATE_SQL = """
CREATE SCHEMA IF NOT EXISTS bench_ref;
CREATE SCHEMA IF NOT EXISTS bench_raw;
CREATE OR REPLACE TABLE bench_ref.customers AS
SELECT 'c' || lpad(CAST(i AS VARCHAR), 7, '0') AS customer_id,
       ['retail', 'pro', 'staff', 'public'][1 + i % 4] AS segment,
       ['eu', 'us', 'apac'][1 + i % 3] AS region,
       CAST(i % 20 AS DOUBLE) / 100 AS discount
FROM range($reference_rows) AS t(i);
CREATE OR REPLACE TABLE bench_raw.orders AS
SELECT 'o' || lpad(CAST(i AS VARCHAR), 8, '0') AS order_id,
       'c' || lpad(CAST(hash(i) % $key_space AS VARCHAR), 7, '0') AS customer_id,
       CAST(1 + i % 9 AS BIGINT) AS qty,
       CAST(hash(i + 1) % 100000 AS DOUBLE) / 100 AS amount
FROM range($records) AS t(i);
"""

# The lookup and derive of :func:`spec`, written by hand: every order, its customer's columns (NULL when
# the customer is missing), and the net amount.
REFERENCE_SQL = """
COPY (
    SELECT o.*, c.segment, c.region AS customer_region, c.discount, o.amount * (1 - c.discount) AS net
    FROM bench_raw.orders AS o LEFT JOIN bench_ref.customers AS c ON o.customer_id = c.customer_id
) TO '{path}' (FORMAT parquet)
"""

CHECK_SQL = """
SELECT count(*) AS records, count(segment) AS matched, sum(net) AS net
FROM read_parquet('{glob}')
"""

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 110)
app = typer.Typer(add_completion=False, help="Benchmark TDS lookups against one DuckDB statement.")


@dataclass(frozen=True)
class Timed:
    label: str
    seconds: float
    check: tuple[Any, ...]  # (records, matched, sum of net)
    detail: str = ""


def spec() -> PipelineRun:
    return PipelineRun.model_validate(
        {
            "apiVersion": "dataops.io/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "bench-lookups"},
            "spec": {
                "source": {"uri": "/bench/orders.csv", "columns": [{"name": "order_id"}]},
                "load": {"table": RAW},
                "transform": {
                    "lookups": [
                        {
                            "name": "customers",
                            "table": REFERENCE,
                            "on": ["customer_id"],
                            "columns": ["segment", {"name": "region", "as": "customer_region"}, "discount"],
                        }
                    ],
                    "derive": [{"name": "net", "expr": "amount * (1 - discount)"}],
                    "output": {"table": OUTPUT},
                },
            },
        }
    )


def generate(warehouse: Path, records: int, reference_rows: int) -> None:
    key_space = int(reference_rows / (1 - UNMATCHED_SHARE))
    sql = (
        GENERATE_SQL.replace("$reference_rows", str(reference_rows))
        .replace("$records", str(records))
        .replace("$key_space", str(key_space))
    )
    with duckdb.connect(str(warehouse)) as con:
        con.execute(sql)


def check(glob: str) -> tuple[Any, ...]:
    with duckdb.connect() as con:
        return tuple(con.execute(CHECK_SQL.format(glob=glob)).fetchall()[0])


def run_reference(warehouse: Path, folder: Path, repeat: int) -> Timed:
    path = folder / "reference.parquet"
    seconds = []
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for _ in range(repeat):
            started = time.perf_counter()
            con.execute(REFERENCE_SQL.format(path=path))
            seconds.append(time.perf_counter() - started)
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    return Timed("one DuckDB statement", min(seconds), check(str(path)), f"best of {repeat} ({runs})")


def run_tds(warehouse: Path, folder: Path, label: str, limit: int) -> Timed:
    staging = folder / f"staging-{label}"
    started = time.perf_counter()
    outcome = tds.run_pipeline(
        spec(),
        warehouse,
        str(staging),
        pipeline_options([]),
        broadcast_limit_rows=limit,
        started_at=STARTED_AT,
    )
    seconds = time.perf_counter() - started
    join = outcome["lookups"]["customers"]["join"]
    return Timed(
        f"TDS pipeline ({join})", seconds, check(outcome["parts"]), f"--broadcast-limit-rows {limit}"
    )


def report(records: int, reference: Timed, runs: list[Timed]) -> Table:
    table = Table(title=f"{records:,} records enriched from a reference table", title_justify="left")
    for column in ("how", "seconds", "records/s", "x reference", "records", "matched", "sum(net)"):
        table.add_column(column, justify="left" if column == "how" else "right", no_wrap=True)
    for timed in [reference, *runs]:
        table.add_row(
            timed.label,
            f"{timed.seconds:.2f}",
            f"{records / timed.seconds:,.0f}",
            f"{timed.seconds / reference.seconds:.1f}x",
            f"{timed.check[0]:,}",
            f"{timed.check[1]:,}",
            f"{timed.check[2]:,.2f}",
        )
    return table


def agrees(run: tuple[Any, ...], reference: tuple[Any, ...]) -> bool:
    """The same records and matches exactly; the same sum up to float summation order."""
    return run[:2] == reference[:2] and math.isclose(run[2], reference[2], rel_tol=1e-9)


@app.command()
def main(
    records: Annotated[int, typer.Option(min=1, help="Records in the raw table")] = 1_000_000,
    reference_rows: Annotated[int, typer.Option(min=2, help="Rows in the reference table")] = 100_000,
    repeat: Annotated[int, typer.Option(min=1, help="Reference runs; the best counts")] = 3,
    keyed: Annotated[bool, typer.Option(help="Also time the keyed join")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the temporary folder")] = False,
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dataops-bench-lookups-"))
    try:
        warehouse = open_warehouse(folder / "work").path
        warehouse.parent.mkdir(parents=True)
        started = time.perf_counter()
        generate(warehouse, records, reference_rows)
        console.print(
            f"generated {records:,} records and {reference_rows:,} reference rows"
            f" in {time.perf_counter() - started:.2f}s",
            highlight=False,
        )
        reference = run_reference(warehouse, folder, repeat)
        runs = [run_tds(warehouse, folder, "broadcast", tds.DEFAULT_BROADCAST_LIMIT_ROWS)]
        if keyed:
            runs.append(run_tds(warehouse, folder, "keyed", reference_rows - 1))
        console.print(report(records, reference, runs))
        console.print(f"reference: {reference.detail}", highlight=False)
        for timed in runs:
            console.print(
                f"{timed.label} ({timed.detail}) {timed.seconds:.2f}s / reference {reference.seconds:.2f}s ="
                f" [bold]{timed.seconds / reference.seconds:.1f}x[/]",
                highlight=False,
            )
        wrong = [t for t in runs if not agrees(t.check, reference.check)]
        for timed in wrong:
            console.print(
                f"[red]{timed.label} disagrees with the reference[/]: {timed.check} != {reference.check}"
            )
        if wrong:
            raise typer.Exit(1)
        console.print(
            "[green]every output agrees with the reference[/] (records, matched records, sum of net)"
        )
    finally:
        if keep:
            console.print(f"kept {folder}", highlight=False)
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    app()
