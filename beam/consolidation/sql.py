"""Every statement of a consolidation cycle, written once in BigQuery dialect. Pure: text in, text out.

The DuckDB warehouse runs :func:`to_duckdb` of the same text (sqlglot transpiles it, keeping the
engines' semantics where they differ, e.g. where NULLs sort); BigQuery runs the text as it is, the
MERGE and the watermark moves wrapped by :func:`bigquery_cycle_script` in one multi-statement
transaction.

Values are rendered as literals (quoted by sqlglot), identifiers are quoted; every name comes from a
:class:`~beam.consolidation.plan.ConsolidationPlan`, whose names were checked against the tables.

A position ``(cursor, key...)`` is compared as typed values: a watermark's text is cast back to the
column's type (``CAST('2024-01-01 10:00:00' AS DATETIME)``) and compared lexicographically, spelled
out with ``>``/``=`` because BigQuery has no row-value comparison.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

import sqlglot
from sqlglot import exp

from beam.consolidation.plan import META_DATASET, ConsolidationPlan, JoinPlan, Position, Stream

WATERMARKS = f"{META_DATASET}.consolidation_watermarks"
CYCLES = f"{META_DATASET}.consolidation_cycles"
LOCKS = f"{META_DATASET}.locks"

CURSOR_TEXT = "cursor_text"
ID_TEXT = "id_text"
PRESENT = "__dataops_present"


def key_text(i: int) -> str:
    return f"key{i}_text"


# ---- quoting ----------------------------------------------------------------------------------------


def ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="bigquery")


def table(name: str) -> str:
    dataset, _, tbl = name.partition(".")
    return f"{ident(dataset)}.{ident(tbl)}"


def string(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="bigquery")


def timestamp(value: datetime) -> str:
    stamp = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    return f"TIMESTAMP {string(stamp)}"


def cast_type(bq_type: str) -> str:
    """The type a text is cast to: NUMERIC keeps BigQuery's precision (DuckDB's bare DECIMAL would not)."""
    return {"NUMERIC": "NUMERIC(38, 9)", "BIGNUMERIC": "BIGNUMERIC"}.get(bq_type, bq_type)


def typed(text: str, bq_type: str) -> str:
    """A literal of ``bq_type`` from the engine's own text of the value."""
    return string(text) if bq_type == "STRING" else f"CAST({string(text)} AS {cast_type(bq_type)})"


def typed_column(expr: str, bq_type: str) -> str:
    """A text column cast to ``bq_type`` (NULL where the text is not one)."""
    return expr if bq_type == "STRING" else f"SAFE_CAST({expr} AS {cast_type(bq_type)})"


@lru_cache(maxsize=4096)
def to_duckdb(sql: str) -> str:
    """The same statement for DuckDB (one statement in, one out)."""
    out = sqlglot.transpile(sql, read="bigquery", write="duckdb")
    if len(out) != 1:
        raise ValueError(f"expected one statement, got {len(out)}")
    return out[0]


# ---- positions --------------------------------------------------------------------------------------


def after(stream: Stream, position: Position | None, cursor: str, keys: Sequence[str]) -> str:
    """``(cursor, keys...) > position`` over typed SQL expressions; TRUE when there is no position."""
    if position is None:
        return "TRUE"
    inner = ""
    for expr, text, kind in reversed(list(zip(keys, position.key, stream.key_types, strict=True))):
        lit = typed(text, kind)
        inner = f"{expr} > {lit}" if not inner else f"({expr} > {lit} OR ({expr} = {lit} AND {inner}))"
    lit = typed(position.cursor, stream.cursor_type)
    return f"({cursor} > {lit} OR ({cursor} = {lit} AND {inner}))"


def _columns_of(stream: Stream, alias: str) -> tuple[str, list[str]]:
    return f"{alias}.{ident(stream.cursor)}", [f"{alias}.{ident(k)}" for k in stream.key]


