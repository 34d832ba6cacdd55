"""``spec.consolidation`` checked against the warehouse's tables: every name resolved, every type known.

Pure: the caller reads the tables' column types (``name -> BigQuery type``) and passes them in; a
mistake raises :class:`ConsolidationError` whose message starts with the spec path, e.g.
``spec.consolidation.source.cursor: unknown column 'ts' in ops.ussd_operations (known: ...)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from controller.spec import Consolidation

META_DATASET = "_dataops"
STAGING_PARTS = "rows"
"""The staging pipeline writes ``<staging>/rows/part-<bucket>.parquet``."""
"""The dataset (DuckDB schema) of the watermarks, locks, cycle records and staging tables."""

ORDERABLE_TYPES = frozenset(
    {"STRING", "INT64", "NUMERIC", "BIGNUMERIC", "FLOAT64", "DATE", "DATETIME", "TIMESTAMP"}
)
"""Types a cursor or an id may have: scalars with a total order, the same on both engines."""

SCALAR_TYPES = ORDERABLE_TYPES | {"BOOL"}


class ConsolidationError(ValueError):
    """The spec and the warehouse disagree (a missing table, an unknown column): fix the spec or the data."""


@dataclass(frozen=True)
class Position:
    """Where a stream stands: the text of its cursor and of its tie-break columns, as the engine casts them.

    Positions are ordered by the typed values (``(cursor, key...)``), always in SQL, never as text."""

    cursor: str
    key: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "key": list(self.key)}

    def key_json(self) -> str:
        return json.dumps(list(self.key))

    @classmethod
    def from_text(cls, cursor: str, key_json: str) -> Position:
        return cls(cursor=cursor, key=tuple(str(k) for k in json.loads(key_json)))


@dataclass(frozen=True)
class Stream:
    """A table read in ``(cursor, key...)`` order, with a watermark of its own."""

    name: str
    table: str
    cursor: str
    key: tuple[str, ...]
    cursor_type: str
    key_types: tuple[str, ...]


@dataclass(frozen=True)
class JoinPlan:
    index: int
    table: str
    type: Literal["left", "inner"]
    on: tuple[str, ...]  # spelled as in the source table
    on_joined: tuple[str, ...]  # spelled as in the joined table
    columns: tuple[str, ...]  # spelled as in the joined table
    order: tuple[str, ...]  # the joined row kept when several share an ``on`` key: largest of these
    stream: Stream | None  # when the join has a cursor: late rows re-merge their operations


@dataclass(frozen=True)
class ConsolidationPlan:
    source_name: str  # "namespace/name" of the IngestionSource: names its watermarks and lock
    source: Stream
    source_columns: tuple[str, ...]
    joins: tuple[JoinPlan, ...]
    target: str
    target_key: tuple[str, ...]
    output_columns: tuple[str, ...]
    column_types: Mapping[str, str]  # output column -> BigQuery type
    staging: str
    topic: str
    subscription: str
    batch_size: int

    @property
    def id_column(self) -> str:
        return self.source.key[0]

    @property
    def cursor_column(self) -> str:
        return self.source.cursor

    @property
    def streams(self) -> tuple[Stream, ...]:
        return (self.source, *(j.stream for j in self.joins if j.stream is not None))

    def stream(self, name: str) -> Stream | None:
        return next((s for s in self.streams if s.name == name), None)

    @property
    def lock_name(self) -> str:
        return lock_name(self.source_name)


def lock_name(source_name: str) -> str:
    """The warehouse lock of an IngestionSource's consolidation."""
    return f"consolidation:{source_name}"


def safe_name(text: str) -> str:
    """``text`` as a table-name fragment: letters, digits and underscores only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def source_stream_name(table: str) -> str:
    return f"source:{table}"


def join_stream_name(table: str) -> str:
    return f"join:{table}"


class _Columns:
    """One table's columns, resolved case-insensitively (as BigQuery does) to their spelling."""

    def __init__(self, table: str, types: Mapping[str, str]) -> None:
        self.table = table
        self.types = dict(types)
        self._canon = {c.lower(): c for c in types}

    def resolve(self, name: str, path: str) -> str:
        found = self._canon.get(name.lower())
        if found is None:
            known = ", ".join(sorted(self.types, key=str.lower))
            raise ConsolidationError(f"{path}: unknown column {name!r} in {self.table} (known: {known})")
        return found

    def typed(self, name: str, path: str, allowed: frozenset[str], what: str) -> tuple[str, str]:
        column = self.resolve(name, path)
        kind = self.types[column]
        if kind not in allowed:
            raise ConsolidationError(
                f"{path}: column {column!r} of {self.table} is {kind}; {what} must be one of "
                f"{', '.join(sorted(allowed))}"
            )
        return column, kind


def _table(tables: Mapping[str, Mapping[str, str] | None], table: str, path: str) -> _Columns:
    types = tables.get(table)
    if types is None:
        raise ConsolidationError(f"{path}: table {table} does not exist in the warehouse")
    return _Columns(table, types)


