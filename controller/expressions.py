"""SQL expressions from a spec's author: parsed once (BigQuery dialect), checked, translated.

A ``derive``, ``filter`` or metric expression may only be a scalar expression over the row's own
columns: no subquery, no table reference, no statement, no aggregate or window function. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError

READ_DIALECT = "bigquery"

_FORBIDDEN: tuple[type[Any], ...] = (
    exp.Subquery,
    exp.Select,
    exp.Union,
    exp.Intersect,
    exp.Except,
    exp.Table,
    exp.From,
    exp.Join,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Window,
    exp.AggFunc,
    exp.Placeholder,
    exp.Parameter,
    exp.Set,
    exp.Use,
    exp.Transaction,
)


# Functions no expression may call, known to sqlglot by name: they read or write files, reveal the
# session, produce rows instead of one value, expand to several columns, or draw from a sequence.
_FORBIDDEN_FUNCTION_NAMES = (
    "ReadCSV",
    "ReadParquet",
    "ToFile",
    "Unnest",
    "Explode",
    "ExplodeOuter",
    "Posexplode",
    "PosexplodeOuter",
    "GenerateTable",
    "SplitToTable",
    "StrtokSplitToTable",
    "JSONTable",
    "XMLTable",
    "Columns",
    "Star",
    "NextValueFor",
    "Seq1",
    "Seq2",
    "Seq4",
    "Seq8",
    "SessionUser",
    "AIGenerate",
    "GenerateEmbedding",
    "GenerateText",
    "Predict",
)
_FORBIDDEN_FUNCTIONS: tuple[type[Any], ...] = tuple(
    getattr(exp, name) for name in _FORBIDDEN_FUNCTION_NAMES if hasattr(exp, name)
)
# CURRENT_USER, CURRENT_DATABASE, ... tell the session, not the row; CURRENT_DATE and CURRENT_TIMESTAMP stay.
_ALLOWED_CURRENT = ("CurrentDate", "CurrentDatetime", "CurrentTime", "CurrentTimestamp")

# After translation, DuckDB functions that read files, settings or the environment, or run SQL text.
_DUCKDB_FORBIDDEN = re.compile(
    r"^(read_\w*|\w*_scan|sniff_csv|glob|getenv|current_setting|query|query_table|duckdb_\w*|pragma_\w*"
    r"|system|shell|install\w*|load\w*|attach|detach|copy|export\w*|import\w*|checkpoint|force_checkpoint"
    r"|json_execute_serialized_sql|to_file|current_user|session_user|user|current_role|current_database"
    r"|current_schema|current_schemas|current_catalog|version|pg_\w*|nextval|currval|setseed|error)$",
    re.IGNORECASE,
)


class ExpressionError(Exception):
    """An expression a user wrote is not allowed or does not parse."""


@dataclass(frozen=True)
class CheckedExpression:
    sql: str
    tree: exp.Expression
    columns: frozenset[str]
    types: Mapping[str, str] = field(default_factory=dict)  # column -> BigQuery type, when known

    @property
    def type(self) -> str | None:
        """The BigQuery type of the result, when it can be told from the column types."""
        return infer_type(self.tree, self.types)

    def to_duckdb(self) -> str:
        """DuckDB SQL with BigQuery's semantics where the engines differ.

        NUMERIC division: BigQuery keeps NUMERIC (rounded to 9 decimals), DuckDB would go to DOUBLE."""
        tree = _json_like_bigquery(self.tree.copy())
        if self.types:
            for node in list(tree.find_all(exp.Div, exp.SafeDivide)):
                if infer_type(node, self.types) == "NUMERIC":
                    cast = exp.Cast(this=node.copy(), to=exp.DataType.build("DECIMAL(38, 9)"))
                    tree = cast if node is tree else tree
                    if node is not cast.this and node.parent is not None:
                        node.replace(cast)
        return tree.sql(dialect="duckdb")

    def to_bigquery(self) -> str:
        return self.tree.sql(dialect="bigquery")


def parse_expression(
    sql: str, known_columns: Iterable[str] | None = None, what: str = "expression"
) -> CheckedExpression:
    """Parse a BigQuery scalar expression and check it only reads ``known_columns``.

    Column names compare case-insensitively, as BigQuery does; the returned tree uses the declared
    spelling of each column."""
    text = sql.strip().rstrip(";").strip() if sql else ""
    if not text:
        raise ExpressionError(f"{what} is empty")
    if ";" in _outside_strings(text):
        raise ExpressionError(f"{what} {sql!r}: one expression only (no ';')")
    try:
        statements = sqlglot.parse(f"SELECT {text}", read=READ_DIALECT)
    except ParseError as exc:
        first = exc.errors[0]["description"] if exc.errors else str(exc)
        raise ExpressionError(f"{what} {sql!r} does not parse: {first}") from None
    except SqlglotError:  # the tokenizer: an unterminated string, quoted name or comment
        raise ExpressionError(
            f"{what} {sql!r} does not parse: a string, quoted name or comment is not closed"
        ) from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise ExpressionError(f"{what} {sql!r}: one expression only")
    select = statements[0]
    if len(select.expressions) != 1 or any(select.args.get(k) for k in ("from", "where", "group", "joins")):
        raise ExpressionError(f"{what} {sql!r}: one scalar expression only (no commas, FROM or WHERE)")
    tree = select.expressions[0]
    if isinstance(tree, exp.Alias):
        raise ExpressionError(f"{what} {sql!r}: no alias (AS) inside an expression; name it with 'name'")
    _check_tree(tree, sql, what)
    canon = {c.lower(): c for c in known_columns} if known_columns is not None else None
    used: set[str] = set()
    for col in list(tree.find_all(exp.Column)):
        name = col.name
        if canon is not None:
            if name.lower() not in canon:
                known = ", ".join(sorted(canon.values()))
                raise ExpressionError(f"{what} {sql!r}: unknown column {name!r} (known: {known})")
            name = canon[name.lower()]
            col.set("this", exp.to_identifier(name, quoted=True))
        used.add(name)
    types = dict(known_columns) if isinstance(known_columns, Mapping) else {}
    checked = CheckedExpression(sql=text, tree=tree, columns=frozenset(used), types=types)
    check_duckdb_expression(checked.to_duckdb(), what, original=sql)
    return checked


def _check_tree(tree: exp.Expression, sql: str, what: str) -> None:
    """Refuse anything but a scalar expression over bare column names; drop comments (never re-emitted)."""
    for node in tree.walk():
        node.comments = None
        if isinstance(node, _FORBIDDEN):
            kind = type(node).__name__.upper()
            raise ExpressionError(
                f"{what} {sql!r}: {kind} is not allowed; only scalar expressions over the row's columns"
            )
        if isinstance(node, exp.Anonymous):
            raise ExpressionError(
                f"{what} {sql!r}: function {node.name.upper()}() is not allowed: only BigQuery's own scalar"
                " functions (those the translator knows) may be called"
            )
        if isinstance(node, _FORBIDDEN_FUNCTIONS) or _session_function(node):
            name = node.sql(dialect=READ_DIALECT).split("(")[0] or type(node).__name__.upper()
            raise ExpressionError(
                f"{what} {sql!r}: {name} is not allowed: it reads files, the session or other rows,"
                " not the row's own columns"
            )
        if isinstance(node, exp.Column) and node.table:
            raise ExpressionError(
                f"{what} {sql!r}: column {node.sql(dialect=READ_DIALECT)} names a table; use the bare column name"
            )
        if isinstance(node, exp.Dot) and isinstance(node.this, exp.Literal):
            raise ExpressionError(
                f"{what} {sql!r}: {node.sql(dialect=READ_DIALECT)} reads a field of a string (a double-quoted"
                " name is a string in BigQuery); quote column names with backticks"
            )


def _session_function(node: object) -> bool:
    name = type(node).__name__
    return name.startswith("Current") and name not in _ALLOWED_CURRENT


def check_duckdb_expression(duck_sql: str, what: str = "expression", original: str | None = None) -> None:
    """The same rules on the DuckDB text that will run locally: one scalar expression, no statement, no
    table, no file, setting or environment function. A second wall behind the BigQuery check."""
    shown = original if original is not None else duck_sql
    if ";" in _outside_strings(duck_sql) or "--" in _outside_strings(duck_sql):
        raise ExpressionError(f"{what} {shown!r}: one expression only (no ';' or comment) on DuckDB")
    try:
        statements = sqlglot.parse(f"SELECT {duck_sql}", read="duckdb")
    except ParseError as exc:
        first = exc.errors[0]["description"] if exc.errors else str(exc)
        raise ExpressionError(f"{what} {shown!r} does not parse as DuckDB: {first}") from None
    except SqlglotError as exc:
        raise ExpressionError(f"{what} {shown!r} does not parse as DuckDB: {exc}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise ExpressionError(f"{what} {shown!r}: one expression only on DuckDB")
    select = statements[0]
    if len(select.expressions) != 1 or any(select.args.get(k) for k in ("from", "where", "group", "joins")):
        raise ExpressionError(f"{what} {shown!r}: one scalar expression only on DuckDB")
    for node in select.expressions[0].walk():
        if isinstance(node, (*_FORBIDDEN, *_FORBIDDEN_FUNCTIONS)) or _session_function(node):
            kind = type(node).__name__.upper()
            raise ExpressionError(f"{what} {shown!r}: {kind} is not allowed on DuckDB")
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
            if _DUCKDB_FORBIDDEN.match(name or ""):
                raise ExpressionError(f"{what} {shown!r}: function {name.upper()}() is not allowed on DuckDB")
        if isinstance(node, exp.Column) and node.table:
            raise ExpressionError(f"{what} {shown!r}: column {node.sql(dialect='duckdb')} names a table")


def _outside_strings(text: str) -> str:
    """The text with quoted literals blanked, to look for statement separators."""
    out, quote = [], ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            out.append(" ")
        elif ch in "'\"`":
            quote = ch
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def derive_order(derives: list[tuple[str, str]], base_columns: Iterable[str]) -> list[str]:
    """Check each derived column only uses base columns and earlier derived ones (no cycles)."""
    known = {c.lower() for c in base_columns}
    order = []
    for name, sql in derives:
        if name.lower() in known:
            raise ExpressionError(f"derived column {name!r} already exists; choose another name")
        parse_expression(sql, known, what=f"derive {name!r}")
        known.add(name.lower())
        order.append(name)
    return order


_NUMERIC_KINDS = {"NUMERIC", "INT64", "BIGNUMERIC"}


def _json_like_bigquery(tree: exp.Expression) -> exp.Expression:
    """BigQuery's JSON functions on a STRING return NULL for malformed JSON (DuckDB would raise), and
    JSON_VALUE / JSON_EXTRACT_SCALAR return NULL for an object or array (DuckDB would return its text).
    One bad cell must give the same answer on both engines, never fail the whole run."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.JSONExtractScalar):
            doc, path = node.this.sql(dialect="duckdb"), node.expression.sql(dialect="duckdb")
            text = (
                f"CASE WHEN json_valid({doc}) AND json_type({doc}, {path}) NOT IN ('OBJECT', 'ARRAY') "
                f"THEN json_extract_string({doc}, {path}) END"
            )
            return sqlglot.parse_one(text, read="duckdb")  # type: ignore[return-value]
        if isinstance(node, exp.JSONExtract):
            doc, path = node.this.sql(dialect="duckdb"), node.expression.sql(dialect="duckdb")
            text = f"CASE WHEN json_valid({doc}) THEN CAST(json_extract({doc}, {path}) AS VARCHAR) END"
            return sqlglot.parse_one(text, read="duckdb")  # type: ignore[return-value]
        return node

    return tree.transform(rewrite)


