"""The SQL of the TDS and BDS steps, generated from the spec. Pure: no connection, no clock.

Users write expressions in BigQuery dialect; every expression here is built in BigQuery dialect too,
checked by :func:`controller.expressions.parse_expression` (scalar only, known columns only) and
translated to DuckDB with sqlglot, so the same text can be rendered for BigQuery later
(``CheckedExpression.to_bigquery``). Statements are rendered over a relation name given by the caller
(an Arrow chunk registered in DuckDB, or a table).

Input columns are given as an ordered mapping ``name -> BigQuery type`` (``STRING``, ``INT64``, ...).
Every column a spec names is checked against them, and a mistake raises :class:`SpecSqlError` whose
message starts with the spec path, e.g. ``spec.transform.dedupe.key[0]: unknown column 'foo' (known: ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlglot import exp

from controller.expressions import ExpressionError, parse_expression
from controller.spec import Aggregate, Standardize, Transform

ROW_ID = "__dataops_row"
"""Extra column holding a row's position in the raw table: the last tie-breaker of the dedupe."""

TRIM_PATTERN = r"^\s+|\s+$"
"""Leading and trailing whitespace, for RE2 (both engines' regex library, so both trim alike).

BigQuery's TRIM(x) removes whitespace but DuckDB's removes spaces only, and TRIM(x, chars) is ~3x
slower in DuckDB than this REGEXP_REPLACE."""

STRING = "STRING"
METADATA_COLUMNS = ("ingestion_timestamp", "source_uri")
REPORT_DATE = "report_date"
_DERIVE_LAYER = "__dataops_derive"
_STANDARDIZED = "__dataops_standardized"


class SpecSqlError(ValueError):
    """A spec names a column the input does not have, or an expression that cannot run on it."""


def quote(name: str) -> str:
    """A DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def _bq_column(name: str) -> str:
    return exp.column(name, quoted=True).sql(dialect="bigquery")


def _bq_string(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="bigquery")


def _checked(sql: str, known: Sequence[str] | Mapping[str, str], path: str) -> str:
    """A BigQuery expression, checked against ``known`` columns, as DuckDB SQL."""
    try:
        return parse_expression(sql, known, what=path).to_duckdb()
    except ExpressionError as exc:
        raise SpecSqlError(str(exc)) from None


class _Names:
    """Column names resolved case-insensitively (as BigQuery does) to their declared spelling."""

    def __init__(self, names: Sequence[str], types: Mapping[str, str] | None = None) -> None:
        self.order: list[str] = list(names)
        self._canon = {n.lower(): n for n in names}
        self._types = {k.lower(): v for k, v in (types or {}).items()}

    def typed(self) -> dict[str, str]:
        """Every known column with its BigQuery type ('' when unknown), for type-aware translation."""
        return {n: self._types.get(n.lower(), "") for n in self.order}

    def resolve(self, name: str, path: str) -> str:
        found = self._canon.get(name.lower())
        if found is None:
            known = ", ".join(sorted(self.order, key=str.lower))
            raise SpecSqlError(f"{path}: unknown column {name!r} (known: {known})")
        return found

    def add(self, name: str, path: str, col_type: str | None = None) -> None:
        if name.lower() in self._canon:
            raise SpecSqlError(f"{path}: column {name!r} already exists; choose another name")
        self.order.append(name)
        self._canon[name.lower()] = name
        if col_type:
            self._types[name.lower()] = col_type


# ---- transform: standardize, derive, filter, dedupe ------------------------------------------------


@dataclass(frozen=True)
class TransformSql:
    """The compiled ``spec.transform``: DuckDB expressions, rendered over any relation name."""

    input_columns: tuple[str, ...]
    output_columns: tuple[str, ...]
    standardized: tuple[tuple[tuple[str, str], ...], ...]  # layers of (column, expression replacing it)
    derive_layers: tuple[tuple[tuple[str, str], ...], ...]  # each layer only reads earlier layers
    filter_expr: str | None
    dedupe_key: tuple[str, ...]
    dedupe_order: tuple[str, ...]

    def standardize_sql(self, relation: str) -> str:
        """Every column kept in place, the standardized ones replaced (extra columns pass through)."""
        sql = f"SELECT * FROM {quote(relation)}"
        source = quote(relation)
        for layer in self.standardized:
            replaced = ", ".join(f"{expr} AS {quote(col)}" for col, expr in layer)
            sql = f"SELECT * REPLACE ({replaced}) FROM {source}"
            source = f"({sql})"
        return sql

    def derive_sql(self, relation: str) -> str:
        """The derived columns appended after the input's, one projection per dependency layer."""
        ctes, last = self._derive_ctes(relation)
        return f"WITH {', '.join(ctes)} SELECT * FROM {last}" if ctes else f"SELECT * FROM {quote(relation)}"

    def _derive_ctes(self, relation: str) -> tuple[list[str], str]:
        ctes, source = [], quote(relation)
        for i, layer in enumerate(self.derive_layers, start=1):
            added = ", ".join(f"{sql} AS {quote(name)}" for name, sql in layer)
            name = quote(f"{_DERIVE_LAYER}_{i}")
            ctes.append(f"{name} AS (SELECT *, {added} FROM {source})")
            source = name
        return ctes, source

    def filter_sql(self, relation: str) -> str:
        """The rows where ``spec.transform.filter`` is TRUE (NULL or FALSE drop the row)."""
        where = f" WHERE ({self.filter_expr}) IS TRUE" if self.filter_expr else ""
        return f"SELECT * FROM {quote(relation)}{where}"

    def filtered_count_sql(self, relation: str) -> str:
        """How many rows :meth:`filter_sql` drops."""
        where = f" WHERE ({self.filter_expr}) IS NOT TRUE" if self.filter_expr else " WHERE FALSE"
        return f"SELECT count(*) AS rows_filtered FROM {quote(relation)}{where}"

    def select_sql(self, relation: str) -> str:
        """Standardize, derive and filter as one statement (the per-row part of the transform)."""
        ctes, last = self._derive_ctes(_STANDARDIZED)
        ctes.insert(0, f"{quote(_STANDARDIZED)} AS ({self.standardize_sql(relation)})")
        where = f" WHERE ({self.filter_expr}) IS TRUE" if self.filter_expr else ""
        return f"WITH {', '.join(ctes)} SELECT * FROM {last}{where}"

    def dedupe_sql(self, relation: str) -> str:
        """One row per key: the largest ``orderBy`` (NULLs lowest), then the later raw row; no row id."""
        if not self.dedupe_key:
            return f"SELECT * EXCLUDE ({quote(ROW_ID)}) FROM {quote(relation)} ORDER BY {quote(ROW_ID)}"
        key = ", ".join(quote(c) for c in self.dedupe_key)
        order = ", ".join(f"{quote(c)} DESC NULLS LAST" for c in self.dedupe_order)
        return (
            f"SELECT * EXCLUDE ({quote(ROW_ID)}) FROM {quote(relation)}"
            f" QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}, {quote(ROW_ID)} DESC) = 1"
            f" ORDER BY {quote(ROW_ID)}"
        )


