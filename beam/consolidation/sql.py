"""Every statement of a consolidation cycle, written once in BigQuery dialect. Pure: text in, text out.

A statement is a :class:`Sql`: BigQuery text whose values are named query parameters (``@cycle_id``),
and those values. The DuckDB warehouse runs :func:`to_duckdb` of the same text (sqlglot transpiles
it, keeping the engines' semantics where they differ, e.g. where NULLs sort; ``@name`` becomes
``$name``); BigQuery runs the text as it is, the MERGE and the watermark moves wrapped by
:func:`bigquery_cycle_script` in one multi-statement transaction. The text depends on the plan only,
never on values, so each translation is done once per process.

Identifiers are quoted; every name comes from a :class:`~beam.consolidation.plan.ConsolidationPlan`,
whose names were checked against the tables.

A position ``(cursor, key...)`` is compared as typed values: a watermark's text is cast back to the
column's type (``CAST(@since_cursor AS DATETIME)``) and compared lexicographically, spelled out with
``>``/``=`` because BigQuery has no row-value comparison.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

Value = str | int | datetime | None


@dataclass(frozen=True)
class Sql:
    """One statement: BigQuery text with ``@name`` parameters, and their values."""

    text: str
    params: Mapping[str, Value] = field(default_factory=dict)

    @property
    def duckdb(self) -> str:
        return to_duckdb(self.text)


def key_text(i: int) -> str:
    return f"key{i}_text"


# ---- quoting and parameters -------------------------------------------------------------------------


def ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="bigquery")


def table(name: str) -> str:
    dataset, _, tbl = name.partition(".")
    return f"{ident(dataset)}.{ident(tbl)}"


def cast_type(bq_type: str) -> str:
    """The type a text is cast to: NUMERIC keeps BigQuery's precision (DuckDB's bare DECIMAL would not)."""
    return {"NUMERIC": "NUMERIC(38, 9)", "BIGNUMERIC": "BIGNUMERIC"}.get(bq_type, bq_type)


def typed(expr: str, bq_type: str, safe: bool = False) -> str:
    """A text expression (a parameter or a column) as ``bq_type``; ``safe``: NULL where it is not one."""
    if bq_type == "STRING":
        return expr
    return f"{'SAFE_CAST' if safe else 'CAST'}({expr} AS {cast_type(bq_type)})"


@lru_cache(maxsize=1024)
def to_duckdb(sql: str) -> str:
    """The same statement for DuckDB (one statement in, one out)."""
    out = sqlglot.transpile(sql, read="bigquery", write="duckdb")
    if len(out) != 1:
        raise ValueError(f"expected one statement, got {len(out)}")
    return out[0]


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# ---- positions --------------------------------------------------------------------------------------


def after(
    stream: Stream, position: Position | None, cursor: str, keys: Sequence[str], prefix: str
) -> tuple[str, dict[str, Value]]:
    """``(cursor, keys...) > position`` over typed SQL expressions, the position as parameters
    ``@<prefix>_cursor``, ``@<prefix>_key<i>``; TRUE when there is no position."""
    if position is None:
        return "TRUE", {}
    params: dict[str, Value] = {f"{prefix}_cursor": position.cursor}
    inner = ""
    for i in reversed(range(len(keys))):
        name = f"{prefix}_key{i}"
        params[name] = position.key[i]
        lit = typed(f"@{name}", stream.key_types[i])
        expr = keys[i]
        inner = f"{expr} > {lit}" if not inner else f"({expr} > {lit} OR ({expr} = {lit} AND {inner}))"
    lit = typed(f"@{prefix}_cursor", stream.cursor_type)
    return f"({cursor} > {lit} OR ({cursor} = {lit} AND {inner}))", params


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


def meta_ddl() -> list[Sql]:
    """The dataset and tables a cycle keeps its state in (idempotent)."""
    return [
        Sql(f"CREATE SCHEMA IF NOT EXISTS {ident(META_DATASET)}"),
        Sql(
            f"CREATE TABLE IF NOT EXISTS {table(WATERMARKS)} (source_name STRING NOT NULL, stream STRING NOT NULL,"
            " table_name STRING, cursor_text STRING, key_json STRING, cycle_id STRING, updated_at TIMESTAMP)"
        ),
        Sql(
            f"CREATE TABLE IF NOT EXISTS {table(CYCLES)} (source_name STRING NOT NULL, cycle_id STRING NOT NULL,"
            " started_at TIMESTAMP, committed_at TIMESTAMP, extracted INT64, rejoined INT64, staged INT64,"
            " inserted INT64, updated INT64, unchanged INT64, watermark_before STRING, watermark_after STRING)"
        ),
        Sql(
            f"CREATE TABLE IF NOT EXISTS {table(LOCKS)} (name STRING NOT NULL, owner STRING, host STRING,"
            " pid INT64, acquired_at TIMESTAMP, expires_at TIMESTAMP)"
        ),
    ]


def watermarks_sql(plan: ConsolidationPlan) -> Sql:
    return Sql(
        f"SELECT stream, cursor_text, key_json FROM {table(WATERMARKS)} WHERE source_name = @source_name",
        {"source_name": plan.source_name},
    )


def watermark_guard_sql(plan: ConsolidationPlan, stream: Stream, expected: Position | None) -> Sql:
    """TRUE when the stream's stored watermark is still ``expected`` (nobody moved it meanwhile)."""
    where = f"FROM {table(WATERMARKS)} WHERE source_name = @source_name AND stream = @stream"
    params: dict[str, Value] = {"source_name": plan.source_name, "stream": stream.name}
    if expected is None:
        return Sql(f"SELECT COUNT(*) = 0 {where}", params)
    params |= {"cursor_text": expected.cursor, "key_json": expected.key_json()}
    return Sql(f"SELECT COUNT(*) = 1 {where} AND cursor_text = @cursor_text AND key_json = @key_json", params)


