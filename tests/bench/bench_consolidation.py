"""Benchmark one consolidation cycle over 100,000 new operations (1:1 join) against one DuckDB MERGE.

Run it from the repository root with the project's virtualenv (``make bench`` runs it too)::

    .venv/bin/python tests/bench/bench_consolidation.py                 # 100,000 operations
    .venv/bin/python tests/bench/bench_consolidation.py --rows 20000    # quicker
    .venv/bin/python tests/bench/bench_consolidation.py --keep          # keep the temp folder, print it

What it does, in a fresh temporary folder:

1. writes ``bench.operations`` (``--rows`` operations, ties on the cursor: 10 per second) and
   ``bench.transactions`` (one row per operation) into the workdir's DuckDB warehouse;
2. runs the *reference*: the same consolidation as ONE DuckDB statement, a MERGE of every operation
   joined with its transaction (latest row per key) into ``bench.reference``; best of ``--repeat``;
3. runs one cycle, ``run_cycle`` (extract, publish to the embedded queue, pull, the Beam pipeline on
   the in-process runner, the staging table, MERGE + watermark in one transaction, ack), into
   ``bench.consolidated``, with a batch size that takes every row in one cycle;
4. prints both times, the cycle's rows per second and the ratio cycle / reference, and checks the two
   tables are equal.

The exit code is 0 when the cycle merged every row and agrees with the reference, 1 otherwise. This file
is not a test module: pytest does not collect it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from beam.bus import EmbeddedQueue
from beam.consolidation import load_ingestion_source, run_cycle
from beam.warehouse import open_warehouse

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 110)
app = typer.Typer(add_completion=False, help="Benchmark a consolidation cycle against one DuckDB MERGE.")

COLUMNS = "op_id, tx_id, msisdn, operation_type, amount, status, updated_at, fee, channel, settlement_status"

SETUP = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE OR REPLACE TABLE bench.operations AS
SELECT i AS op_id, 'TX-' || lpad(CAST(i AS VARCHAR), 9, '0') AS tx_id,
       '2250' || CAST(7000000 + i % 100000 AS VARCHAR) AS msisdn,
       ['cash_in', 'cash_out', 'transfer', 'airtime'][1 + i % 4] AS operation_type,
       CAST(100 + (i * 37) % 100000 AS DECIMAL(18, 2)) AS amount,
       CASE WHEN i % 17 = 0 THEN 'pending' ELSE 'success' END AS status,
       TIMESTAMP '2026-03-02 00:00:00' + to_seconds(i // 10) AS updated_at
FROM range(1, $rows + 1) AS r(i);
CREATE OR REPLACE TABLE bench.transactions AS
SELECT tx_id, CAST(amount / 100 AS DECIMAL(18, 2)) AS fee, CASE WHEN op_id % 3 = 0 THEN 'app' ELSE 'ussd' END
       AS channel, 'settled' AS settlement_status, updated_at + INTERVAL 2 SECOND AS changed_at
FROM bench.operations;
"""

# The cycle's work as one statement: every operation with its transaction's columns (a LEFT join on
# tx_id, the latest transaction row per tx_id), the latest row per op_id, MERGEd on op_id.
SOURCE = """
SELECT o.op_id, o.tx_id, o.msisdn, o.operation_type, o.amount, o.status, o.updated_at,
       t.fee, t.channel, t.settlement_status
FROM bench.operations AS o
LEFT JOIN (SELECT * FROM bench.transactions
           QUALIFY row_number() OVER (PARTITION BY tx_id ORDER BY changed_at DESC) = 1) AS t USING (tx_id)
QUALIFY row_number() OVER (PARTITION BY o.op_id ORDER BY o.updated_at DESC, o.op_id DESC) = 1
"""
REFERENCE = f"""
MERGE INTO bench.reference AS T USING ({SOURCE}) AS S ON T.op_id = S.op_id
WHEN MATCHED AND (S.updated_at > T.updated_at OR (S.updated_at = T.updated_at AND S.op_id >= T.op_id))
    THEN UPDATE SET tx_id = S.tx_id, msisdn = S.msisdn, operation_type = S.operation_type, amount = S.amount,
         status = S.status, updated_at = S.updated_at, fee = S.fee, channel = S.channel,
         settlement_status = S.settlement_status
WHEN NOT MATCHED THEN INSERT ({COLUMNS}) VALUES ({", ".join("S." + c.strip() for c in COLUMNS.split(","))})
"""