def _position_select(stream: Stream, alias: str) -> str:
    cursor, keys = _columns_of(stream, alias)
    parts = [f"CAST({cursor} AS STRING) AS {ident(CURSOR_TEXT)}"]
    parts += [f"CAST({k} AS STRING) AS {ident(key_text(i))}" for i, k in enumerate(keys)]
    return ", ".join(parts)


def _not_null(stream: Stream, alias: str) -> str:
    cursor, keys = _columns_of(stream, alias)
    return " AND ".join(f"{c} IS NOT NULL" for c in [cursor, *keys])


# ---- the warehouse's own tables ---------------------------------------------------------------------


def meta_ddl() -> list[str]:
    """The dataset and tables a cycle keeps its state in (idempotent)."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {ident(META_DATASET)}",
        f"CREATE TABLE IF NOT EXISTS {table(WATERMARKS)} (source_name STRING NOT NULL, stream STRING NOT NULL,"
        " table_name STRING, cursor_text STRING, key_json STRING, cycle_id STRING, updated_at TIMESTAMP)",
        f"CREATE TABLE IF NOT EXISTS {table(CYCLES)} (source_name STRING NOT NULL, cycle_id STRING NOT NULL,"
        " started_at TIMESTAMP, committed_at TIMESTAMP, extracted INT64, rejoined INT64, staged INT64,"
        " inserted INT64, updated INT64, unchanged INT64, watermark_before STRING, watermark_after STRING)",
        f"CREATE TABLE IF NOT EXISTS {table(LOCKS)} (name STRING NOT NULL, owner STRING, host STRING, pid INT64,"
        " acquired_at TIMESTAMP, expires_at TIMESTAMP)",
    ]


def watermarks_sql(plan: ConsolidationPlan) -> str:
    return (
        f"SELECT stream, cursor_text, key_json FROM {table(WATERMARKS)}"
        f" WHERE source_name = {string(plan.source_name)}"
    )


def watermark_guard_sql(plan: ConsolidationPlan, stream: Stream, expected: Position | None) -> str:
    """TRUE when the stream's stored watermark is still ``expected`` (nobody moved it meanwhile)."""
    where = f"source_name = {string(plan.source_name)} AND stream = {string(stream.name)}"
    if expected is None:
        return f"SELECT COUNT(*) = 0 FROM {table(WATERMARKS)} WHERE {where}"
    return (
        f"SELECT COUNT(*) = 1 FROM {table(WATERMARKS)} WHERE {where}"
        f" AND cursor_text = {string(expected.cursor)} AND key_json = {string(expected.key_json())}"
    )


def move_watermark_sql(
    plan: ConsolidationPlan, stream: Stream, position: Position, cycle_id: str, now: datetime
) -> str:
    values = {
        "source_name": string(plan.source_name),
        "stream": string(stream.name),
        "table_name": string(stream.table),
        "cursor_text": string(position.cursor),
        "key_json": string(position.key_json()),
        "cycle_id": string(cycle_id),
        "updated_at": timestamp(now),
    }
    row = ", ".join(f"{v} AS {k}" for k, v in values.items())
    sets = ", ".join(f"{k} = S.{k}" for k in values if k not in ("source_name", "stream"))
    return (
        f"MERGE {table(WATERMARKS)} AS T USING (SELECT {row}) AS S"
        " ON T.source_name = S.source_name AND T.stream = S.stream"
        f" WHEN MATCHED THEN UPDATE SET {sets}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(values)}) VALUES ({', '.join(f'S.{k}' for k in values)})"
    )


# ---- extract ----------------------------------------------------------------------------------------


def window_sql(stream: Stream, position: Position | None, limit: int) -> str:
    """The next ``limit`` distinct positions of ``stream`` after ``position``, in order, as text."""
    cursor, keys = _columns_of(stream, "s")
    groups = ", ".join([cursor, *keys])
    return (
        f"SELECT {_position_select(stream, 's')} FROM {table(stream.table)} AS s"
        f" WHERE {_not_null(stream, 's')} AND {after(stream, position, cursor, keys)}"
        f" GROUP BY {groups} ORDER BY {groups} LIMIT {int(limit)}"
    )