def move_watermark_sql(
    plan: ConsolidationPlan, stream: Stream, position: Position, cycle_id: str, now: datetime
) -> Sql:
    params: dict[str, Value] = {
        "source_name": plan.source_name,
        "stream": stream.name,
        "table_name": stream.table,
        "cursor_text": position.cursor,
        "key_json": position.key_json(),
        "cycle_id": cycle_id,
        "updated_at": utc(now),
    }
    row = ", ".join(
        f"CAST(@{k} AS TIMESTAMP) AS {k}" if k == "updated_at" else f"@{k} AS {k}" for k in params
    )
    sets = ", ".join(f"{k} = S.{k}" for k in params if k not in ("source_name", "stream"))
    return Sql(
        f"MERGE {table(WATERMARKS)} AS T USING (SELECT {row}) AS S"
        " ON T.source_name = S.source_name AND T.stream = S.stream"
        f" WHEN MATCHED THEN UPDATE SET {sets}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(params)}) VALUES ({', '.join(f'S.{k}' for k in params)})",
        params,
    )


# ---- extract ----------------------------------------------------------------------------------------


def window_sql(stream: Stream, since: Position | None, limit: int) -> Sql:
    """The next ``limit`` distinct positions of ``stream`` after ``since``, in order, as text."""
    cursor, keys = _columns_of(stream, "s")
    groups = ", ".join([cursor, *keys])
    later, params = after(stream, since, cursor, keys, "since")
    return Sql(
        f"SELECT {_position_select(stream, 's')} FROM {table(stream.table)} AS s"
        f" WHERE {_not_null(stream, 's')} AND {later}"
        f" GROUP BY {groups} ORDER BY {groups} LIMIT {int(limit)}",
        params,
    )


