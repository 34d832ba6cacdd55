"""The SQL of the TDS and BDS steps, generated from the spec. Pure: no connection, no clock.

Users write expressions in BigQuery dialect; every expression here is built in BigQuery dialect too,
checked by :func:`controller.expressions.parse_expression` (scalar only, known columns only) and
translated to DuckDB with sqlglot, so the same text can be rendered for BigQuery later
(``CheckedExpression.to_bigquery``). Statements are rendered over a relation name given by the caller
(an Arrow chunk registered in DuckDB, or a table).

The transform's order is fixed: standardize -> lookups (joins with reference data, in spec order) ->
derive (which may read looked-up columns, and earlier derived ones) -> filter -> dedupe.

Input columns are given as an ordered mapping ``name -> BigQuery type`` (``STRING``, ``INT64``, ...).
Every column a spec names is checked against them, and a mistake raises :class:`SpecSqlError` whose
message starts with the spec path, e.g. ``spec.transform.dedupe.key[0]: unknown column 'foo' (known: ...)``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import duckdb
from sqlglot import exp

from controller.expressions import ExpressionError, parse_expression
from controller.spec import Aggregate, Lookup, Standardize, Transform

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
_LOOKED_UP = "__dataops_lookup"
_KEY = "__dataops_key"
_ORDER = "__dataops_order"
_MATCH = "__dataops_match"
REASON_COLUMN = "__dataops_reason"
"""The column :meth:`TransformSql.route_sql` adds: why a row leaves (NULL: it stays)."""

FILTERED = "filtered"
"""The rejects' reason for a row the filter dropped (kept with ``keepFiltered: true``)."""

REJECT_COLUMNS = ("reason", "run", "rejected_at", "raw_row")
"""The columns ``<output table>_rejects`` has before the row's own: why, which run, when, which raw row."""

KEY_TYPES = {
    "STRING": "VARCHAR",
    "INT64": "BIGINT",
    "NUMERIC": "DECIMAL(38, 9)",
    "FLOAT64": "DOUBLE",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "DATETIME": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMPTZ",
}
"""The DuckDB type both sides of a lookup key are cast to, per BigQuery type: equal keys hash alike."""


class SpecSqlError(ValueError):
    """A spec names a column the input does not have, or an expression that cannot run on it."""


def quote(name: str) -> str:
    """A DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def _bq_column(name: str) -> str:
    return exp.column(name, quoted=True).sql(dialect="bigquery")


def _bq_string(value: str) -> str:
    return exp.Literal.string(value).sql(dialect="bigquery")


def literal(value: str) -> str:
    """A DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


def _checked(sql: str, known: Sequence[str] | Mapping[str, str], path: str) -> str:
    """A BigQuery expression, checked against ``known`` columns, as DuckDB SQL."""
    try:
        return _one_duckdb_select(parse_expression(sql, known, what=path).to_duckdb(), sql, path)
    except ExpressionError as exc:
        raise SpecSqlError(str(exc)) from None


_PARSER_LOCK = threading.Lock()


@functools.cache
def _parser() -> duckdb.DuckDBPyConnection:
    """An empty in-memory DuckDB, only ever asked to parse (never to run) an expression."""
    return duckdb.connect()