def rejoin_sql(
    plan: ConsolidationPlan, join: JoinPlan, since: Position | None, upto: Position, merged: Position
) -> str:
    """Operations already merged (at or before ``merged``) whose joined rows moved into ``(since, upto]``.

    One row per operation: its id, and the position of the latest of those joined rows."""
    stream = join.stream
    if stream is None:
        raise ValueError(f"join {join.table} has no cursor")
    s_cursor, s_keys = _columns_of(plan.source, "s")
    j_cursor, j_keys = _columns_of(stream, "j")
    on = " AND ".join(f"s.{ident(a)} = j.{ident(b)}" for a, b in zip(join.on, join.on_joined, strict=True))
    order = ", ".join(f"{c} DESC" for c in [j_cursor, *j_keys])
    return (
        f"SELECT CAST(s.{ident(plan.id_column)} AS STRING) AS {ident(ID_TEXT)}, {_position_select(stream, 'j')}"
        f" FROM {table(plan.source.table)} AS s JOIN {table(stream.table)} AS j ON {on}"
        f" WHERE {_not_null(plan.source, 's')} AND {_not_null(stream, 'j')}"
        f" AND {after(stream, since, j_cursor, j_keys)} AND NOT {after(stream, upto, j_cursor, j_keys)}"
        f" AND NOT {after(plan.source, merged, s_cursor, s_keys)}"
        f" QUALIFY ROW_NUMBER() OVER (PARTITION BY s.{ident(plan.id_column)} ORDER BY {order}) = 1"
    )


# ---- the staging rows (the Beam pipeline runs these over chunks) ------------------------------------


def read_operations_sql(plan: ConsolidationPlan, relation: str, upto: Position | None) -> str:
    """The source rows of the ids in ``relation`` (column ``id_text``) at or before ``upto``."""
    s_cursor, s_keys = _columns_of(plan.source, "s")
    cols = ", ".join(f"s.{ident(c)}" for c in plan.source_columns)
    id_type = cast_type(plan.source.key_types[0])
    ids = (
        f"SELECT c.{ident(ID_TEXT)} FROM {relation} AS c"
        if id_type == "STRING"
        else f"SELECT SAFE_CAST(c.{ident(ID_TEXT)} AS {id_type}) FROM {relation} AS c"
    )
    return (
        f"SELECT {cols} FROM {table(plan.source.table)} AS s"
        f" WHERE s.{ident(plan.id_column)} IN ({ids}) AND NOT {after(plan.source, upto, s_cursor, s_keys)}"
    )


def join_rows_sql(plan: ConsolidationPlan, relation: str) -> str:
    """Source rows in ``relation`` with the columns of every join (one joined row per ``on`` key)."""
    select = [f"o.{ident(c)}" for c in plan.source_columns]
    joins = []
    for j in plan.joins:
        alias = f"j{j.index}"
        select += [f"{alias}.{ident(c)} AS {ident(c)}" for c in j.columns]
        picked = ", ".join(ident(c) for c in dict.fromkeys([*j.on_joined, *j.columns]))
        order = ", ".join(f"{ident(c)} DESC" for c in j.order)
        first_on = ident(j.on_joined[0])
        sub = (
            f"SELECT {picked} FROM {table(j.table)}"
            f" WHERE {first_on} IN (SELECT {ident(j.on[0])} FROM {relation})"
            f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(ident(c) for c in j.on_joined)}"
            f"{' ORDER BY ' + order if order else ''}) = 1"
        )
        on = " AND ".join(
            f"o.{ident(a)} = {alias}.{ident(b)}" for a, b in zip(j.on, j.on_joined, strict=True)
        )
        kind = "LEFT JOIN" if j.type == "left" else "JOIN"
        joins.append(f" {kind} ({sub}) AS {alias} ON {on}")
    return f"SELECT {', '.join(select)} FROM {relation} AS o{''.join(joins)}"


