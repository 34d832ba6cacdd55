"""Show what `make demo` produced: the tables in the local warehouse, and a peek at the KPIs."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import duckdb
from rich.console import Console
from rich.table import Table

console = Console()


def show(workdir: Path, peek: int) -> None:
    path = workdir / "warehouse.duckdb"
    con = duckdb.connect(str(path), read_only=True)
    listing = Table(title=f"Tables in {path}", title_justify="left")
    for col in ("table", "rows", "written by"):
        listing.add_column(col)
    tables = con.sql(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema <> '_dataops' ORDER BY 1"
    ).fetchall()
    lineage = dict(con.sql("SELECT table_name, run || ' / ' || stage FROM _dataops.lineage").fetchall())
    for (name,) in tables:
        schema, table = name.split(".")
        rows = con.sql(f'SELECT count(*) FROM "{schema}"."{table}"').fetchall()[0][0]
        listing.add_row(name, f"{rows:,}", lineage.get(name, ""))
    console.print(listing)
    for (name,) in tables:
        if not name.split(".")[0].endswith("_bds"):
            continue
        schema, table = name.split(".")
        rel = con.sql(f'SELECT * FROM "{schema}"."{table}" LIMIT {int(peek)}')
        peek_table = Table(title=f"{name} (first {peek} rows)", title_justify="left")
        for col in rel.columns:
            peek_table.add_column(col)
        for row in rel.fetchall():
            peek_table.add_row(*(_cell(v) for v in row))
        console.print(peek_table)
    con.close()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | Decimal):
        return f"{value:,.2f}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("work/demo"))
    parser.add_argument("--peek", type=int, default=8)
    args = parser.parse_args()
    show(args.workdir, args.peek)


if __name__ == "__main__":
    main()