def _one_duckdb_select(duck: str, sql: str, path: str) -> str:
    """The local engine's own parser agrees: ``SELECT <expression>`` is one SELECT statement."""
    try:
        with _PARSER_LOCK:
            statements = _parser().extract_statements(f"SELECT {duck}")
    except duckdb.Error as exc:
        raise SpecSqlError(f"{path} {sql!r} does not parse on DuckDB: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise SpecSqlError(f"{path} {sql!r}: one expression only")
    return duck


class _Names:
    """Column names resolved case-insensitively (as BigQuery does) to their declared spelling."""

    def __init__(self, names: Sequence[str], types: Mapping[str, str] | None = None, where: str = "") -> None:
        self.order: list[str] = list(names)
        self._canon = {n.lower(): n for n in names}
        self._types = {k.lower(): v for k, v in (types or {}).items()}
        self._where = f" in {where}" if where else ""

    def typed(self) -> dict[str, str]:
        """Every known column with its BigQuery type ('' when unknown), for type-aware translation."""
        return {n: self._types.get(n.lower(), "") for n in self.order}

    def type_of(self, name: str) -> str:
        return self._types.get(name.lower(), "")

    def resolve(self, name: str, path: str) -> str:
        found = self._canon.get(name.lower())
        if found is None:
            known = ", ".join(sorted(self.order, key=str.lower))
            raise SpecSqlError(f"{path}: unknown column {name!r}{self._where} (known: {known})")
        return found

    def add(self, name: str, path: str, col_type: str | None = None) -> None:
        if name.lower() in self._canon:
            raise SpecSqlError(f"{path}: column {name!r} already exists; choose another name")
        self.order.append(name)
        self._canon[name.lower()] = name
        if col_type:
            self._types[name.lower()] = col_type


# ---- lookups: reference data joined to each record -------------------------------------------------


@dataclass(frozen=True)
class LookupSql:
    """One compiled ``spec.transform.lookups[i]``: its reference prepared, checked and joined (DuckDB SQL).

    A *prepared* reference holds the key columns as ``__dataops_key_<j>`` (cast to :data:`KEY_TYPES`),
    the brought columns under their output names, the ``orderBy`` columns and the row id; rows whose
    key has a NULL are left out (a NULL key matches nothing)."""

    index: int
    label: str  # lookups[i].name, else its table, else its file's name
    keys: tuple[str, ...]  # record columns
    reference_keys: tuple[str, ...]  # reference columns, in the same order
    key_types: tuple[str, ...]  # the DuckDB type each key pair is compared as
    columns: tuple[tuple[str, str], ...]  # (reference column, output name)
    order_by: tuple[str, ...]  # pick: latest: reference columns; empty: the keys must be unique
    join_type: str  # left | inner
    on_missing: str  # keep | reject | fail

    @property
    def path(self) -> str:
        return f"spec.transform.lookups[{self.index}]"

    @property
    def reason(self) -> str:
        """The rejects' reason for a record this lookup found no match for."""
        return f"lookup_missing:{self.label}"

    @property
    def match_column(self) -> str:
        """The join's flag column: TRUE where the record's key has a match."""
        return f"{_MATCH}_{self.index}"

    @property
    def routes_unmatched(self) -> bool:
        """Records with no match leave the rows later (to the rejects, or to fail the stage)."""
        return self.join_type == "left" and self.on_missing != "keep"

    @property
    def prepared_keys(self) -> tuple[str, ...]:
        return tuple(f"{_KEY}_{j}" for j in range(len(self.keys)))

    @property
    def output_columns(self) -> tuple[str, ...]:
        return tuple(out for _, out in self.columns)

    def prepare_sql(self, relation: str) -> str:
        """The reference rows a join can use (see the class docstring); the relation needs the row id."""
        select = [
            f"CAST({quote(ref)} AS {kind}) AS {quote(key)}"
            for ref, kind, key in zip(self.reference_keys, self.key_types, self.prepared_keys, strict=True)
        ]
        select += [f"{quote(col)} AS {quote(out)}" for col, out in self.columns]
        select += [f"{quote(col)} AS {quote(f'{_ORDER}_{j}')}" for j, col in enumerate(self.order_by)]
        select.append(quote(ROW_ID))
        where = " AND ".join(f"{quote(ref)} IS NOT NULL" for ref in self.reference_keys)
        return f"SELECT {', '.join(select)} FROM {quote(relation)} WHERE {where}"

    def pick_sql(self, relation: str) -> str:
        """One row per key of a prepared reference, keys and brought columns only.

        With ``pick: latest`` the largest ``orderBy`` wins (NULLs lowest), then the later row."""
        orders = [quote(f"{_ORDER}_{j}") for j in range(len(self.order_by))]
        text = f"SELECT * EXCLUDE ({', '.join([*orders, quote(ROW_ID)])}) FROM {quote(relation)}"
        if self.order_by:
            keys = ", ".join(quote(k) for k in self.prepared_keys)
            order = ", ".join(f"{o} DESC NULLS LAST" for o in orders)
            text += (
                f" QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}, {quote(ROW_ID)} DESC) = 1"
            )
        return text

    def duplicates_sql(self, relation: str, sample: int = 5) -> str:
        """The most repeated keys of a raw reference (``copies`` rows each), and how many keys repeat."""
        keys = ", ".join(quote(k) for k in self.reference_keys)
        where = " AND ".join(f"{quote(ref)} IS NOT NULL" for ref in self.reference_keys)
        return (
            f"SELECT {keys}, count(*) AS copies, count(*) OVER () AS repeated_keys FROM {quote(relation)}"
            f" WHERE {where} GROUP BY {keys} HAVING count(*) > 1 ORDER BY copies DESC, {keys} LIMIT {int(sample)}"
        )

    def bucket_sql(self, relation: str, buckets: int, prepared: bool) -> str:
        """Each row's bucket by its key, the same for a record and for the reference row it matches."""
        if prepared:
            keys = ", ".join(quote(k) for k in self.prepared_keys)
        else:
            keys = ", ".join(
                f"CAST({quote(k)} AS {kind})" for k, kind in zip(self.keys, self.key_types, strict=True)
            )
        return f"SELECT CAST(hash({keys}) % {int(buckets)} AS INTEGER) AS bucket FROM {quote(relation)}"

    def join_sql(self, rows: str, reference: str) -> str:
        """Every record with the brought columns (NULL where its key has no match) and the match flag.

        ``reference`` is prepared and picked (one row per key), so no record is repeated."""
        on = " AND ".join(
            f"CAST(r.{quote(k)} AS {kind}) = ref.{quote(p)}"
            for k, kind, p in zip(self.keys, self.key_types, self.prepared_keys, strict=True)
        )
        brought = ", ".join(f"ref.{quote(out)}" for out in self.output_columns)
        flag = f"ref.{quote(self.prepared_keys[0])} IS NOT NULL AS {quote(self.match_column)}"
        return f"SELECT r.*, {brought}, {flag} FROM {quote(rows)} AS r LEFT JOIN {quote(reference)} AS ref ON {on}"

    def missing_keys_sql(self, relation: str, sample: int = 5) -> str:
        """From rejected rows: the first keys (by raw row) this lookup found no match for, and how often."""
        keys = ", ".join(quote(k) for k in self.keys)
        return (
            f"SELECT {keys}, min(raw_row) AS first_row, count(*) AS records FROM {quote(relation)}"
            f" WHERE reason = {literal(self.reason)} GROUP BY {keys} ORDER BY first_row LIMIT {int(sample)}"
        )


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
    lookups: tuple[LookupSql, ...] = ()  # joined in order, after standardize and before derive
    keep_filtered: bool = False

    @property
    def routes(self) -> bool:
        """Some rows leave by a reason (:meth:`route_sql`) rather than by the plain filter."""
        return self.keep_filtered or any(lookup.routes_unmatched for lookup in self.lookups)

    @property
    def writes_rejects(self) -> bool:
        """The run writes ``<output table>_rejects`` (reject-mode lookups, or ``keepFiltered``)."""
        return self.keep_filtered or any(
            lookup.routes_unmatched and lookup.on_missing == "reject" for lookup in self.lookups
        )

    @property
    def kept_reasons(self) -> tuple[str, ...]:
        """The reasons whose rows go on to the rejects branch (fail-mode rows too: they name the keys)."""
        reasons = [lookup.reason for lookup in self.lookups if lookup.routes_unmatched]
        return (*reasons, FILTERED) if self.keep_filtered else tuple(reasons)

    def route_sql(self, relation: str) -> str:
        """Every row with the reason it leaves (NULL: it stays), the match flags dropped.

        A record with no match for a fail-mode lookup is named first (it fails the stage), then one
        with no match for a reject-mode lookup (in spec order), then one the filter drops."""
        routed = sorted(
            (lookup for lookup in self.lookups if lookup.routes_unmatched),
            key=lambda x: x.on_missing != "fail",
        )
        whens = [f"WHEN NOT {quote(lookup.match_column)} THEN {literal(lookup.reason)}" for lookup in routed]
        if self.filter_expr:
            whens.append(f"WHEN ({self.filter_expr}) IS NOT TRUE THEN {literal(FILTERED)}")
        case = f"CASE {' '.join(whens)} END" if whens else "CAST(NULL AS VARCHAR)"
        flags = ", ".join(quote(lookup.match_column) for lookup in routed)
        star = f"* EXCLUDE ({flags})" if flags else "*"
        return f"SELECT {star}, {case} AS {quote(REASON_COLUMN)} FROM {quote(relation)}"

    def rejects_sql(self, relation: str, run: str, rejected_at: str | None) -> str:
        """Routed rows as ``<output table>_rejects`` keeps them: :data:`REJECT_COLUMNS`, then the row."""
        stamp = literal(rejected_at) if rejected_at is not None else "CAST(NULL AS VARCHAR)"
        return (
            f"SELECT {quote(REASON_COLUMN)} AS reason, {literal(run)} AS run, {stamp} AS rejected_at,"
            f" {quote(ROW_ID)} AS raw_row, * EXCLUDE ({quote(REASON_COLUMN)}, {quote(ROW_ID)}) FROM {quote(relation)}"
        )

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

    def select_sql(self, relation: str, references: Sequence[str] = ()) -> str:
        """Standardize, lookups, derive and filter as one statement (the per-row part of the transform).

        ``references`` name each lookup's reference, prepared and picked (:class:`LookupSql`)."""
        if len(references) != len(self.lookups):
            raise ValueError(f"{len(self.lookups)} lookups need as many references, not {len(references)}")
        joins, source = [], _STANDARDIZED
        for i, (lookup, reference) in enumerate(zip(self.lookups, references, strict=True), start=1):
            joins.append(f"{quote(f'{_LOOKED_UP}_{i}')} AS ({lookup.join_sql(source, reference)})")
            source = f"{_LOOKED_UP}_{i}"
        ctes, last = self._derive_ctes(source)
        ctes[:0] = [f"{quote(_STANDARDIZED)} AS ({self.standardize_sql(relation)})", *joins]
        conditions = [quote(lookup.match_column) for lookup in self.lookups if lookup.join_type == "inner"]
        conditions += [quote(lookup.match_column) for lookup in self.lookups if lookup.routes_unmatched]
        if self.filter_expr:
            conditions.append(f"({self.filter_expr}) IS TRUE")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        flags = ", ".join(quote(lookup.match_column) for lookup in self.lookups)
        star = f"* EXCLUDE ({flags})" if flags else "*"
        return f"WITH {', '.join(ctes)} SELECT {star} FROM {last}{where}"

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
    references: Sequence[Mapping[str, str]] = (),
) -> TransformSql:
    """Check ``spec.transform`` against the raw table's ``columns`` and compile it.

    ``ingestion_timestamp`` (ISO 8601) and ``source_uri`` fill the columns ``output.metadata`` adds;
    ``references[i]`` are the columns (``name -> BigQuery type``) of ``lookups[i]``'s reference."""
    if ROW_ID in columns:
        raise SpecSqlError(f"spec.load.table: the column name {ROW_ID!r} is reserved")
    names = _Names(list(columns), columns)
    standardized = _standardize(transform.standardize, columns, names)
    lookups = _lookups(transform.lookups, references, names)
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
    plan = TransformSql(
        input_columns=tuple(columns),
        output_columns=tuple(names.order),
        standardized=tuple(tuple(layer) for layer in standardized if layer),
        derive_layers=tuple(tuple(layer) for layer in layers if layer),
        filter_expr=filter_expr,
        dedupe_key=key,
        dedupe_order=order,
        lookups=tuple(lookups),
        keep_filtered=transform.keep_filtered,
    )
    if plan.routes:
        for name in REJECT_COLUMNS:
            if name.lower() in {c.lower() for c in plan.output_columns}:
                raise SpecSqlError(
                    f"spec.transform: {out.table}_rejects adds a column {name!r} before the row's own, and"
                    f" the rows already have one; rename that column (with derive, or a lookup's 'as')"
                )
    return plan