def dedupe_latest_sql(plan: ConsolidationPlan, relation: str) -> str:
    """One row per target key: the latest by ``(cursor, id)``."""
    key = ", ".join(ident(k) for k in plan.target_key)
    latest = f"{ident(plan.cursor_column)} DESC, {ident(plan.id_column)} DESC"
    return (
        f"SELECT * FROM {relation} WHERE TRUE"
        f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {latest}) = 1"
    )


# ---- merge ------------------------------------------------------------------------------------------


def _key_match(plan: ConsolidationPlan) -> str:
    return " AND ".join(f"T.{ident(k)} IS NOT DISTINCT FROM S.{ident(k)}" for k in plan.target_key)


def _newer(plan: ConsolidationPlan) -> str:
    """The staged row is at least as recent as the target's (a re-merge of the same row updates it)."""
    c, i = ident(plan.cursor_column), ident(plan.id_column)
    return f"COALESCE(S.{c} > T.{c} OR (S.{c} = T.{c} AND S.{i} >= T.{i}) OR T.{c} IS NULL, FALSE)"


def create_target_sql(plan: ConsolidationPlan) -> str:
    cols = ", ".join(ident(c) for c in plan.output_columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {table(plan.target)} AS SELECT {cols} FROM {table(plan.staging)} LIMIT 0"
    )


def merge_sql(plan: ConsolidationPlan) -> str:
    """Staging into target on its key: matched and not older -> update, not matched -> insert."""
    cols = [ident(c) for c in plan.output_columns]
    keys = {ident(k) for k in plan.target_key}
    sets = ", ".join(f"{c} = S.{c}" for c in cols if c not in keys)
    return (
        f"MERGE {table(plan.target)} AS T USING {table(plan.staging)} AS S ON {_key_match(plan)}"
        f" WHEN MATCHED AND {_newer(plan)} THEN UPDATE SET {sets}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join(f'S.{c}' for c in cols)})"
    )


@dataclass(frozen=True)
class CycleRecord:
    cycle_id: str
    started_at: datetime
    committed_at: datetime
    extracted: int
    rejoined: int
    staged: int
    watermark_before: Mapping[str, Position | None]
    watermark_after: Mapping[str, Position | None]


_CYCLE_COLUMNS = (
    "source_name, cycle_id, started_at, committed_at, extracted, rejoined, staged, inserted, updated,"
    " unchanged, watermark_before, watermark_after"
)


def _watermarks_json(marks: Mapping[str, Position | None]) -> str:
    return json.dumps({k: (v.to_json() if v else None) for k, v in marks.items()}, sort_keys=True)


def record_cycle_sql(plan: ConsolidationPlan, record: CycleRecord) -> str:
    """The cycle's record, with the MERGE's counts computed on the target before the MERGE runs."""
    keys = ", ".join(ident(k) for k in plan.target_key)
    c, i = ident(plan.cursor_column), ident(plan.id_column)
    counts = (
        f"SELECT COUNTIF(T.{PRESENT} IS NULL) AS inserted, COUNTIF(T.{PRESENT} AND {_newer(plan)}) AS updated,"
        f" COUNTIF(T.{PRESENT}) AS matched FROM {table(plan.staging)} AS S LEFT JOIN"
        f" (SELECT {keys}, {c}, {i}, TRUE AS {PRESENT} FROM {table(plan.target)}) AS T ON {_key_match(plan)}"
    )
    values = [
        string(plan.source_name),
        string(record.cycle_id),
        timestamp(record.started_at),
        timestamp(record.committed_at),
        str(int(record.extracted)),
        str(int(record.rejoined)),
        str(int(record.staged)),
        "n.inserted",
        "n.updated",
        "n.matched - n.updated",
        string(_watermarks_json(record.watermark_before)),
        string(_watermarks_json(record.watermark_after)),
    ]
    return f"INSERT INTO {table(CYCLES)} ({_CYCLE_COLUMNS}) SELECT {', '.join(values)} FROM ({counts}) AS n"


