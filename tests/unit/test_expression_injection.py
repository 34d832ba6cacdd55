"""derive, filter and metric expressions are SQL from a spec's author: only a scalar over the row's own
columns gets through, on BigQuery's dialect and again on the DuckDB text that runs locally; names of
tables and columns are validated identifiers, always quoted."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from beam.sql import SpecSqlError, _one_duckdb_select, compile_aggregate, compile_transform, quote
from beam.warehouse.duckdb_warehouse import WarehouseError, quote_ident, quote_table
from controller.expressions import ExpressionError, check_duckdb_expression, parse_expression
from controller.spec import Aggregate, SpecError, Transform, parse_spec_text
from controller.spec_check import load_checked_text

pytestmark = pytest.mark.unit

COLUMNS = {"qty": "INT64", "price": "NUMERIC", "name": "STRING", "day": "DATE"}
PATH = "spec.transform.derive[0].expr"

ATTEMPTS = [
    # subqueries and SELECT
    "(SELECT 1)",
    "SELECT 1",
    "qty + (SELECT max(qty) FROM raw.items)",
    "EXISTS(SELECT 1 FROM raw.items)",
    "qty IN (SELECT qty FROM raw.items)",
    "ARRAY(SELECT name FROM raw.items)",
    "(SELECT 1 UNION ALL SELECT 2)",
    # table references
    "other.table.col",
    "raw.items.qty",
    "information_schema.tables",
    "`project.dataset.table`.qty",
    "`raw.items`",
    "t.qty",
    # DDL / DML / engine statements
    "DROP TABLE raw.items",
    "DELETE FROM raw.items",
    "INSERT INTO raw.items VALUES (1)",
    "UPDATE raw.items SET qty = 0",
    "CREATE TABLE x AS SELECT 1",
    "ATTACH 'other.duckdb'",
    "COPY raw.items TO 'out.csv'",
    "PRAGMA database_list",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    # several statements, and statements hidden behind comments
    "1; DROP TABLE raw.items",
    "qty; DELETE FROM raw.items",
    "1 -- \n; DROP TABLE raw.items",
    "1 /* x */; DROP TABLE raw.items",
    "qty -- \nOR 1 = 1; DROP TABLE raw.items",
    # files, environment, settings, SQL text run as SQL
    "read_csv('/etc/passwd')",
    "read_csv_auto('/etc/passwd')",
    "read_parquet('data.parquet')",
    "read_json('x.json')",
    "read_text('/etc/passwd')",
    "read_blob('/etc/passwd')",
    "parquet_scan('x.parquet')",
    "sniff_csv('/etc/passwd')",
    "glob('/etc/*')",
    "SAFE.read_csv('/etc/passwd')",
    "getenv('HOME')",
    "current_setting('home_directory')",
    "query('SELECT 1')",
    "query_table('raw.items')",
    "duckdb_settings()",
    "EXTERNAL_QUERY('conn', 'SELECT 1')",
    "ML.PREDICT(MODEL m, TABLE t)",
    # system and session functions, sequences, rows instead of a value
    "current_user",
    "SESSION_USER()",
    "version()",
    "pg_sleep(10)",
    "system('id')",
    "nextval('seq')",
    "UNNEST([1, 2])",
    "*",
    "COLUMNS(*)",
    # aggregates, windows, parameters
    "SUM(qty)",
    "ROW_NUMBER() OVER ()",
    "@param",
    "@@project_id",
    "?",
    # quoted identifier tricks and look-alikes
    "`qty; DROP TABLE raw.items`",
    '`qty"; DROP TABLE raw.items; --`',
    "`qty`.`name`",
    '"raw"."items"',  # double quotes make strings in BigQuery: a field of a string
    "ｑｔｙ + 1",  # full-width letters
    "qtу + 1",  # Cyrillic u
    "qty\u200b + 1",  # zero-width space
    "qty AS x",
    "qty, name",
]


@pytest.mark.parametrize("attempt", ATTEMPTS)
def test_injection_is_refused_naming_the_spec_path(attempt: str) -> None:
    with pytest.raises(ExpressionError) as refused:
        parse_expression(attempt, COLUMNS, what=PATH)

    assert str(refused.value).startswith(PATH)


DUCKDB_ATTEMPTS = [
    "(SELECT 1)",
    "1; DROP TABLE raw.items",
    "qty -- hidden",
    "read_csv('/etc/passwd')",
    "read_text('/etc/passwd')",
    "read_csv_auto('/etc/passwd')",
    "getenv('HOME')",
    "current_setting('home_directory')",
    "query('SELECT 1')",
    "query_table('raw.items')",
    "glob('/etc/*')",
    "sniff_csv('/etc/passwd')",
    "duckdb_tables()",
    "pragma_version()",
    "version()",
    "nextval('seq')",
    "current_user",
    "raw.items.qty",
    '"raw"."items"."qty"',
    "unnest([1, 2])",
    "COLUMNS(*)",
    "*",
    "sum(qty)",
    "row_number() OVER ()",
]


@pytest.mark.parametrize("attempt", DUCKDB_ATTEMPTS)
def test_duckdb_text_is_checked_again(attempt: str) -> None:
    with pytest.raises(ExpressionError) as refused:
        check_duckdb_expression(attempt, PATH)

    assert str(refused.value).startswith(PATH)


@pytest.mark.parametrize(
    "duck", ["'raw'.'items'", "1; DROP TABLE raw.items", "1) UNION SELECT (2", "1; ATTACH 'x.db'"]
)
def test_duckdb_own_parser_must_see_one_select(duck: str) -> None:
    with pytest.raises(SpecSqlError, match=r"^spec\.transform\.filter"):
        _one_duckdb_select(duck, duck, "spec.transform.filter")


SQL_TOKENS = st.sampled_from(
    ["qty", "name", "1", "'a", "'b'", "`", "`qty`", '"', "(", ")", "[", "]", ",", ";", "--", "/*", "*/", "+",
     "*", "=", "SELECT", "FROM", "DROP", "TABLE", "raw.items", ".", "CAST", "AS", "INT64", "IF", "CASE",
     "WHEN", "END", "read_csv", "@", "?", "\\", "\n", " ", "r'", "b'", '"""', "OVER", "SUM", "->>", "::"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(SQL_TOKENS, max_size=14).map(" ".join))