def infer_type(node: exp.Expression, types: Mapping[str, str]) -> str | None:
    """BigQuery's result type of an arithmetic expression, as far as the division rule needs it."""
    if isinstance(node, exp.Paren):
        return infer_type(node.this, types)
    if isinstance(node, exp.Column):
        lowered = {k.lower(): v for k, v in types.items()}
        return lowered.get(node.name.lower()) or None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return "STRING"
        return "INT64" if node.this.lstrip("+-").isdigit() else "FLOAT64"
    if isinstance(node, exp.Cast):
        kind = node.to.this
        if kind in (exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL):
            return "NUMERIC"
        if kind in (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT):
            return "FLOAT64"
        if kind in (exp.DataType.Type.BIGINT, exp.DataType.Type.INT):
            return "INT64"
        return None
    if isinstance(node, (exp.Div, exp.SafeDivide)):
        left, right = infer_type(node.this, types), infer_type(node.expression, types)
        if "FLOAT64" in (left, right) or None in (left, right):
            return "FLOAT64" if "FLOAT64" in (left, right) else None
        return "NUMERIC" if "NUMERIC" in (left, right) else "FLOAT64"
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Mod)):
        left, right = infer_type(node.this, types), infer_type(node.expression, types)
        if left is None or right is None:
            return None
        if "FLOAT64" in (left, right):
            return "FLOAT64"
        if {left, right} <= _NUMERIC_KINDS:
            return "NUMERIC" if "NUMERIC" in (left, right) else "INT64"
        return None
    if isinstance(node, (exp.Round, exp.Abs, exp.Neg)):
        return infer_type(node.this, types)
    if isinstance(node, (exp.Coalesce, exp.If, exp.Case)):
        found = {infer_type(e, types) for e in node.find_all(exp.Column, exp.Literal, exp.Div)} - {None}
        return next(iter(found)) if len(found) == 1 else None
    return None
