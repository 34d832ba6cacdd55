"""The generated SQL of TDS and BDS, run on DuckDB over small inputs, against hand-written expectations."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from beam.sql import ROW_ID, SpecSqlError, compile_aggregate, compile_transform
from controller.spec import Aggregate, Transform

pytestmark = pytest.mark.unit

OUTPUT = {"table": "tds.items"}


def transform(**fields: Any) -> Transform:
    return Transform.model_validate({"output": OUTPUT} | fields)


def run_sql(sql: str, data: pa.Table, relation: str = "input") -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        con.register(relation, data)
        return con.sql(sql).to_arrow_table().to_pylist()


def run_table(sql: str, data: pa.Table, relation: str = "input") -> pa.Table:
    with duckdb.connect() as con:
        con.register(relation, data)
        return con.sql(sql).to_arrow_table()


def column(rows: list[dict[str, Any]], name: str) -> list[Any]:
    return [r[name] for r in rows]


def test_title_case_follows_bigquery_initcap() -> None:
    plan = compile_transform(transform(standardize=[{"column": "name", "case": "title"}]), {"name": "STRING"})
    data = pa.table(
        {"name": ["hello world", "o'NEIL mcDONALD", "foo-bar_baz/qux", "  x  y ", "1st place", "ÉCOLE été"]}
    )

    rows = run_sql(plan.standardize_sql("input"), data)

    assert column(rows, "name") == [
        "Hello World",
        "O'neil Mcdonald",
        "Foo-Bar_Baz/Qux",
        "X  Y",
        "1st Place",
        "École Été",
    ]


def test_title_case_after_other_steps_reads_their_result(caplog: pytest.LogCaptureFixture) -> None:
    entries = [
        {"column": "*", "nullValues": ["-"]},
        {"column": "name", "case": "title", "nullValues": ["N/A"], "fillNull": "Nobody"},
    ]
    plan = compile_transform(transform(standardize=entries), {"name": "STRING", "team": "STRING"})
    data = pa.table({"name": [" ann LEE ", "-", "n/a", None], "team": [" x ", "-", "y", None]})

    rows = run_sql(plan.standardize_sql("input"), data)

    assert rows == [
        {"name": "Ann Lee", "team": "x"},
        {"name": "Nobody", "team": None},
        {"name": "Nobody", "team": "y"},
        {"name": "Nobody", "team": None},
    ]
    assert not [r for r in caplog.records if r.name == "sqlglot"]


def test_trim_removes_tabs_and_newlines_like_bigquery() -> None:
    plan = compile_transform(transform(standardize=[{"column": "name"}]), {"name": "STRING"})
    data = pa.table({"name": ["\t a b \n", "  ", "x"]})

    rows = run_sql(plan.standardize_sql("input"), data)

    assert column(rows, "name") == ["a b", None, "x"]


def test_null_values_compare_after_trim_and_case() -> None:
    entry = {"column": "location", "case": "lower", "nullValues": ["unknown", "n/a"]}
    plan = compile_transform(transform(standardize=[entry]), {"location": "STRING"})
    data = pa.table({"location": ["  Unknown ", "N/A", " Paris", "", None, "UNKNOWN-2"]})

    rows = run_sql(plan.standardize_sql("input"), data)

    assert column(rows, "location") == [None, None, "paris", None, None, "unknown-2"]


def test_empty_as_null_false_keeps_the_empty_string() -> None:
    plan = compile_transform(transform(standardize=[{"column": "a", "emptyAsNull": False}]), {"a": "STRING"})

    rows = run_sql(plan.standardize_sql("input"), pa.table({"a": ["  ", None]}))

    assert column(rows, "a") == ["", None]


def test_fill_null_replaces_null_last() -> None:
    entries = [
        {"column": "owner", "case": "lower", "nullValues": ["nobody"], "fillNull": "unassigned"},
        {"column": "cores", "fillNull": 0},
    ]
    plan = compile_transform(transform(standardize=entries), {"owner": "STRING", "cores": "INT64"})
    data = pa.table({"owner": [" Alice ", "NOBODY", "", None], "cores": [4, None, 2, None]})

    rows = run_sql(plan.standardize_sql("input"), data)

    assert column(rows, "owner") == ["alice", "unassigned", "unassigned", "unassigned"]
    assert column(rows, "cores") == [4, 0, 2, 0]


def test_star_standardizes_every_string_column_and_nothing_else() -> None:
    plan = compile_transform(
        transform(standardize=[{"column": "*", "case": "upper"}]),
        {"a": "STRING", "n": "INT64", "b": "STRING"},
    )
    data = pa.table({"a": [" x "], "n": [7], "b": ["y"]})

    rows = run_sql(plan.standardize_sql("input"), data)

    assert rows == [{"a": "X", "n": 7, "b": "Y"}]


def test_later_standardize_entries_apply_to_the_earlier_result() -> None:
    entries = [{"column": "*", "case": "lower"}, {"column": "a", "nullValues": ["none"], "fillNull": "-"}]
    plan = compile_transform(transform(standardize=entries), {"a": "STRING"})

    rows = run_sql(plan.standardize_sql("input"), pa.table({"a": [" NONE ", "Some"]}))

    assert column(rows, "a") == ["-", "some"]


def test_derived_columns_read_earlier_derived_columns() -> None:
    derive = [
        {"name": "double", "expr": "x * 2"},
        {"name": "plus_one", "expr": "x + 1"},
        {"name": "quad", "expr": "double * 2"},
        {"name": "label", "expr": "IF(quad > 10, 'big', 'small')"},
    ]
    plan = compile_transform(transform(derive=derive), {"x": "INT64"})

    rows = run_sql(plan.derive_sql("input"), pa.table({"x": [1, 3]}))

    assert rows == [
        {"x": 1, "double": 2, "plus_one": 2, "quad": 4, "label": "small"},
        {"x": 3, "double": 6, "plus_one": 4, "quad": 12, "label": "big"},
    ]
    assert [len(layer) for layer in plan.derive_layers] == [2, 1, 1]


def test_filter_keeps_rows_where_true_and_counts_the_others() -> None:
    plan = compile_transform(transform(filter="x > 1"), {"x": "INT64"})
    data = pa.table({"x": [0, 2, None, 5]})

    kept = run_sql(plan.filter_sql("input"), data)
    dropped = run_sql(plan.filtered_count_sql("input"), data)

    assert column(kept, "x") == [2, 5]
    assert dropped == [{"rows_filtered": 2}]


def test_select_sql_standardizes_derives_then_filters_in_one_statement() -> None:
    plan = compile_transform(
        transform(
            standardize=[{"column": "kind", "case": "lower"}],
            derive=[{"name": "is_vm", "expr": "kind = 'vm'"}],
            filter="is_vm",
        ),
        {"kind": "STRING"},
    )

    rows = run_sql(plan.select_sql("input"), pa.table({"kind": [" VM", "disk", None]}))

    assert rows == [{"kind": "vm", "is_vm": True}]


def test_dedupe_keeps_largest_order_then_later_row() -> None:
    plan = compile_transform(
        transform(dedupe={"key": ["id"], "orderBy": "version"}), {"id": "STRING", "version": "INT64"}
    )
    data = pa.table(
        {
            "id": ["a", "a", "a", "b", "b", "c", "c", None, None],
            "version": [1, 3, 2, None, 1, 5, 5, 1, 2],
            ROW_ID: [0, 1, 2, 3, 4, 5, 6, 7, 8],
        }
    )

    rows = run_sql(plan.dedupe_sql("input"), data)

    assert rows == [
        {"id": "a", "version": 3},
        {"id": "b", "version": 1},
        {"id": "c", "version": 5},
        {"id": None, "version": 2},
    ]


def test_dedupe_tie_goes_to_the_later_raw_row() -> None:
    plan = compile_transform(
        transform(dedupe={"key": ["id"], "orderBy": ["day", "seq"]}),
        {"id": "STRING", "day": "INT64", "seq": "INT64", "v": "STRING"},
    )
    data = pa.table(
        {
            "id": ["a", "a", "a", "b", "b"],
            "day": [2, 2, 1, None, None],
            "seq": [7, 7, 9, None, None],
            "v": ["first", "second", "older", "b-first", "b-second"],
            ROW_ID: [10, 11, 12, 20, 21],
        }
    )

    rows = run_sql(plan.dedupe_sql("input"), data)

    assert column(rows, "v") == ["second", "b-second"]


def test_count_star_counts_rows_and_count_column_skips_nulls() -> None:
    aggregate = Aggregate.model_validate(
        {
            "output": "bds.kpis",
            "groupBy": ["grp"],
            "metrics": [
                {"name": "rows", "agg": "count"},
                {"name": "with_owner", "agg": "count", "column": "owner"},
                {"name": "owners", "agg": "count_distinct", "column": "owner"},
                {"name": "cost", "agg": "sum", "column": "cost"},
                {"name": "mean_cost", "agg": "avg", "column": "cost"},
                {"name": "cheapest", "agg": "min", "column": "cost"},
                {"name": "dearest", "agg": "max", "column": "cost"},
                {"name": "active", "agg": "sum", "expr": "IF(active, 1, 0)"},
                {"name": "big", "agg": "count", "expr": "IF(cost > 5, 1, NULL)"},
            ],
        }
    )
    plan = compile_aggregate(aggregate, ["grp", "owner", "cost", "active", "unused"], 0)
    data = pa.table(
        {
            "grp": ["x", "x", "x", "y", None],
            "owner": ["ann", None, "ann", None, "bob"],
            "cost": [1.0, 9.0, None, 4.0, 6.0],
            "active": [True, False, True, None, True],
            "unused": [0, 0, 0, 0, 0],
        }
    )

    rows = run_sql(plan.sql("input"), data)

    assert rows == [
        {
            "grp": "x",
            "rows": 3,
            "with_owner": 2,
            "owners": 1,
            "cost": 10.0,
            "mean_cost": 5.0,
            "cheapest": 1.0,
            "dearest": 9.0,
            "active": 2,
            "big": 1,
        },
        {
            "grp": "y",
            "rows": 1,
            "with_owner": 0,
            "owners": 0,
            "cost": 4.0,
            "mean_cost": 4.0,
            "cheapest": 4.0,
            "dearest": 4.0,
            "active": 0,
            "big": 0,
        },
        {
            "grp": None,
            "rows": 1,
            "with_owner": 1,
            "owners": 1,
            "cost": 6.0,
            "mean_cost": 6.0,
            "cheapest": 6.0,
            "dearest": 6.0,
            "active": 1,
            "big": 1,
        },
    ]
    assert plan.input_columns == ("grp", "owner", "cost", "active")


def test_aggregate_without_group_by_gives_one_row_even_on_no_rows() -> None:
    aggregate = Aggregate.model_validate(
        {
            "output": "bds.total",
            "metrics": [{"name": "rows", "agg": "count"}, {"name": "cost", "agg": "sum", "column": "cost"}],
        }
    )
    plan = compile_aggregate(aggregate, ["cost"], 0, report_date="2026-03-04")

    rows = run_sql(plan.sql("input"), pa.table({"cost": pa.array([], pa.float64())}))

    assert rows == [{"rows": 0, "cost": None}]
    assert plan.output_columns == ("rows", "cost")


def test_sums_over_integers_stay_int64_once_the_probe_finds_them() -> None:
    aggregate = Aggregate.model_validate(
        {
            "output": "bds.total",
            "metrics": [
                {"name": "cores", "agg": "sum", "column": "cores"},
                {"name": "active", "agg": "sum", "expr": "IF(active, 1, 0)"},
                {"name": "cost", "agg": "sum", "column": "cost"},
            ],
        }
    )
    plan = compile_aggregate(aggregate, ["cores", "active", "cost"], 0)
    data = pa.table({"cores": [2, 3], "active": [True, None], "cost": [1.5, 2.0]})
    probe = run_table(plan.sum_inputs_sql("input") or "", data.slice(0, 0))

    integers = frozenset(f.name for f in probe.schema if pa.types.is_integer(f.type))
    result = run_table(replace(plan, integer_sums=integers).sql("input"), data)

    assert integers == {"cores", "active"}
    assert result.to_pylist() == [{"cores": 5, "active": 1, "cost": 3.5}]
    assert [f.type for f in result.schema] == [pa.int64(), pa.int64(), pa.float64()]


def test_report_date_is_added_after_the_metrics() -> None:
    aggregate = Aggregate.model_validate(
        {"output": "bds.total", "reportDate": True, "metrics": [{"name": "rows", "agg": "count"}]}
    )
    plan = compile_aggregate(aggregate, ["cost"], 0, report_date="2026-03-04")

    rows = run_sql(plan.sql("input"), pa.table({"cost": [1.0]}))

    assert [list(r) for r in rows] == [["rows", "report_date"]]
    assert str(rows[0]["report_date"]) == "2026-03-04"


def test_metadata_columns_carry_the_run_start_and_source() -> None:
    out = {"table": "tds.items", "metadata": True}
    plan = compile_transform(
        Transform.model_validate({"output": out}),
        {"a": "STRING"},
        ingestion_timestamp="2026-03-04T05:06:07+00:00",
        source_uri="gs://b/in.csv",
    )

    rows = run_sql(plan.derive_sql("input"), pa.table({"a": ["x"]}))

    assert list(rows[0]) == ["a", "ingestion_timestamp", "source_uri"]
    assert rows[0]["source_uri"] == "gs://b/in.csv"
    assert rows[0]["ingestion_timestamp"].isoformat().startswith("2026-03-04T05:06:07")


def test_column_names_resolve_case_insensitively_to_the_declared_spelling() -> None:
    plan = compile_transform(
        transform(
            standardize=[{"column": "NAME", "case": "upper"}], dedupe={"key": ["Id"], "orderBy": "VERSION"}
        ),
        {"id": "STRING", "name": "STRING", "version": "INT64"},
    )

    assert plan.dedupe_key == ("id",)
    assert plan.dedupe_order == ("version",)
    assert plan.standardized[0][0][0] == "name"


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        (
            {"dedupe": {"key": ["foo"], "orderBy": "v"}},
            "spec.transform.dedupe.key[0]: unknown column 'foo' (known: id, v)",
        ),
        (
            {"dedupe": {"key": ["id"], "orderBy": ["v", "bar"]}},
            "spec.transform.dedupe.orderBy[1]: unknown column 'bar'",
        ),
        (
            {"standardize": [{"column": "id"}, {"column": "nope"}]},
            "spec.transform.standardize[1].column: unknown column 'nope'",
        ),
        (
            {"derive": [{"name": "d", "expr": "v + missing"}]},
            "spec.transform.derive[0].expr 'v + missing': unknown column 'missing'",
        ),
        (
            {"derive": [{"name": "v", "expr": "1"}]},
            "spec.transform.derive[0].name: column 'v' already exists",
        ),
        ({"filter": "ghost > 1"}, "spec.transform.filter 'ghost > 1': unknown column 'ghost'"),
        (
            {"output": {"table": "t.x", "clusterBy": ["id", "zone"]}},
            "spec.transform.output.clusterBy[1]: unknown column 'zone'",
        ),
        (
            {"output": {"table": "t.x", "partitionBy": "day"}},
            "spec.transform.output.partitionBy.column: unknown column 'day'",
        ),
        (
            {"standardize": [{"column": "v", "case": "lower"}]},
            "spec.transform.standardize[0]: column 'v' is INT64",
        ),
        ({"standardize": [{"column": "v", "fillNull": "none"}]}, "spec.transform.standardize[0].fillNull"),
    ],
)
def test_a_wrong_column_names_the_spec_path(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(SpecSqlError) as raised:
        compile_transform(transform(**fields), {"id": "STRING", "v": "INT64"})

    assert str(raised.value).startswith(path)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        (
            {"groupBy": ["grp", "zone"]},
            "spec.aggregate[2].groupBy[1]: unknown column 'zone' (known: cost, grp)",
        ),
        (
            {"metrics": [{"name": "m", "agg": "sum", "column": "price"}]},
            "spec.aggregate[2].metrics[0].column: unknown column 'price'",
        ),
        (
            {"metrics": [{"name": "m", "agg": "sum", "expr": "price * 2"}]},
            "spec.aggregate[2].metrics[0].expr 'price * 2': unknown column 'price'",
        ),
        (
            {"metrics": [{"name": "grp", "agg": "count"}]},
            "spec.aggregate[2].metrics[0].name: column 'grp' already exists",
        ),
        (
            {"metrics": [{"name": "m", "agg": "sum", "expr": "SUM(cost)"}]},
            "spec.aggregate[2].metrics[0].expr 'SUM(cost)': SUM is not allowed",
        ),
    ],
)
def test_a_wrong_aggregate_names_the_spec_path(fields: dict[str, Any], path: str) -> None:
    aggregate = Aggregate.model_validate(
        {"output": "bds.k", "groupBy": ["grp"], "metrics": [{"name": "n", "agg": "count"}]} | fields
    )

    with pytest.raises(SpecSqlError) as raised:
        compile_aggregate(aggregate, ["grp", "cost"], 2)

    assert str(raised.value).startswith(path)


def test_the_row_id_column_name_is_reserved() -> None:
    with pytest.raises(SpecSqlError, match="reserved"):
        compile_transform(transform(), {"id": "STRING", ROW_ID: "INT64"})