def compile_transform(
    transform: Transform,
    columns: Mapping[str, str],
    *,
    ingestion_timestamp: str | None = None,
    source_uri: str | None = None,
) -> TransformSql:
    """Check ``spec.transform`` against the raw table's ``columns`` and compile it.

    ``ingestion_timestamp`` (ISO 8601) and ``source_uri`` fill the columns ``output.metadata`` adds."""
    if ROW_ID in columns:
        raise SpecSqlError(f"spec.load.table: the column name {ROW_ID!r} is reserved")
    names = _Names(list(columns), columns)
    standardized = _standardize(transform.standardize, columns, names)
    layers = _derive_layers(transform, names)
    if transform.output.metadata:
        layers.append(_metadata_layer(names, ingestion_timestamp, source_uri))
    filter_expr = (
        _checked(transform.filter, names.typed(), "spec.transform.filter")
        if transform.filter is not None
        else None
    )
    key: tuple[str, ...] = ()
    order: tuple[str, ...] = ()
    if transform.dedupe is not None:
        key = tuple(
            names.resolve(c, f"spec.transform.dedupe.key[{i}]") for i, c in enumerate(transform.dedupe.key)
        )
        order = tuple(
            names.resolve(c, f"spec.transform.dedupe.orderBy[{i}]")
            for i, c in enumerate(transform.dedupe.order_by)
        )
    out = transform.output
    for i, c in enumerate(out.cluster_by):
        names.resolve(c, f"spec.transform.output.clusterBy[{i}]")
    if out.partition_by is not None:
        names.resolve(out.partition_by.column, "spec.transform.output.partitionBy.column")
    return TransformSql(
        input_columns=tuple(columns),
        output_columns=tuple(names.order),
        standardized=tuple(tuple(layer) for layer in standardized if layer),
        derive_layers=tuple(tuple(layer) for layer in layers if layer),
        filter_expr=filter_expr,
        dedupe_key=key,
        dedupe_order=order,
    )