def record_only_sql(plan: ConsolidationPlan, record: CycleRecord) -> str:
    """The cycle's record when nothing was staged (only watermarks of joins move)."""
    values = [
        string(plan.source_name),
        string(record.cycle_id),
        timestamp(record.started_at),
        timestamp(record.committed_at),
        str(int(record.extracted)),
        str(int(record.rejoined)),
        "0",
        "0",
        "0",
        "0",
        string(_watermarks_json(record.watermark_before)),
        string(_watermarks_json(record.watermark_after)),
    ]
    return f"INSERT INTO {table(CYCLES)} ({_CYCLE_COLUMNS}) SELECT {', '.join(values)}"


def cycle_counts_sql(plan: ConsolidationPlan, cycle_id: str) -> str:
    return (
        f"SELECT inserted, updated, unchanged FROM {table(CYCLES)}"
        f" WHERE source_name = {string(plan.source_name)} AND cycle_id = {string(cycle_id)}"
    )


def drop_staging_sql(plan: ConsolidationPlan) -> str:
    return f"DROP TABLE IF EXISTS {table(plan.staging)}"


# ---- the lock ---------------------------------------------------------------------------------------


def lock_take_sql(
    name: str, owner: str, host: str, pid: int, now: datetime, expires: datetime, stale_owner: str | None
) -> str:
    """Take the lock when it is free, expired, already ours, or held by ``stale_owner`` (a dead process)."""
    takeover = f"T.expires_at <= {timestamp(now)} OR T.owner = {string(owner)}"
    if stale_owner is not None:
        takeover += f" OR T.owner = {string(stale_owner)}"
    values = {
        "name": string(name),
        "owner": string(owner),
        "host": string(host),
        "pid": str(int(pid)),
        "acquired_at": timestamp(now),
        "expires_at": timestamp(expires),
    }
    sets = ", ".join(f"{k} = S.{k}" for k in values if k != "name")
    return (
        f"MERGE {table(LOCKS)} AS T USING (SELECT {', '.join(f'{v} AS {k}' for k, v in values.items())}) AS S"
        f" ON T.name = S.name WHEN MATCHED AND ({takeover}) THEN UPDATE SET {sets}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(values)}) VALUES ({', '.join(f'S.{k}' for k in values)})"
    )


def lock_holder_sql(name: str, now: datetime) -> str:
    return (
        f"SELECT owner, host, pid, CAST(acquired_at AS STRING), CAST(expires_at AS STRING),"
        f" expires_at <= {timestamp(now)} FROM {table(LOCKS)} WHERE name = {string(name)}"
    )


def lock_guard_sql(name: str, owner: str) -> str:
    """TRUE while ``owner`` holds the lock (the fence a merge checks inside its transaction)."""
    return f"SELECT COUNT(*) = 1 FROM {table(LOCKS)} WHERE name = {string(name)} AND owner = {string(owner)}"


def lock_refresh_sql(name: str, owner: str, expires: datetime) -> str:
    return (
        f"UPDATE {table(LOCKS)} SET expires_at = {timestamp(expires)}"
        f" WHERE name = {string(name)} AND owner = {string(owner)}"
    )


def lock_release_sql(name: str, owner: str) -> str:
    return f"DELETE FROM {table(LOCKS)} WHERE name = {string(name)} AND owner = {string(owner)}"


# ---- messages ---------------------------------------------------------------------------------------