def rejoin_sql(
    plan: ConsolidationPlan, join: JoinPlan, since: Position | None, upto: Position, merged: Position
) -> Sql:
    """Operations already merged (at or before ``merged``) whose joined rows moved into ``(since, upto]``.

    One row per operation: its id, and the position of the latest of those joined rows; in the order
    of those positions."""
    stream = join.stream
    if stream is None:
        raise ValueError(f"join {join.table} has no cursor")
    s_cursor, s_keys = _columns_of(plan.source, "s")
    j_cursor, j_keys = _columns_of(stream, "j")
    later, p1 = after(stream, since, j_cursor, j_keys, "since")
    beyond, p2 = after(stream, upto, j_cursor, j_keys, "upto")
    unmerged, p3 = after(plan.source, merged, s_cursor, s_keys, "merged")
    on = " AND ".join(f"s.{ident(a)} = j.{ident(b)}" for a, b in zip(join.on, join.on_joined, strict=True))
    order = ", ".join(f"{c} DESC" for c in [j_cursor, *j_keys])
    return Sql(
        f"SELECT CAST(s.{ident(plan.id_column)} AS STRING) AS {ident(ID_TEXT)}, {_position_select(stream, 'j')}"
        f" FROM {table(plan.source.table)} AS s JOIN {table(stream.table)} AS j ON {on}"
        f" WHERE {_not_null(plan.source, 's')} AND {_not_null(stream, 'j')}"
        f" AND {later} AND NOT {beyond} AND NOT {unmerged}"
        f" QUALIFY ROW_NUMBER() OVER (PARTITION BY s.{ident(plan.id_column)} ORDER BY {order}) = 1"
        f" ORDER BY {', '.join([j_cursor, *j_keys, f's.{ident(plan.id_column)}'])}",
        p1 | p2 | p3,
    )


# ---- the staging rows (the Beam pipeline runs these over chunks) ------------------------------------


def read_operations_sql(plan: ConsolidationPlan, relation: str, upto: Position | None) -> Sql:
    """The source rows of the ids in ``relation`` (column ``id_text``) at or before ``upto``."""
    s_cursor, s_keys = _columns_of(plan.source, "s")
    cols = ", ".join(f"s.{ident(c)}" for c in plan.source_columns)
    ids = typed(f"c.{ident(ID_TEXT)}", plan.source.key_types[0], safe=True)
    beyond, params = after(plan.source, upto, s_cursor, s_keys, "upto")
    return Sql(
        f"SELECT {cols} FROM {table(plan.source.table)} AS s"
        f" WHERE s.{ident(plan.id_column)} IN (SELECT {ids} FROM {relation} AS c) AND NOT {beyond}",
        params,
    )


def join_rows_sql(plan: ConsolidationPlan, relation: str) -> Sql:
    """Source rows in ``relation`` with the columns of every join (one joined row per ``on`` key)."""
    select = [f"o.{ident(c)}" for c in plan.source_columns]
    joins = []
    for j in plan.joins:
        alias = f"j{j.index}"
        select += [f"{alias}.{ident(c)} AS {ident(c)}" for c in j.columns]
        picked = ", ".join(ident(c) for c in dict.fromkeys([*j.on_joined, *j.columns]))
        order = ", ".join(f"{ident(c)} DESC" for c in j.order)
        sub = (
            f"SELECT {picked} FROM {table(j.table)}"
            f" WHERE {ident(j.on_joined[0])} IN (SELECT {ident(j.on[0])} FROM {relation})"
            f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(ident(c) for c in j.on_joined)}"
            f"{' ORDER BY ' + order if order else ''}) = 1"
        )
        on = " AND ".join(
            f"o.{ident(a)} = {alias}.{ident(b)}" for a, b in zip(j.on, j.on_joined, strict=True)
        )
        kind = "LEFT JOIN" if j.type == "left" else "JOIN"
        joins.append(f" {kind} ({sub}) AS {alias} ON {on}")
    return Sql(f"SELECT {', '.join(select)} FROM {relation} AS o{''.join(joins)}")


def dedupe_latest_sql(plan: ConsolidationPlan, relation: str) -> Sql:
    """One row per target key: the latest by ``(cursor, id)``."""
    key = ", ".join(ident(k) for k in plan.target_key)
    latest = f"{ident(plan.cursor_column)} DESC, {ident(plan.id_column)} DESC"
    return Sql(
        f"SELECT * FROM {relation} WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {latest}) = 1"
    )