def _standardize(
    entries: Sequence[Standardize], columns: Mapping[str, str], names: _Names
) -> list[list[tuple[str, str]]]:
    """The entries that name a column (or '*'), applied in spec order, as layers of replacements.

    A column needs a second layer when title case applies to an expression rather than to the column:
    sqlglot's DuckDB INITCAP re-parses its argument's SQL, which only round-trips for a bare column."""
    steps: dict[str, list[str]] = {}
    for i, entry in enumerate(entries):
        path = f"spec.transform.standardize[{i}]"
        if entry.column == "*":
            targets = [c for c, t in columns.items() if t == STRING]
        else:
            targets = [names.resolve(entry.column, f"{path}.column")]
        for col in targets:
            bare = _bq_column(col)
            done = steps.setdefault(col, [bare])
            step = entry
            if entry.case == "title" and columns[col] == STRING:
                if entry.trim:
                    done[-1] = _trim(done[-1])
                    step = entry.model_copy(update={"trim": False})
                if done[-1] != bare:
                    done.append(bare)
            done[-1] = _standardize_one(done[-1], step, col, columns[col], path)
    layers: list[list[tuple[str, str]]] = []
    for col, done in steps.items():
        for depth, sql in enumerate(done):
            if depth == len(layers):
                layers.append([])
            if sql != _bq_column(col):
                layers[depth].append(
                    (col, _checked(sql, [col], f"spec.transform.standardize (column {col!r})"))
                )
    return layers


def _trim(value: str) -> str:
    return f"REGEXP_REPLACE({value}, {_bq_string(TRIM_PATTERN)}, '')"


def _standardize_one(value: str, entry: Standardize, column: str, col_type: str, path: str) -> str:
    """One entry on one column, in BigQuery SQL: trim, case, null markers, then fillNull."""
    if col_type != STRING:
        if entry.case is not None or entry.null_values:
            raise SpecSqlError(
                f"{path}: column {column!r} is {col_type}; case and nullValues apply to STRING columns only"
            )
        return (
            value
            if entry.fill_null is None
            else f"COALESCE({value}, {_fill_literal(entry.fill_null, column, col_type, path)})"
        )
    if entry.trim:
        value = _trim(value)
    if entry.case is not None:
        value = {"lower": "LOWER", "upper": "UPPER", "title": "INITCAP"}[entry.case] + f"({value})"
    markers = ([""] if entry.empty_as_null else []) + list(entry.null_values)
    for marker in dict.fromkeys(markers):
        value = f"NULLIF({value}, {_bq_string(marker)})"
    if entry.fill_null is not None:
        value = f"COALESCE({value}, {_fill_literal(entry.fill_null, column, col_type, path)})"
    return value


_NUMBER_TYPES = ("INT64", "FLOAT64", "NUMERIC", "BIGNUMERIC")


def _fill_literal(fill: str | int | float | bool | None, column: str, col_type: str, path: str) -> str:
    """``fillNull`` as a BigQuery literal of the column's type."""
    if col_type == STRING:
        return _bq_string(str(fill).lower() if isinstance(fill, bool) else str(fill))
    misfit = SpecSqlError(f"{path}.fillNull: {fill!r} does not fit column {column!r} ({col_type})")
    if isinstance(fill, bool):
        if col_type != "BOOL":
            raise misfit
        return "TRUE" if fill else "FALSE"
    if isinstance(fill, int | float):
        if col_type not in _NUMBER_TYPES:
            raise misfit
        return repr(fill)
    if col_type in (*_NUMBER_TYPES, "BOOL"):
        raise misfit
    return f"CAST({_bq_string(str(fill))} AS {col_type})"


def _derive_layers(transform: Transform, names: _Names) -> list[list[tuple[str, str]]]:
    """Derived columns grouped so that a column only reads columns of earlier layers."""
    layers: list[list[tuple[str, str]]] = [[]]
    in_layer: set[str] = set()
    for i, derive in enumerate(transform.derive):
        path = f"spec.transform.derive[{i}]"
        checked = parse_or_raise(derive.expr, names.typed(), f"{path}.expr")
        names.add(derive.name, f"{path}.name", parse_expression(derive.expr, names.typed()).type)
        if {c.lower() for c in checked[1]} & in_layer:
            layers.append([])
            in_layer = set()
        layers[-1].append((derive.name, checked[0]))
        in_layer.add(derive.name.lower())
    return layers


def parse_or_raise(
    sql: str, known: Sequence[str] | Mapping[str, str], path: str
) -> tuple[str, frozenset[str]]:
    """A user expression as DuckDB SQL, with the columns it reads; :class:`SpecSqlError` if wrong."""
    try:
        checked = parse_expression(sql, known, what=path)
    except ExpressionError as exc:
        raise SpecSqlError(str(exc)) from None
    return checked.to_duckdb(), checked.columns


