"""Two consolidation cycles catching up on new rows: what the README shows.

    .venv/bin/python examples/transactions/demo.py --workdir work/tx-demo

1. Loads the rows of ``ussd_operations.csv`` and ``transactiongu.csv`` stamped before 08:20 into the
   workdir's warehouse (``ussd.ussd_operations``, ``ussd.transactiongu``), as if they had arrived.
2. Runs a cycle (the same ``run_cycle`` as ``dataops consolidate``, on the embedded queue).
3. Loads the later rows: new operations, a second version of operation 1004 (pending -> success), and
   transaction rows that arrive late (TX-5006 for an operation merged in cycle 1, TX-5004 settled).
4. Runs a second cycle. For each cycle it prints the counts, the watermark, and the consolidated
   rows the cycle inserted (+) or updated (~).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from beam.bus import EmbeddedQueue
from beam.consolidation import CycleResult, load_ingestion_source, run_cycle
from beam.warehouse import DuckDBWarehouse, open_warehouse

HERE = Path(__file__).resolve().parent
SPEC = HERE / "ingestionsource.yaml"
ARRIVAL = "2026-03-02 08:20:00"
"""Rows stamped before this are there for the first cycle; the others arrive before the second."""

TABLES = {
    "ussd.ussd_operations": (
        "ussd_operations.csv",
        "source_timestamp",
        {
            "operation_id": "BIGINT",
            "transaction_id": "VARCHAR",
            "msisdn": "VARCHAR",
            "operation_type": "VARCHAR",
            "amount": "DECIMAL(18,2)",
            "status": "VARCHAR",
            "source_timestamp": "TIMESTAMP",
        },
    ),
    "ussd.transactiongu": (
        "transactiongu.csv",
        "updated_at",
        {
            "transaction_id": "VARCHAR",
            "fee": "DECIMAL(18,2)",
            "channel": "VARCHAR",
            "agent_id": "VARCHAR",
            "settlement_status": "VARCHAR",
            "updated_at": "TIMESTAMP",
        },
    ),
}

console = Console()


def arrive(warehouse: DuckDBWarehouse, since: str | None, until: str | None) -> dict[str, int]:
    """Append the CSV rows stamped in ``[since, until)`` to their tables; rows added per table."""
    added = {}
    with warehouse.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS ussd")
        for table, (csv, stamp, columns) in TABLES.items():
            types = ", ".join(f"{name} {kind}" for name, kind in columns.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({types})")
            spec = "{" + ", ".join(f"'{n}': '{k}'" for n, k in columns.items()) + "}"
            where = " AND ".join(
                [f"{stamp} >= TIMESTAMP '{since}'"] * (since is not None)
                + [f"{stamp} < TIMESTAMP '{until}'"] * (until is not None)
            )
            rows = con.execute(
                f"INSERT INTO {table} SELECT * FROM read_csv(?, header = true, columns = {spec})"
                + (f" WHERE {where}" if where else ""),
                [str(HERE / csv)],
            ).fetchall()
            added[table] = int(rows[0][0])
    return added


SHOWN = ("operation_id", "operation_type", "amount", "status", "source_timestamp", "fee", "settlement_status")


def snapshot(warehouse: DuckDBWarehouse) -> dict[int, tuple[Any, ...]]:
    """The consolidated rows by operation id (empty before the first merge creates the table)."""
    with warehouse.connect(read_only=True) as con:
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = 'consolidated' AND table_name = 'transactions'"
        ).fetchall()
        if not found[0][0]:
            return {}
        rows = con.execute(f"SELECT {', '.join(SHOWN)} FROM consolidated.transactions").fetchall()
    return {int(r[0]): tuple(r) for r in rows}


def show_cycle(
    number: int, arrived: dict[str, int], result: CycleResult, before: dict[int, Any], after: dict[int, Any]
) -> None:
    def position(p: dict[str, Any] | None) -> str:
        return "start" if not p else f"({p['cursor']}, {', '.join(p['key'])})"

    stream = "source:ussd.ussd_operations"
    console.print(
        f"[bold]cycle {number}[/] {result.status}: arrived {arrived['ussd.ussd_operations']} operation rows and"
        f" {arrived['ussd.transactiongu']} transaction rows"
    )
    console.print(
        f"  extracted {result.extracted}, re-merged for late transaction rows {result.rejoined}"
        f" -> {result.inserted} inserted, {result.updated} updated"
    )
    console.print(
        f"  watermark (source_timestamp, operation_id): {position(result.watermark_before.get(stream))}"
        f" -> {position(result.watermark_after.get(stream))}"
    )
    table = Table(box=None, padding=(0, 1), pad_edge=False)
    for col in ("", *SHOWN):
        table.add_column(col)
    for key in sorted(after):
        if before.get(key) != after[key]:
            mark = "+" if key not in before else "~"
            table.add_row(mark, *("" if v is None else str(v) for v in after[key]))
    console.print(table)
    console.print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path("work/tx-demo"), help="emptied first")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    source = load_ingestion_source(SPEC)
    warehouse = open_warehouse(args.workdir)
    bus = EmbeddedQueue(args.workdir)
    for number, (since, until) in enumerate([(None, ARRIVAL), (ARRIVAL, None)], start=1):
        arrived = arrive(warehouse, since, until)
        before = snapshot(warehouse)
        result = run_cycle(source, args.workdir, bus)
        show_cycle(number, arrived, result, before, snapshot(warehouse))


if __name__ == "__main__":
    main()