# ---- merge ------------------------------------------------------------------------------------------


def _key_match(plan: ConsolidationPlan) -> str:
    return " AND ".join(f"T.{ident(k)} IS NOT DISTINCT FROM S.{ident(k)}" for k in plan.target_key)


def _newer(plan: ConsolidationPlan) -> str:
    """The staged row is at least as recent as the target's (a re-merge of the same row updates it)."""
    c, i = ident(plan.cursor_column), ident(plan.id_column)
    return f"COALESCE(S.{c} > T.{c} OR (S.{c} = T.{c} AND S.{i} >= T.{i}) OR T.{c} IS NULL, FALSE)"


def create_target_sql(plan: ConsolidationPlan) -> list[Sql]:
    """The target's dataset and table, shaped like the staging table, when missing."""
    cols = ", ".join(ident(c) for c in plan.output_columns)
    return [
        Sql(f"CREATE SCHEMA IF NOT EXISTS {ident(plan.target.partition('.')[0])}"),
        Sql(
            f"CREATE TABLE IF NOT EXISTS {table(plan.target)} AS SELECT {cols} FROM {table(plan.staging)} LIMIT 0"
        ),
    ]


def merge_sql(plan: ConsolidationPlan) -> Sql:
    """Staging into target on its key: matched and not older -> update, not matched -> insert."""
    cols = [ident(c) for c in plan.output_columns]
    keys = {ident(k) for k in plan.target_key}
    sets = ", ".join(f"{c} = S.{c}" for c in cols if c not in keys)
    return Sql(
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


def _record_params(plan: ConsolidationPlan, record: CycleRecord) -> dict[str, Value]:
    return {
        "source_name": plan.source_name,
        "cycle_id": record.cycle_id,
        "started_at": utc(record.started_at),
        "committed_at": utc(record.committed_at),
        "extracted": int(record.extracted),
        "rejoined": int(record.rejoined),
        "staged": int(record.staged),
        "watermark_before": _watermarks_json(record.watermark_before),
        "watermark_after": _watermarks_json(record.watermark_after),
    }


_RECORD_HEAD = (
    "@source_name, @cycle_id, CAST(@started_at AS TIMESTAMP), CAST(@committed_at AS TIMESTAMP),"
    " CAST(@extracted AS INT64), CAST(@rejoined AS INT64), CAST(@staged AS INT64)"
)


def record_cycle_sql(plan: ConsolidationPlan, record: CycleRecord) -> Sql:
    """The cycle's record, with the MERGE's counts computed on the target before the MERGE runs."""
    keys = ", ".join(ident(k) for k in plan.target_key)
    c, i = ident(plan.cursor_column), ident(plan.id_column)
    counts = (
        f"SELECT COUNTIF(T.{PRESENT} IS NULL) AS inserted, COUNTIF(T.{PRESENT} AND {_newer(plan)}) AS updated,"
        f" COUNTIF(T.{PRESENT}) AS matched FROM {table(plan.staging)} AS S LEFT JOIN"
        f" (SELECT {keys}, {c}, {i}, TRUE AS {PRESENT} FROM {table(plan.target)}) AS T ON {_key_match(plan)}"
    )
    return Sql(
        f"INSERT INTO {table(CYCLES)} ({_CYCLE_COLUMNS}) SELECT {_RECORD_HEAD}, n.inserted, n.updated,"
        f" n.matched - n.updated, @watermark_before, @watermark_after FROM ({counts}) AS n",
        _record_params(plan, record),
    )


def record_only_sql(plan: ConsolidationPlan, record: CycleRecord) -> Sql:
    """The cycle's record when nothing was staged (only the watermarks of joins move)."""
    return Sql(
        f"INSERT INTO {table(CYCLES)} ({_CYCLE_COLUMNS}) SELECT {_RECORD_HEAD}, 0, 0, 0,"
        " @watermark_before, @watermark_after",
        _record_params(plan, record),
    )


def cycle_counts_sql(plan: ConsolidationPlan, cycle_id: str) -> Sql:
    return Sql(
        f"SELECT inserted, updated, unchanged FROM {table(CYCLES)}"
        " WHERE source_name = @source_name AND cycle_id = @cycle_id",
        {"source_name": plan.source_name, "cycle_id": cycle_id},
    )


def drop_staging_sql(plan: ConsolidationPlan) -> Sql:
    return Sql(f"DROP TABLE IF EXISTS {table(plan.staging)}")


# ---- the lock ---------------------------------------------------------------------------------------


def lock_take_sql(
    name: str, owner: str, host: str, pid: int, now: datetime, expires: datetime, stale_owner: str | None
) -> Sql:
    """Take the lock when it is free, expired, already ours, or held by ``stale_owner`` (a dead process)."""
    params: dict[str, Value] = {
        "name": name,
        "owner": owner,
        "host": host,
        "pid": int(pid),
        "acquired_at": utc(now),
        "expires_at": utc(expires),
    }
    takeover = "T.expires_at <= S.acquired_at OR T.owner = S.owner"
    if stale_owner is not None:
        params["stale_owner"] = stale_owner
        takeover += " OR T.owner = @stale_owner"
    row = ", ".join(
        f"CAST(@{k} AS TIMESTAMP) AS {k}"
        if k.endswith("_at")
        else (f"CAST(@{k} AS INT64) AS {k}" if k == "pid" else f"@{k} AS {k}")
        for k in params
        if k != "stale_owner"
    )
    cols = [k for k in params if k != "stale_owner"]
    sets = ", ".join(f"{k} = S.{k}" for k in cols if k != "name")
    return Sql(
        f"MERGE {table(LOCKS)} AS T USING (SELECT {row}) AS S"
        f" ON T.name = S.name WHEN MATCHED AND ({takeover}) THEN UPDATE SET {sets}"
        f" WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join(f'S.{k}' for k in cols)})",
        params,
    )


def lock_holder_sql(name: str, now: datetime) -> Sql:
    return Sql(
        "SELECT owner, host, pid, CAST(acquired_at AS STRING), CAST(expires_at AS STRING),"
        f" expires_at <= CAST(@now AS TIMESTAMP) FROM {table(LOCKS)} WHERE name = @name",
        {"name": name, "now": utc(now)},
    )


def lock_guard_sql(name: str, owner: str) -> Sql:
    """TRUE while ``owner`` holds the lock (the fence a merge checks inside its transaction)."""
    return Sql(
        f"SELECT COUNT(*) = 1 FROM {table(LOCKS)} WHERE name = @lock_name AND owner = @lock_owner",
        {"lock_name": name, "lock_owner": owner},
    )


def lock_refresh_sql(name: str, owner: str, expires: datetime) -> Sql:
    return Sql(
        f"UPDATE {table(LOCKS)} SET expires_at = CAST(@expires_at AS TIMESTAMP) WHERE name = @name AND owner = @owner",
        {"name": name, "owner": owner, "expires_at": utc(expires)},
    )


def lock_release_sql(name: str, owner: str) -> Sql:
    return Sql(
        f"DELETE FROM {table(LOCKS)} WHERE name = @name AND owner = @owner", {"name": name, "owner": owner}
    )


# ---- messages ---------------------------------------------------------------------------------------


def classify_sql(
    stream: Stream, relation: str, committed: Position | None, upto: Position | None, index: str = "idx"
) -> Sql:
    """Per message of ``stream`` in ``relation`` (text columns ``cursor_text``, ``key<i>_text``):
    ``merged`` (at or before the committed watermark) and ``due`` (at or before this cycle's end).

    NULL in both when the message's position does not parse as the stream's types."""
    cursor = typed(f"m.{ident(CURSOR_TEXT)}", stream.cursor_type, safe=True)
    keys = [typed(f"m.{ident(key_text(i))}", t, safe=True) for i, t in enumerate(stream.key_types)]
    parsed = " AND ".join(f"{e} IS NOT NULL" for e in [cursor, *keys])
    beyond_committed, p1 = after(stream, committed, cursor, keys, "committed")
    beyond_upto, p2 = after(stream, upto, cursor, keys, "upto")
    merged = "FALSE" if committed is None else f"NOT {beyond_committed}"
    due = "FALSE" if upto is None else f"NOT {beyond_upto}"
    return Sql(
        f"SELECT m.{ident(index)}, IF({parsed}, {merged}, NULL) AS merged, IF({parsed}, {due}, NULL) AS due"
        f" FROM {relation} AS m WHERE m.stream = @stream",
        {"stream": stream.name} | p1 | p2,
    )


# ---- the merge transaction, and BigQuery's script of it ---------------------------------------------


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


@dataclass(frozen=True)
class Step:
    kind: str  # "guard": a SELECT that must return TRUE, else roll back | "run"
    sql: Sql
    reason: str = ""  # for a guard: what its failure means


def transaction_steps(plan: ConsolidationPlan, tx: TransactionPlan) -> list[Step]:
    """The statements of the merge transaction, in order."""
    lost = "it no longer holds the lock"
    moved = "another cycle moved the watermark"
    out = [Step("guard", lock_guard_sql(plan.lock_name, tx.owner), lost)]
    moving = [s for s in plan.streams if s.name in tx.after]
    out += [Step("guard", watermark_guard_sql(plan, s, tx.before.get(s.name)), moved) for s in moving]
    if tx.staged:
        out += [Step("run", record_cycle_sql(plan, tx.record)), Step("run", merge_sql(plan))]
    else:
        out.append(Step("run", record_only_sql(plan, tx.record)))
    out += [Step("run", move_watermark_sql(plan, s, tx.after[s.name], tx.cycle_id, tx.now)) for s in moving]
    return out


_PARAM = re.compile(r"(?<![@\w])@([A-Za-z_][A-Za-z0-9_]*)")


def _renamed(sql: Sql, prefix: str) -> Sql:
    """The statement with its parameters renamed ``@<prefix>_<name>`` (statements of one script share
    one parameter namespace)."""
    text = _PARAM.sub(
        lambda m: f"@{prefix}_{m.group(1)}" if m.group(1) in sql.params else m.group(0), sql.text
    )
    return Sql(text, {f"{prefix}_{k}": v for k, v in sql.params.items()})


def bigquery_cycle_script(plan: ConsolidationPlan, tx: TransactionPlan) -> Sql:
    """The BigQuery script of the merge transaction: the same statements as the DuckDB transaction in
    ``BEGIN TRANSACTION ... COMMIT TRANSACTION``, rolled back (and the job failed) on any error or
    failed guard. The target is created first when missing (no DDL inside a transaction)."""
    lines = [f"-- dataops consolidation {plan.source_name}: MERGE and watermarks in one transaction"]
    params: dict[str, Value] = {}
    if tx.staged:
        for n, ddl in enumerate(create_target_sql(plan)):
            lines.append(f"{ddl.text};")
            params |= _renamed(ddl, f"d{n}").params
    lines += ["BEGIN", "  BEGIN TRANSACTION;"]
    for n, step in enumerate(transaction_steps(plan, tx)):
        sql = _renamed(step.sql, f"s{n}")
        params |= sql.params
        if step.kind == "guard":
            message = exp.Literal.string(f"dataops: the cycle stopped: {step.reason}").sql(dialect="bigquery")
            lines += [f"  IF NOT ({sql.text}) THEN", f"    RAISE USING MESSAGE = {message};", "  END IF;"]
        else:
            lines.append(f"  {sql.text};")
    lines += [
        "  COMMIT TRANSACTION;",
        "EXCEPTION WHEN ERROR THEN",
        "  ROLLBACK TRANSACTION;",
        "  RAISE USING MESSAGE = @@error.message;",
        "END;",
    ]
    return Sql("\n".join(lines) + "\n", params)