def _metadata_layer(
    names: _Names, ingestion_timestamp: str | None, source_uri: str | None
) -> list[tuple[str, str]]:
    path = "spec.transform.output.metadata"
    if ingestion_timestamp is None or source_uri is None:
        raise SpecSqlError(f"{path}: needs the run's start time and source URI")
    for name in METADATA_COLUMNS:
        names.add(name, path)
    stamp = _checked(f"TIMESTAMP {_bq_string(ingestion_timestamp)}", [], f"{path} (ingestion_timestamp)")
    return [(METADATA_COLUMNS[0], stamp), (METADATA_COLUMNS[1], _checked(_bq_string(source_uri), [], path))]


# ---- aggregate --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateSql:
    """One compiled ``spec.aggregate[i]``: KPIs per group, rendered over any relation name."""

    group_by: tuple[str, ...]
    metrics: tuple[tuple[str, str], ...]  # (name, DuckDB aggregate expression)
    input_columns: tuple[str, ...]  # the columns it reads, in input order (at least one, for COUNT(*))
    report_date: str | None = None  # DuckDB DATE expression

    @property
    def output_columns(self) -> tuple[str, ...]:
        extra = (REPORT_DATE,) if self.report_date is not None else ()
        return (*self.group_by, *(name for name, _ in self.metrics), *extra)

    def sql(self, relation: str) -> str:
        """groupBy columns, then metrics (then ``report_date``), ordered by the groupBy columns."""
        select = [quote(c) for c in self.group_by]
        select += [f"{sql} AS {quote(name)}" for name, sql in self.metrics]
        if self.report_date is not None:
            select.append(f"{self.report_date} AS {quote(REPORT_DATE)}")
        text = f"SELECT {', '.join(select)} FROM {quote(relation)}"
        if self.group_by:
            groups = ", ".join(quote(c) for c in self.group_by)
            text += f" GROUP BY {groups} ORDER BY {groups}"
        return text


_AGG_SQL = {
    "sum": "SUM({})",
    "count": "COUNT({})",
    "count_distinct": "COUNT(DISTINCT {})",
    "avg": "AVG({})",
    "min": "MIN({})",
    "max": "MAX({})",
}


def compile_aggregate(
    aggregate: Aggregate, columns: Sequence[str], index: int, report_date: str | None = None
) -> AggregateSql:
    """Check ``spec.aggregate[index]`` against the TDS table's ``columns`` and compile it.

    ``report_date`` (ISO date) fills the ``report_date`` column when the aggregate asks for one."""
    path = f"spec.aggregate[{index}]"
    names = _Names(list(columns))
    group_by = tuple(names.resolve(c, f"{path}.groupBy[{i}]") for i, c in enumerate(aggregate.group_by))
    used = {c.lower() for c in group_by}
    outputs = _Names([])
    for i, c in enumerate(group_by):
        outputs.add(c, f"{path}.groupBy[{i}]")
    metrics = []
    for i, metric in enumerate(aggregate.metrics):
        where = f"{path}.metrics[{i}]"
        outputs.add(metric.name, f"{where}.name")
        if metric.column is not None:
            arg = quote(names.resolve(metric.column, f"{where}.column"))
            used.add(metric.column.lower())
        elif metric.expr is not None:
            arg, read = parse_or_raise(metric.expr, columns, f"{where}.expr")
            used |= {c.lower() for c in read}
        else:
            arg = "*"
        metrics.append((metric.name, _AGG_SQL[metric.agg].format(arg)))
    if aggregate.report_date:
        if report_date is None:
            raise SpecSqlError(f"{path}.reportDate: needs the run's start date")
        outputs.add(REPORT_DATE, f"{path}.reportDate")
    return AggregateSql(
        group_by=group_by,
        metrics=tuple(metrics),
        input_columns=tuple(c for c in columns if c.lower() in used) or tuple(columns[:1]),
        report_date=_checked(f"DATE {_bq_string(report_date)}", [], f"{path}.reportDate")
        if aggregate.report_date and report_date is not None
        else None,
    )


def bucket_sql(key: Sequence[str], buckets: int, relation: str) -> str:
    """Each row's bucket, ``hash(key) % buckets``: the same key lands in the same bucket everywhere."""
    cols = ", ".join(quote(c) for c in key)
    return f"SELECT CAST(hash({cols}) % {int(buckets)} AS INTEGER) AS bucket FROM {quote(relation)}"
