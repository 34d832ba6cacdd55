"""The DuckDB side of :mod:`beam.consolidation.sql`: run its BigQuery text, translated, on a connection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from beam.consolidation.sql import Sql, meta_ddl
from beam.warehouse.duckdb_warehouse import quote_table, split_table


def execute(con: duckdb.DuckDBPyConnection, sql: Sql) -> list[tuple[Any, ...]]:
    """Run one statement of :mod:`beam.consolidation.sql` on DuckDB, to completion."""
    return con.execute(sql.duckdb, dict(sql.params)).fetchall()


def fetch_arrow(con: duckdb.DuckDBPyConnection, sql: Sql) -> pa.Table:
    return con.sql(sql.duckdb, params=dict(sql.params) or None).to_arrow_table()


def run_on_chunk(con: duckdb.DuckDBPyConnection, sql: Sql, relation: str, chunk: pa.Table) -> pa.Table:
    """``sql`` over ``chunk`` registered as ``relation``."""
    con.register(relation, chunk)
    try:
        return fetch_arrow(con, sql)
    finally:
        con.unregister(relation)


def guard(con: duckdb.DuckDBPyConnection, sql: Sql) -> bool:
    """A guard statement's answer (one boolean)."""
    rows = execute(con, sql)
    return bool(rows and rows[0][0])


def ensure_meta(con: duckdb.DuckDBPyConnection) -> None:
    for statement in meta_ddl():
        execute(con, statement)


def table_types(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> dict[str, Mapping[str, str] | None]:
    """``table -> {column: BigQuery type}`` for each table, ``None`` for a missing one."""
    from beam.pipelines.chunks import column_types  # imports Beam: only when a cycle checks its tables

    out: dict[str, Mapping[str, str] | None] = {}
    for name in dict.fromkeys(tables):
        schema, tbl = split_table(name)
        found = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [schema, tbl],
        ).fetchall()
        if not found[0][0]:
            out[name] = None
            continue
        arrow = con.sql(f"SELECT * FROM {quote_table(name)} LIMIT 0").to_arrow_table()
        out[name] = column_types(arrow.schema)
    return out
