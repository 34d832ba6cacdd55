"""The embedded warehouse: one DuckDB file. Every write is one transaction (staging, then swap)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

_TABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
META_SCHEMA = "_dataops"
LOCK_WAIT_SECONDS = 120.0


class WarehouseError(Exception):
    """A warehouse operation a user can fix (missing table, refused append, ...).

    ``retryable``: the warehouse was unavailable (quota, rate limit, backend), a later attempt may pass."""

    retryable = False


@dataclass(frozen=True)
class LineageRecord:
    """Which run, source and spec generation produced a table (the local stand-in for catalog tags)."""

    table: str
    run: str
    namespace: str
    stage: str
    source_uri: str
    generation: int
    rows: int
    written_at: str
    inputs: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_table(table: str) -> str:
    match = _TABLE.match(table)
    if not match:
        raise WarehouseError(f"table {table!r} must be 'dataset.table'")
    return f"{quote_ident(match.group(1))}.{quote_ident(match.group(2))}"


def split_table(table: str) -> tuple[str, str]:
    match = _TABLE.match(table)
    if not match:
        raise WarehouseError(f"table {table!r} must be 'dataset.table'")
    return match.group(1), match.group(2)


class DuckDBWarehouse:
    """BigQuery ``dataset.table`` = DuckDB schema ``dataset``, table ``table`` in one file.

    Writes take the BigQuery warehouse's layout keywords (``partition_by``, ``cluster_by``, ``declared``
    types) and ignore them: the parquet input is typed already and DuckDB has no partitions. Nothing is
    billed (``bytes_billed`` stays 0)."""

    bytes_billed = 0

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, waiting while another process holds the file's lock."""
        if read_only and not self.path.exists():
            raise WarehouseError(f"no warehouse at {self.path}: run the load stage first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            _x(con, "SET enable_progress_bar = false")
            _x(con, "SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    # ---- reading -------------------------------------------------------------------------------

    def exists(self, table: str) -> bool:
        if not self.path.exists():
            return False
        schema, name = split_table(table)
        with self.connect(read_only=True) as con:
            row = _x(
                con,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                [schema, name],
            )
        return bool(row and row[0][0])

    def require(self, table: str) -> None:
        if not self.exists(table):
            raise WarehouseError(f"table {table} does not exist in {self.path}")

    def row_count(self, table: str) -> int:
        self.require(table)
        with self.connect(read_only=True) as con:
            row = _x(con, f"SELECT count(*) FROM {quote_table(table)}")
        return int(row[0][0])

    def schema(self, table: str) -> pa.Schema:
        self.require(table)
        with self.connect(read_only=True) as con:
            return con.sql(f"SELECT * FROM {quote_table(table)} LIMIT 0").to_arrow_table().schema

    def read_arrow(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        self.require(table)
        cols = ", ".join(quote_ident(c) for c in columns) if columns else "*"
        with self.connect(read_only=True) as con:
            return con.sql(f"SELECT {cols} FROM {quote_table(table)} ORDER BY rowid").to_arrow_table()

    def read_batches(
        self, table: str, start: int, stop: int, batch_rows: int = 131072, with_row_id: str | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Rows ``start <= rowid < stop`` in table order, as Arrow batches.

        ``with_row_id`` names an extra column holding the row's position (a stable tie-breaker)."""
        self.require(table)
        extra = f", rowid AS {quote_ident(with_row_id)}" if with_row_id else ""
        with self.connect(read_only=True) as con:
            reader = con.sql(
                f"SELECT *{extra} FROM {quote_table(table)} WHERE rowid >= {int(start)} AND rowid < {int(stop)}"
                " ORDER BY rowid"
            ).to_arrow_reader(batch_rows)
            yield from reader

    def query_arrow(self, sql: str) -> pa.Table:
        with self.connect(read_only=True) as con:
            return con.sql(sql).to_arrow_table()

    # ---- writing -------------------------------------------------------------------------------

    def replace_table(
        self,
        table: str,
        data: pa.Table | str,
        lineage: LineageRecord,
        order_by: Sequence[str] = (),
        **layout: Any,
    ) -> int:
        """Replace ``table`` with ``data`` (an Arrow table or a parquet glob) in one transaction."""
        schema, _ = split_table(table)
        with self.connect() as con:
            _x(con, "BEGIN TRANSACTION")
            try:
                _x(con, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                source = _register_source(con, data)
                order = f" ORDER BY {', '.join(quote_ident(c) for c in order_by)}" if order_by else ""
                _x(con, f"CREATE OR REPLACE TABLE {quote_table(table)} AS SELECT * FROM {source}{order}")
                rows = _count(con, table)
                _write_lineage(con, lineage, rows)
                _x(con, "COMMIT")
            except BaseException:
                _x(con, "ROLLBACK")
                raise
        return rows

    def append_table(self, table: str, data: pa.Table | str, lineage: LineageRecord, **layout: Any) -> int:
        """Append ``data`` once per (run, generation): a repeat is a no-op, in one transaction."""
        schema, _ = split_table(table)
        with self.connect() as con:
            _x(con, "BEGIN TRANSACTION")
            try:
                _x(con, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                _ensure_meta(con)
                done = _x(
                    con,
                    f"SELECT generation, rows FROM {META_SCHEMA}.appends WHERE table_name = ? AND run = ?"
                    " AND namespace = ?",
                    [table, lineage.run, lineage.namespace],
                )
                done = done[0] if done else None
                if done is not None and done[0] != lineage.generation:
                    raise WarehouseError(
                        f"run {lineage.run} already appended generation {done[0]} to {table}; an append is"
                        " not repeated with a changed spec: use a new run name, or writeMode: replace"
                    )
                if done is not None:
                    _x(con, "ROLLBACK")
                    return int(done[1])
                source = _register_source(con, data)
                exists = _x(
                    con,
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                    list(split_table(table)),
                )
                if exists[0][0]:
                    _x(con, f"INSERT INTO {quote_table(table)} BY NAME SELECT * FROM {source}")
                else:
                    _x(con, f"CREATE TABLE {quote_table(table)} AS SELECT * FROM {source}")
                added = int(_x(con, f"SELECT count(*) FROM {source}")[0][0])
                _x(
                    con,
                    f"INSERT INTO {META_SCHEMA}.appends VALUES (?, ?, ?, ?, ?, ?)",
                    [table, lineage.run, lineage.namespace, lineage.generation, added, lineage.written_at],
                )
                _write_lineage(con, lineage, _count(con, table))
                _x(con, "COMMIT")
            except BaseException:
                _x(con, "ROLLBACK")
                raise
        return added

    def replace_run_rows(self, table: str, data: pa.Table, lineage: LineageRecord) -> int:
        """Replace this run's rows of a table shared by runs (``run`` column), in one transaction."""
        schema, _ = split_table(table)
        with self.connect() as con:
            _x(con, "BEGIN TRANSACTION")
            try:
                _x(con, f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
                source = _register_source(con, data)
                _x(con, f"CREATE TABLE IF NOT EXISTS {quote_table(table)} AS SELECT * FROM {source} LIMIT 0")
                _x(con, f"DELETE FROM {quote_table(table)} WHERE run = ?", [lineage.run])
                _x(con, f"INSERT INTO {quote_table(table)} BY NAME SELECT * FROM {source}")
                rows = _count(con, table)
                _write_lineage(con, lineage, rows)
                _x(con, "COMMIT")
            except BaseException:
                _x(con, "ROLLBACK")
                raise
        return rows

    def drop_table(self, table: str) -> None:
        with self.connect() as con:
            _x(con, f"DROP TABLE IF EXISTS {quote_table(table)}")
            _ensure_meta(con)
            _x(con, f"DELETE FROM {META_SCHEMA}.lineage WHERE table_name = ?", [table])

    def lineage(self, table: str) -> LineageRecord | None:
        if not self.path.exists():
            return None
        with self.connect(read_only=True) as con:
            has = _x(
                con,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'lineage'",
                [META_SCHEMA],
            )
            if not has[0][0]:
                return None
            row = _x(con, f"SELECT record FROM {META_SCHEMA}.lineage WHERE table_name = ?", [table])
        return LineageRecord(**json.loads(row[0][0])) if row else None


def _x(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> list[tuple[Any, ...]]:
    """Run one statement to completion (DuckDB refuses new work while a result is unread)."""
    return con.execute(sql, list(params or [])).fetchall()


def _register_source(con: duckdb.DuckDBPyConnection, data: pa.Table | str) -> str:
    if isinstance(data, str):
        return f"read_parquet({_sql_string(data)})"
    con.register("__dataops_source", data)
    return "__dataops_source"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(_x(con, f"SELECT count(*) FROM {quote_table(table)}")[0][0])


def _ensure_meta(con: duckdb.DuckDBPyConnection) -> None:
    _x(con, f"CREATE SCHEMA IF NOT EXISTS {META_SCHEMA}")
    _x(
        con,
        f"CREATE TABLE IF NOT EXISTS {META_SCHEMA}.lineage (table_name VARCHAR PRIMARY KEY, run VARCHAR,"
        " source_uri VARCHAR, generation BIGINT, stage VARCHAR, rows BIGINT, written_at VARCHAR,"
        " record VARCHAR)",
    )
    _x(
        con,
        f"CREATE TABLE IF NOT EXISTS {META_SCHEMA}.appends (table_name VARCHAR, run VARCHAR, namespace VARCHAR,"
        " generation BIGINT, rows BIGINT, appended_at VARCHAR)",
    )


def _write_lineage(con: duckdb.DuckDBPyConnection, lineage: LineageRecord, rows: int) -> None:
    _ensure_meta(con)
    record = asdict(lineage) | {"rows": rows}
    _x(con, f"DELETE FROM {META_SCHEMA}.lineage WHERE table_name = ?", [lineage.table])
    _x(
        con,
        f"INSERT INTO {META_SCHEMA}.lineage VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            lineage.table,
            lineage.run,
            lineage.source_uri,
            lineage.generation,
            lineage.stage,
            rows,
            lineage.written_at,
            json.dumps(record, sort_keys=True),
        ],
    )
    comment = json.dumps(
        {
            "run": lineage.run,
            "source_uri": lineage.source_uri,
            "generation": lineage.generation,
            "stage": lineage.stage,
        }
    )
    _x(con, f"COMMENT ON TABLE {quote_table(lineage.table)} IS {_sql_string(comment)}")