def compile_plan(
    spec: Consolidation, source_name: str, tables: Mapping[str, Mapping[str, str] | None]
) -> ConsolidationPlan:
    """Check ``spec`` against ``tables`` (``table -> {column: BigQuery type}``, ``None`` when missing).

    The target may be missing (the first merge creates it); when it exists it must have every column
    the consolidation writes."""
    base = "spec.consolidation"
    src = _table(tables, spec.source.table, f"{base}.source.table")
    id_col, id_type = src.typed(spec.source.id, f"{base}.source.id", ORDERABLE_TYPES, "an id")
    cursor_col, cursor_type = src.typed(
        spec.source.cursor, f"{base}.source.cursor", ORDERABLE_TYPES, "a cursor"
    )
    source = Stream(
        name=source_stream_name(spec.source.table),
        table=spec.source.table,
        cursor=cursor_col,
        key=(id_col,),
        cursor_type=cursor_type,
        key_types=(id_type,),
    )
    output: dict[str, str] = {c: t for c, t in src.types.items()}
    owners = {c.lower(): spec.source.table for c in output}
    joins = [_join(spec, i, src, tables, output, owners) for i in range(len(spec.joins))]
    out_cols = _Columns(f"the consolidated row ({spec.target.table})", output)
    key = tuple(out_cols.resolve(k, f"{base}.target.key[{i}]") for i, k in enumerate(spec.target.key))
    if len({k.lower() for k in key}) != len(key):
        raise ConsolidationError(f"{base}.target.key: a column is listed twice ({', '.join(key)})")
    _check_target(tables.get(spec.target.table), spec.target.table, output)
    return ConsolidationPlan(
        source_name=source_name,
        source=source,
        source_columns=tuple(src.types),
        joins=tuple(joins),
        target=spec.target.table,
        target_key=key,
        output_columns=tuple(output),
        column_types=output,
        staging=f"{META_DATASET}.staging_{safe_name(source_name)}",
        topic=spec.topic,
        subscription=spec.subscription,
        batch_size=spec.batch_size,
    )


def _join(
    spec: Consolidation,
    index: int,
    src: _Columns,
    tables: Mapping[str, Mapping[str, str] | None],
    output: dict[str, str],
    owners: dict[str, str],
) -> JoinPlan:
    join = spec.joins[index]
    path = f"spec.consolidation.joins[{index}]"
    joined = _table(tables, join.table, f"{path}.table")
    on_src, on_joined, on_types = [], [], []
    for i, name in enumerate(join.on):
        s_col = src.resolve(name, f"{path}.on[{i}]")
        j_col = joined.resolve(name, f"{path}.on[{i}]")
        if src.types[s_col] != joined.types[j_col]:
            raise ConsolidationError(
                f"{path}.on[{i}]: {name!r} is {src.types[s_col]} in {src.table} but {joined.types[j_col]}"
                f" in {join.table}; the columns of a join must have one type"
            )
        if src.types[s_col] not in SCALAR_TYPES:
            raise ConsolidationError(f"{path}.on[{i}]: {name!r} is {src.types[s_col]}, not a scalar type")
        on_src.append(s_col)
        on_joined.append(j_col)
        on_types.append(joined.types[j_col])
    columns = []
    for i, name in enumerate(join.columns):
        col = joined.resolve(name, f"{path}.columns[{i}]")
        if col.lower() in owners:
            raise ConsolidationError(
                f"{path}.columns[{i}]: column {col!r} already comes from {owners[col.lower()]}; a column of"
                " the consolidated row comes from one table only"
            )
        owners[col.lower()] = join.table
        output[col] = joined.types[col]
        columns.append(col)
    stream = None
    order: list[str] = []
    if join.cursor is not None:
        cursor, cursor_type = joined.typed(join.cursor, f"{path}.cursor", ORDERABLE_TYPES, "a cursor")
        for i, t in enumerate(on_types):
            if t not in ORDERABLE_TYPES:
                raise ConsolidationError(f"{path}.on[{i}]: a join with a cursor needs orderable 'on' columns")
        stream = Stream(
            name=join_stream_name(join.table),
            table=join.table,
            cursor=cursor,
            key=tuple(on_joined),
            cursor_type=cursor_type,
            key_types=tuple(on_types),
        )
        order.append(cursor)
    order += [c for c in columns if joined.types[c] in ORDERABLE_TYPES and c not in order]
    return JoinPlan(
        index=index,
        table=join.table,
        type=join.type,
        on=tuple(on_src),
        on_joined=tuple(on_joined),
        columns=tuple(columns),
        order=tuple(order),
        stream=stream,
    )


def _check_target(found: Mapping[str, str] | None, table: str, output: Mapping[str, str]) -> None:
    if found is None:
        return
    have = {c.lower() for c in found}
    missing = [c for c in output if c.lower() not in have]
    if missing:
        raise ConsolidationError(
            f"spec.consolidation.target.table: {table} exists but lacks column(s) {', '.join(missing)}"
            f" (it has {', '.join(found)}); add them, or drop the table to let the next cycle create it"
        )


def stream_names(plan: ConsolidationPlan) -> Sequence[str]:
    return [s.name for s in plan.streams]