def test_any_token_soup_is_accepted_or_refused_with_an_expression_error(text: str) -> None:
    try:
        checked = parse_expression(text, COLUMNS, what=PATH)
    except ExpressionError as exc:
        assert str(exc).startswith(PATH)
        return

    check_duckdb_expression(checked.to_duckdb(), PATH)
    assert checked.columns <= set(COLUMNS)


LEGITIMATE = [
    ("qty * 2", [6, 20]),
    ("IF(qty >= 10, 'high', 'low')", ["low", "high"]),
    ("CASE WHEN name LIKE 'a%' THEN 1 ELSE 0 END", [1, 0]),
    ("ROUND(SAFE_DIVIDE(qty, 4), 1)", [0.8, 2.5]),
    ("DATE_DIFF(DATE '2026-01-10', day, DAY)", [1, 0]),
    ("UPPER(TRIM(name)) || '-' || CAST(qty AS STRING)", ["ANN-3", "BOB-10"]),
    ("COALESCE(NULLIF(name, 'bob'), 'someone')", ["ann", "someone"]),
    ("`qty` + 1  -- a comment is dropped, never re-emitted", [4, 11]),
    ("'; DROP TABLE raw.items; --'", ["; DROP TABLE raw.items; --"] * 2),
    ("JSON_VALUE('{\"a\": \"x\"}', '$.a')", ["x", "x"]),
]


@pytest.mark.parametrize(("expression", "expected"), LEGITIMATE)
def test_legitimate_scalar_expression_is_accepted_and_runs(expression: str, expected: list[object]) -> None:
    data = pa.table(
        {
            "qty": pa.array([3, 10], pa.int64()),
            "name": ["ann", "bob"],
            "day": pa.array([pa.scalar(20_462, pa.date32()), pa.scalar(20_463, pa.date32())]),
        }
    )
    checked = parse_expression(expression, {"qty": "INT64", "name": "STRING", "day": "DATE"}, what=PATH)
    duck = checked.to_duckdb()

    with duckdb.connect() as con:
        con.register("input", data)
        got = [r[0] for r in con.sql(f"SELECT {duck} FROM input").fetchall()]

    assert [float(g) if isinstance(g, float) else g for g in got] == expected
    assert all(not node.comments for node in sqlglot.parse_one(duck, read="duckdb").walk())
    sqlglot.parse_one(f"SELECT {checked.to_bigquery()}", read="bigquery")