def spec(rows: int) -> dict[str, Any]:
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "bench"},
        "spec": {
            "consolidation": {
                "schedule": "*/20 * * * *",
                "source": {"table": "bench.operations", "id": "op_id", "cursor": "updated_at"},
                "joins": [
                    {
                        "table": "bench.transactions",
                        "on": ["tx_id"],
                        "type": "left",
                        "columns": ["fee", "channel", "settlement_status"],
                        "cursor": "changed_at",
                    }
                ],
                "target": {"table": "bench.consolidated", "key": ["op_id"]},
                "batchSize": rows,
            }
        },
    }


def run_reference(workdir: Path, repeat: int) -> float:
    best = float("inf")
    warehouse = open_warehouse(workdir)
    for _ in range(repeat):
        with warehouse.connect() as con:
            con.execute(f"CREATE OR REPLACE TABLE bench.reference AS {SOURCE} LIMIT 0")
            started = time.perf_counter()
            con.execute(REFERENCE)
            best = min(best, time.perf_counter() - started)
    return best


@app.command()
def main(
    rows: Annotated[int, typer.Option(help="new operations (and transactions, 1:1)")] = 100_000,
    repeat: Annotated[int, typer.Option(help="runs of the reference; the best counts")] = 3,
    keep: Annotated[bool, typer.Option(help="keep the temporary folder")] = False,
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-consolidation-"))
    workdir = folder / "work"
    try:
        warehouse = open_warehouse(workdir)
        with warehouse.connect() as con:
            con.execute(SETUP.replace("$rows", str(int(rows))))
        spec_path = folder / "bench.yaml"
        spec_path.write_text(yaml.safe_dump(spec(rows)), encoding="utf-8")

        reference = run_reference(workdir, repeat)
        started = time.perf_counter()
        result = run_cycle(load_ingestion_source(spec_path), workdir, EmbeddedQueue(workdir))
        cycle = time.perf_counter() - started

        with warehouse.connect(read_only=True) as con:
            differ = con.execute(
                f"SELECT count(*) FROM ((SELECT {COLUMNS} FROM bench.consolidated EXCEPT ALL"
                f" SELECT {COLUMNS} FROM bench.reference) UNION ALL (SELECT {COLUMNS} FROM bench.reference"
                f" EXCEPT ALL SELECT {COLUMNS} FROM bench.consolidated))"
            ).fetchall()[0][0]

        table = Table(title=f"consolidation of {rows:,} new operations, 1:1 join", title_justify="left")
        for col in ("what", "seconds", "rows/s"):
            table.add_column(col, justify="left" if col == "what" else "right")
        table.add_row("one cycle (run_cycle)", f"{cycle:.2f}", f"{rows / cycle:,.0f}")
        table.add_row(f"one DuckDB MERGE (best of {repeat})", f"{reference:.2f}", f"{rows / reference:,.0f}")
        console.print(table)
        console.print(f"ratio cycle / MERGE: {cycle / reference:.1f}x")
        console.print(
            f"cycle {result.cycle_id}: {result.status}, extracted {result.extracted:,}, published"
            f" {result.published:,}, staged {result.staged:,}, inserted {result.inserted:,}, updated {result.updated:,}"
        )
        ok = result.inserted == rows and differ == 0
        console.print("tables equal: yes" if differ == 0 else f"[red]tables differ in {differ:,} rows[/]")
        if keep:
            console.print(f"kept {folder}")
        if not ok:
            raise typer.Exit(1)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    app()