def _lookups(
    lookups: Sequence[Lookup], references: Sequence[Mapping[str, str]], names: _Names
) -> list[LookupSql]:
    """Each lookup checked against its reference's columns and the record's (the looked-up columns of
    earlier lookups included); its brought columns are added to ``names``, with their types."""
    if len(references) != len(lookups):
        raise SpecSqlError(
            f"spec.transform.lookups: {len(lookups)} lookups, but the columns of {len(references)} references"
        )
    compiled = []
    for i, (lookup, reference) in enumerate(zip(lookups, references, strict=True)):
        path = f"spec.transform.lookups[{i}]"
        where = lookup.table or lookup.label
        ref = _Names([c for c in reference if c != ROW_ID], reference, where)
        keys, ref_keys, kinds = [], [], []
        for left, right in lookup.on.items():
            key, ref_key = names.resolve(left, f"{path}.on.{left}"), ref.resolve(right, f"{path}.on.{left}")
            left_type, right_type = names.type_of(key), ref.type_of(ref_key)
            if left_type != right_type:
                raise SpecSqlError(
                    f"{path}.on.{left}: {key!r} is {left_type or 'of unknown type'} but {ref_key!r} in"
                    f" {where} is {right_type or 'of unknown type'}; a key compares values of one type"
                )
            if left_type not in KEY_TYPES:
                raise SpecSqlError(f"{path}.on.{left}: a {left_type} column cannot be a lookup key")
            keys.append(key)
            ref_keys.append(ref_key)
            kinds.append(KEY_TYPES[left_type])
        brought = []
        for j, column in enumerate(lookup.columns):
            found = ref.resolve(column.name, f"{path}.columns[{j}].name")
            names.add(column.output_name, f"{path}.columns[{j}]", ref.type_of(found))
            brought.append((found, column.output_name))
        order = [ref.resolve(c, f"{path}.orderBy[{j}]") for j, c in enumerate(lookup.order_by)]
        compiled.append(
            LookupSql(
                index=i,
                label=lookup.label,
                keys=tuple(keys),
                reference_keys=tuple(ref_keys),
                key_types=tuple(kinds),
                columns=tuple(brought),
                order_by=tuple(order),
                join_type=lookup.type,
                on_missing=lookup.on_missing,
            )
        )
    return compiled


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
    return _one_duckdb_select(checked.to_duckdb(), sql, path), checked.columns


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
    metrics: tuple[tuple[str, str, str], ...]  # (name, agg, DuckDB argument)
    input_columns: tuple[str, ...]  # the columns it reads, in input order (at least one, for COUNT(*))
    report_date: str | None = None  # DuckDB DATE expression
    integer_sums: frozenset[str] = frozenset()  # sum metrics over integers: kept INT64, as in BigQuery

    @property
    def output_columns(self) -> tuple[str, ...]:
        extra = (REPORT_DATE,) if self.report_date is not None else ()
        return (*self.group_by, *(name for name, _, _ in self.metrics), *extra)

    def sql(self, relation: str) -> str:
        """groupBy columns, then metrics (then ``report_date``), ordered by the groupBy columns."""
        select = [quote(c) for c in self.group_by]
        for name, agg, arg in self.metrics:
            value = _AGG_SQL[agg].format(arg)
            if name in self.integer_sums:  # DuckDB sums integers into INT128
                value = f"CAST({value} AS BIGINT)"
            select.append(f"{value} AS {quote(name)}")
        if self.report_date is not None:
            select.append(f"{self.report_date} AS {quote(REPORT_DATE)}")
        text = f"SELECT {', '.join(select)} FROM {quote(relation)}"
        if self.group_by:
            groups = ", ".join(quote(c) for c in self.group_by)
            text += f" GROUP BY {groups} ORDER BY {groups}"
        return text

    def sum_inputs_sql(self, relation: str) -> str | None:
        """The arguments of the sum metrics, one column each: run on no rows, their types say which
        sums are over integers (see :attr:`integer_sums`)."""
        args = [f"{arg} AS {quote(name)}" for name, agg, arg in self.metrics if agg == "sum"]
        return f"SELECT {', '.join(args)} FROM {quote(relation)}" if args else None


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
        metrics.append((metric.name, metric.agg, arg))
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
