"""SQL expressions from a spec's author: parsed once (BigQuery dialect), checked, translated.

A ``derive``, ``filter`` or metric expression may only be a scalar expression over the row's own
columns: no subquery, no table reference, no statement, no aggregate or window function. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

READ_DIALECT = "bigquery"

_FORBIDDEN: tuple[type[exp.Expression], ...] = (
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


class ExpressionError(Exception):
    """An expression a user wrote is not allowed or does not parse."""


@dataclass(frozen=True)
class CheckedExpression:
    sql: str
    tree: exp.Expression
    columns: frozenset[str]

    def to_duckdb(self) -> str:
        return self.tree.sql(dialect="duckdb")

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
    if len(statements) != 1 or not isinstance(statements[0], exp.Select):
        raise ExpressionError(f"{what} {sql!r}: one expression only")
    select = statements[0]
    if len(select.expressions) != 1 or any(select.args.get(k) for k in ("from", "where", "group", "joins")):
        raise ExpressionError(f"{what} {sql!r}: one scalar expression only (no commas, FROM or WHERE)")
    tree = select.expressions[0]
    if isinstance(tree, exp.Alias):
        raise ExpressionError(f"{what} {sql!r}: no alias (AS) inside an expression; name it with 'name'")
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            kind = type(node).__name__.upper()
            raise ExpressionError(
                f"{what} {sql!r}: {kind} is not allowed; only scalar expressions over the row's columns"
            )
        if isinstance(node, exp.Anonymous) and node.name.upper() in {"EXTERNAL_QUERY", "ML.PREDICT"}:
            raise ExpressionError(f"{what} {sql!r}: function {node.name} is not allowed")
        if isinstance(node, exp.Column) and node.table:
            raise ExpressionError(
                f"{what} {sql!r}: column {node.sql(dialect=READ_DIALECT)} names a table; use the bare column name"
            )
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
    return CheckedExpression(sql=text, tree=tree, columns=frozenset(used))


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