def classify_sql(
    stream: Stream, relation: str, committed: Position | None, upto: Position | None, index: str = "idx"
) -> str:
    """Per message of ``stream`` in ``relation`` (text columns ``cursor_text``, ``key<i>_text``):
    ``merged`` (at or before the committed watermark) and ``due`` (at or before this cycle's end).

    NULL in both when the message's position does not parse as the stream's types."""
    cursor = typed_column(f"m.{ident(CURSOR_TEXT)}", stream.cursor_type)
    keys = [typed_column(f"m.{ident(key_text(i))}", t) for i, t in enumerate(stream.key_types)]
    parsed = " AND ".join(f"{e} IS NOT NULL" for e in [cursor, *keys])
    merged = "FALSE" if committed is None else f"NOT {after(stream, committed, cursor, keys)}"
    due = "FALSE" if upto is None else f"NOT {after(stream, upto, cursor, keys)}"
    return (
        f"SELECT m.{ident(index)}, IF({parsed}, {merged}, NULL) AS merged, IF({parsed}, {due}, NULL) AS due"
        f" FROM {relation} AS m WHERE m.stream = {string(stream.name)}"
    )


# ---- BigQuery: one multi-statement transaction ------------------------------------------------------


@dataclass(frozen=True)
class TransactionPlan:
    """What the merge transaction does: its guards, the MERGE (when rows were staged), the moves."""

    cycle_id: str
    owner: str
    before: Mapping[str, Position | None]
    after: Mapping[str, Position]  # only the streams that move
    record: CycleRecord
    staged: bool
    now: datetime


def transaction_statements(plan: ConsolidationPlan, tx: TransactionPlan) -> list[tuple[str, str]]:
    """The statements of the merge transaction, in order: ``(kind, sql)`` with kind ``guard`` (a SELECT
    that must return TRUE, else the transaction is rolled back) or ``run``."""
    out: list[tuple[str, str]] = [("guard", lock_guard_sql(plan.lock_name, tx.owner))]
    for stream in plan.streams:
        if stream.name in tx.after:
            out.append(("guard", watermark_guard_sql(plan, stream, tx.before.get(stream.name))))
    if tx.staged:
        out.append(("run", record_cycle_sql(plan, tx.record)))
        out.append(("run", merge_sql(plan)))
    else:
        out.append(("run", record_only_sql(plan, tx.record)))
    for stream in plan.streams:
        if stream.name in tx.after:
            out.append(("run", move_watermark_sql(plan, stream, tx.after[stream.name], tx.cycle_id, tx.now)))
    return out


def bigquery_cycle_script(plan: ConsolidationPlan, tx: TransactionPlan) -> str:
    """The BigQuery script of the merge transaction: the same statements as the DuckDB transaction,
    in ``BEGIN TRANSACTION ... COMMIT TRANSACTION``, rolled back (and the job failed) on any error or
    failed guard. The target is created first when missing (DDL may not run inside a transaction)."""
    lines = [f"-- dataops consolidation {plan.source_name}, cycle {tx.cycle_id}"]
    if tx.staged:
        lines.append(f"{create_target_sql(plan)};")
    lines += ["BEGIN", "  BEGIN TRANSACTION;"]
    for kind, sql in transaction_statements(plan, tx):
        if kind == "guard":
            message = string(f"dataops: cycle {tx.cycle_id} stopped: {guard_reason(sql)}")
            lines += [f"  IF NOT ({sql}) THEN", f"    RAISE USING MESSAGE = {message};", "  END IF;"]
        else:
            lines.append(f"  {sql};")
    lines += [
        "  COMMIT TRANSACTION;",
        "EXCEPTION WHEN ERROR THEN",
        "  ROLLBACK TRANSACTION;",
        "  RAISE USING MESSAGE = @@error.message;",
        "END;",
    ]
    return "\n".join(lines) + "\n"


def guard_reason(sql: str) -> str:
    return "it no longer holds the lock" if table(LOCKS) in sql else "another cycle moved the watermark"