def test_comment_cannot_smuggle_text_into_the_generated_sql() -> None:
    checked = parse_expression("qty -- */ OR 1 = 1 /*", COLUMNS, what=PATH)

    assert checked.to_duckdb() == '"qty"'
    assert checked.to_bigquery() == "`qty`"


def test_column_names_are_quoted_in_generated_transform_sql() -> None:
    transform = Transform.model_validate(
        {
            "output": {"table": "tds.items"},
            "derive": [{"name": "select_", "expr": "`from` + 1"}],
            "filter": "`from` > 0",
        }
    )
    plan = compile_transform(transform, {"from": "INT64", "order": "STRING"})
    data = pa.table({"from": [1, -1], "order": ["a", "b"], "__dataops_row": [1, 2]})

    with duckdb.connect() as con:
        con.register("input", data)
        derived = con.sql(plan.derive_sql("input")).to_arrow_table()
        con.register("derived", derived)
        kept = con.sql(plan.filter_sql("derived")).to_arrow_table().to_pylist()

    assert [r["select_"] for r in kept] == [2]
    assert '"from"' in plan.derive_sql("input")


def test_metric_expression_is_checked_like_a_derive() -> None:
    aggregate = Aggregate.model_validate(
        {
            "output": "bds.x",
            "groupBy": ["name"],
            "metrics": [{"name": "leak", "agg": "sum", "expr": "(SELECT count(*) FROM raw.items)"}],
        }
    )

    with pytest.raises(ValueError, match=r"spec\.aggregate\[0\]\.metrics\[0\]\.expr"):
        compile_aggregate(aggregate, {"name": "STRING", "qty": "INT64"}, index=0)


@pytest.mark.parametrize(
    "name",
    ['x"; DROP TABLE y; --', "a b", "1abc", "ｑｔｙ", "qty\u200b", "", "a-b", "`a`", "a.b"],
)
def test_invalid_column_name_is_refused_by_the_spec(name: str) -> None:
    text = SPEC.replace("{name: name}", "{name: " + _yaml(name) + "}")

    with pytest.raises(SpecError) as refused:
        parse_spec_text(text, "bad.yaml", Path("."))

    assert "spec.source.columns[1].name" in str(refused.value)


@pytest.mark.parametrize(
    "table",
    ["raw.x; DROP TABLE y", "raw", "raw.x.y", 'raw."x"', "raw.x--", "`raw.x`", "raw .x", "raw.ｘ"],
)
def test_invalid_table_name_is_refused_by_the_spec_and_the_warehouse(table: str) -> None:
    text = SPEC.replace("{table: raw.items}", "{table: " + _yaml(table) + "}")

    with pytest.raises(SpecError) as refused:
        parse_spec_text(text, "bad.yaml", Path("."))
    with pytest.raises(WarehouseError):
        quote_table(table)

    assert "spec.load.table" in str(refused.value)


def test_valid_identifiers_are_quoted_never_pasted() -> None:
    assert quote_table("raw.items") == '"raw"."items"'
    assert quote_ident('we"ird') == '"we""ird"'
    assert quote('we"ird') == '"we""ird"'


def test_expression_in_a_spec_is_refused_with_its_yaml_path_and_line() -> None:
    text = SPEC + '  transform:\n    filter: "qty > 0; DROP TABLE raw.items"\n    output: {table: tds.x}\n'

    with pytest.raises(SpecError) as refused:
        load_checked_text(text, "bad.yaml", Path("."))

    assert refused.value.problems[0][0] == "spec.transform.filter"
    assert refused.value.problems[0][1] == 8
    assert "bad.yaml:8: spec.transform.filter" in str(refused.value)


SPEC = """apiVersion: dataops.io/v1alpha1
kind: PipelineRun
metadata: {name: r}
spec:
  source: {uri: data.csv, columns: [{name: qty, type: INT64}, {name: name}]}
  load: {table: raw.items}
"""


def _yaml(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
