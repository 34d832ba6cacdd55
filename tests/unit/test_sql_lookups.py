"""Lookups in the spec and in the generated SQL, run on DuckDB over small inputs, against hand-written
expectations: keys (same and different names), renames, NULL and missing keys, picking the latest row,
repeated keys, routing rows to the rejects, and the mistakes a spec can make."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
import yaml

from beam.sql import REASON_COLUMN, ROW_ID, LookupSql, SpecSqlError, TransformSql, compile_transform
from controller.spec import PipelineRunSpec, Transform, parse_spec_text
from controller.spec_check import semantic_problems

pytestmark = pytest.mark.unit

OUTPUT = {"table": "tds.orders"}
RECORDS = {"order_id": "STRING", "customer": "STRING", "qty": "INT64"}
CUSTOMERS = {"customer_id": "STRING", "segment": "STRING", "discount": "NUMERIC", "since": "INT64"}
CUSTOMERS_LOOKUP: dict[str, Any] = {
    "name": "customers",
    "table": "ref.customers",
    "on": {"customer": "customer_id"},
    "columns": ["segment", {"name": "discount", "as": "customer_discount"}],
}


def transform(**fields: Any) -> Transform:
    return Transform.model_validate({"output": OUTPUT} | fields)


def plan_with(lookup: dict[str, Any], **fields: Any) -> TransformSql:
    return compile_transform(transform(lookups=[lookup], **fields), RECORDS, references=[CUSTOMERS])


def run_sql(sql: str, **relations: pa.Table) -> list[dict[str, Any]]:
    with duckdb.connect() as con:
        for name, table in relations.items():
            con.register(name, table)
        return con.sql(sql).to_arrow_table().to_pylist()


def reference(rows: list[dict[str, Any]]) -> pa.Table:
    """Customer reference rows, with the row id a read adds."""
    schema = pa.schema(
        [
            ("customer_id", pa.string()),
            ("segment", pa.string()),
            ("discount", pa.decimal128(38, 9)),
            ("since", pa.int64()),
        ]
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    return table.append_column(ROW_ID, pa.array(range(len(rows)), pa.int64()))


def picked(lookup: LookupSql, rows: list[dict[str, Any]]) -> pa.Table:
    """The reference as a join reads it: prepared, then one row per key."""
    with duckdb.connect() as con:
        con.register("raw_reference", reference(rows))
        prepared = con.sql(lookup.prepare_sql("raw_reference")).to_arrow_table()
        con.register("prepared", prepared)
        return con.sql(lookup.pick_sql("prepared")).to_arrow_table()


def records(*rows: tuple[str, str | None, int]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"order_id": o, "customer": c, "qty": q} for o, c, q in rows],
        schema=pa.schema([("order_id", pa.string()), ("customer", pa.string()), ("qty", pa.int64())]),
    )


def by_order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["order_id"])


# ---- the join ---------------------------------------------------------------------------------------


def test_join_brings_renamed_columns_and_flags_a_missing_key_with_nulls() -> None:
    plan = plan_with(CUSTOMERS_LOOKUP)
    (lookup,) = plan.lookups
    ref = picked(
        lookup, [{"customer_id": "ann", "segment": "retail", "discount": Decimal("1.5"), "since": 2020}]
    )

    rows = run_sql(
        lookup.join_sql("rows", "reference"),
        rows=records(("o1", "ann", 2), ("o2", "zed", 1)),
        reference=ref,
    )

    assert by_order(rows) == [
        {
            "order_id": "o1",
            "customer": "ann",
            "qty": 2,
            "segment": "retail",
            "customer_discount": Decimal("1.500000000"),
            lookup.match_column: True,
        },
        {
            "order_id": "o2",
            "customer": "zed",
            "qty": 1,
            "segment": None,
            "customer_discount": None,
            lookup.match_column: False,
        },
    ]
    assert plan.output_columns == ("order_id", "customer", "qty", "segment", "customer_discount")


def test_a_null_key_matches_nothing_not_even_a_null_reference_key() -> None:
    (lookup,) = plan_with(CUSTOMERS_LOOKUP).lookups
    ref = picked(lookup, [{"customer_id": None, "segment": "ghost", "discount": 0, "since": 1}])

    rows = run_sql(lookup.join_sql("rows", "reference"), rows=records(("o1", None, 1)), reference=ref)

    assert [(r["segment"], r[lookup.match_column]) for r in rows] == [(None, False)]
    assert ref.num_rows == 0


def test_keys_with_different_names_on_each_side_join_on_every_pair() -> None:
    lookup_spec = {
        "table": "ref.prices",
        "on": {"sku": "product", "zone": "region"},
        "columns": [{"name": "price", "as": "unit_price"}],
    }
    plan = compile_transform(
        transform(lookups=[lookup_spec]),
        {"sku": "STRING", "zone": "STRING"},
        references=[{"product": "STRING", "region": "STRING", "price": "FLOAT64"}],
    )
    (lookup,) = plan.lookups
    prices = pa.table(
        {
            "product": ["a", "a", "b"],
            "region": ["eu", "us", "eu"],
            "price": [1.0, 2.0, 3.0],
            ROW_ID: pa.array([0, 1, 2], pa.int64()),
        }
    )
    with duckdb.connect() as con:
        con.register("raw_reference", prices)
        con.register("prepared", con.sql(lookup.prepare_sql("raw_reference")).to_arrow_table())
        ref = con.sql(lookup.pick_sql("prepared")).to_arrow_table()

    rows = run_sql(
        lookup.join_sql("rows", "reference"),
        rows=pa.table({"sku": ["a", "a", "b", "b"], "zone": ["us", "eu", "eu", "us"]}),
        reference=ref,
    )

    found = sorted((r["sku"], r["zone"], r["unit_price"]) for r in rows)
    assert found == [("a", "eu", 1.0), ("a", "us", 2.0), ("b", "eu", 3.0), ("b", "us", None)]
    assert (lookup.keys, lookup.reference_keys) == (("sku", "zone"), ("product", "region"))


def test_pick_latest_keeps_the_largest_order_then_the_later_row() -> None:
    lookup_spec = CUSTOMERS_LOOKUP | {"pick": "latest", "orderBy": "since"}
    (lookup,) = plan_with(lookup_spec).lookups
    rows = [
        {"customer_id": "ann", "segment": "old", "discount": 0, "since": 2019},
        {"customer_id": "ann", "segment": "new", "discount": 0, "since": 2024},
        {"customer_id": "ann", "segment": "older", "discount": 0, "since": None},
        {"customer_id": "bob", "segment": "first", "discount": 0, "since": 2020},
        {"customer_id": "bob", "segment": "tie-later", "discount": 0, "since": 2020},
    ]

    ref = picked(lookup, rows)

    assert sorted((r["__dataops_key_0"], r["segment"]) for r in ref.to_pylist()) == [
        ("ann", "new"),
        ("bob", "tie-later"),
    ]


def test_duplicates_sql_names_the_most_repeated_keys_and_counts_them_all() -> None:
    (lookup,) = plan_with(CUSTOMERS_LOOKUP).lookups
    rows = [
        {"customer_id": key, "segment": "s", "discount": 0, "since": 1}
        for key in ["ann", "bob", "bob", "cat", "cat", "cat", None, None]
    ]

    found = run_sql(lookup.duplicates_sql("reference", sample=1), reference=reference(rows))

    assert found == [{"customer_id": "cat", "copies": 3, "repeated_keys": 2}]


def test_a_key_hashes_to_the_same_bucket_on_both_sides_whatever_its_integer_width() -> None:
    plan = compile_transform(
        transform(lookups=[{"table": "ref.k", "on": {"k": "id"}, "columns": ["v"]}]),
        {"k": "INT64"},
        references=[{"id": "INT64", "v": "STRING"}],
    )
    (lookup,) = plan.lookups
    narrow = pa.table({"k": pa.array([1, 2, 3, 40, 500], pa.int32())})
    wide = pa.table(
        {
            "id": pa.array([1, 2, 3, 40, 500], pa.int64()),
            "v": ["a"] * 5,
            ROW_ID: pa.array(range(5), pa.int64()),
        }
    )
    with duckdb.connect() as con:
        con.register("wide", wide)
        prepared = con.sql(lookup.prepare_sql("wide")).to_arrow_table()

    left = run_sql(lookup.bucket_sql("rows", 7, prepared=False), rows=narrow)
    right = run_sql(lookup.bucket_sql("reference", 7, prepared=True), reference=prepared)

    assert left == right


# ---- one statement: standardize, lookups, derive, filter -------------------------------------------


def test_select_sql_joins_before_derive_so_a_derived_column_reads_a_looked_up_one() -> None:
    plan = compile_transform(
        transform(
            standardize=[{"column": "customer", "case": "lower"}],
            lookups=[CUSTOMERS_LOOKUP | {"type": "inner"}],
            derive=[
                {"name": "discounted", "expr": "qty * (1 - customer_discount)"},
                {"name": "big", "expr": "discounted >= 5"},
            ],
            filter="segment != 'staff'",
        ),
        RECORDS,
        references=[CUSTOMERS],
    )
    (lookup,) = plan.lookups
    ref = picked(
        lookup,
        [
            {"customer_id": "ann", "segment": "retail", "discount": Decimal("0.5"), "since": 1},
            {"customer_id": "bob", "segment": "staff", "discount": Decimal("0.9"), "since": 1},
        ],
    )

    rows = run_sql(
        plan.select_sql("rows", ["customers"]),
        rows=records(("o1", " ANN ", 20), ("o2", "Bob", 3), ("o3", "zed", 9), ("o4", "ann", 4)),
        customers=ref,
    )

    assert [(r["order_id"], float(r["discounted"]), r["big"]) for r in by_order(rows)] == [
        ("o1", 10.0, True),
        ("o4", 2.0, False),
    ]
    assert list(rows[0]) == [*RECORDS, "segment", "customer_discount", "discounted", "big"]


def test_a_derive_over_a_looked_up_numeric_divides_like_bigquery() -> None:
    plan = plan_with(CUSTOMERS_LOOKUP, derive=[{"name": "per_item", "expr": "customer_discount / qty"}])
    (lookup,) = plan.lookups
    ref = picked(lookup, [{"customer_id": "ann", "segment": "s", "discount": 1, "since": 1}])

    rows = run_sql(plan.select_sql("rows", ["customers"]), rows=records(("o1", "ann", 3)), customers=ref)

    assert str(rows[0]["per_item"]) == "0.333333333"


# ---- routing: the rejects --------------------------------------------------------------------------


def test_route_sql_names_fail_then_reject_lookups_then_the_filter() -> None:
    plan = compile_transform(
        transform(
            lookups=[
                CUSTOMERS_LOOKUP | {"onMissing": "reject"},
                {
                    "name": "vip",
                    "table": "ref.vip",
                    "on": ["customer"],
                    "columns": ["tier"],
                    "onMissing": "fail",
                },
            ],
            filter="qty > 1",
            keepFiltered=True,
        ),
        RECORDS,
        references=[CUSTOMERS, {"customer": "STRING", "tier": "STRING"}],
    )
    customers, vip = plan.lookups
    flags = pa.table(
        {
            "order_id": ["both", "customers", "filtered", "stays"],
            "qty": [1, 5, 1, 5],
            customers.match_column: [False, False, True, True],
            vip.match_column: [False, True, True, True],
        }
    )

    rows = run_sql(plan.route_sql("chunk"), chunk=flags)

    assert [(r["order_id"], r[REASON_COLUMN]) for r in rows] == [
        ("both", "lookup_missing:vip"),
        ("customers", "lookup_missing:customers"),
        ("filtered", "filtered"),
        ("stays", None),
    ]
    assert list(rows[0]) == ["order_id", "qty", REASON_COLUMN]
    assert plan.kept_reasons == ("lookup_missing:customers", "lookup_missing:vip", "filtered")
    assert (plan.routes, plan.writes_rejects) == (True, True)


def test_rejects_sql_puts_reason_run_time_and_raw_row_before_the_row() -> None:
    plan = compile_transform(transform(filter="qty > 1", keepFiltered=True), RECORDS)
    routed = pa.table(
        {"order_id": ["o1"], "qty": [1], ROW_ID: pa.array([7], pa.int64()), REASON_COLUMN: ["filtered"]}
    )

    rows = run_sql(plan.rejects_sql("chunk", "run-a", "2026-01-02T03:04:05+00:00"), chunk=routed)

    assert rows == [
        {
            "reason": "filtered",
            "run": "run-a",
            "rejected_at": "2026-01-02T03:04:05+00:00",
            "raw_row": 7,
            "order_id": "o1",
            "qty": 1,
        }
    ]


def test_only_a_spec_that_can_set_rows_aside_writes_rejects() -> None:
    keep = plan_with(CUSTOMERS_LOOKUP, filter="qty > 1")
    fail = plan_with(CUSTOMERS_LOOKUP | {"onMissing": "fail"})
    inner = plan_with(CUSTOMERS_LOOKUP | {"type": "inner"})

    assert (keep.routes, keep.writes_rejects) == (False, False)
    assert (fail.routes, fail.writes_rejects) == (True, False)
    assert (inner.routes, inner.writes_rejects) == (False, False)


# ---- mistakes name the spec path -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lookup", "fields", "message"),
    [
        (
            CUSTOMERS_LOOKUP | {"on": {"client": "customer_id"}},
            {},
            "spec.transform.lookups[0].on.client: unknown column 'client' (known: customer, order_id, qty)",
        ),
        (
            CUSTOMERS_LOOKUP | {"on": {"customer": "id"}},
            {},
            "spec.transform.lookups[0].on.customer: unknown column 'id' in ref.customers",
        ),
        (
            CUSTOMERS_LOOKUP | {"columns": ["segment", "tier"]},
            {},
            "spec.transform.lookups[0].columns[1].name: unknown column 'tier' in ref.customers",
        ),
        (
            CUSTOMERS_LOOKUP | {"on": {"qty": "customer_id"}},
            {},
            "spec.transform.lookups[0].on.qty: 'qty' is INT64 but 'customer_id' in ref.customers is STRING",
        ),
        (
            CUSTOMERS_LOOKUP | {"columns": ["since", {"name": "segment", "as": "qty"}]},
            {},
            "spec.transform.lookups[0].columns[1]: column 'qty' already exists",
        ),
        (
            CUSTOMERS_LOOKUP | {"pick": "latest", "orderBy": ["since", "when"]},
            {},
            "spec.transform.lookups[0].orderBy[1]: unknown column 'when' in ref.customers",
        ),
        (
            CUSTOMERS_LOOKUP | {"columns": [{"name": "segment", "as": "reason"}]},
            {"filter": "qty > 1", "keepFiltered": True},
            "spec.transform: tds.orders_rejects adds a column 'reason'",
        ),
    ],
)
def test_a_wrong_lookup_names_the_spec_path(
    lookup: dict[str, Any], fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecSqlError) as raised:
        plan_with(lookup, **fields)

    assert str(raised.value).startswith(message)


def test_a_derive_may_not_read_a_column_a_lookup_does_not_bring() -> None:
    with pytest.raises(SpecSqlError) as raised:
        plan_with(CUSTOMERS_LOOKUP, derive=[{"name": "d", "expr": "since + 1"}])

    assert str(raised.value).startswith("spec.transform.derive[0].expr 'since + 1': unknown column 'since'")


def test_each_lookup_needs_its_reference_columns() -> None:
    with pytest.raises(SpecSqlError, match=r"1 lookups, but the columns of 0 references"):
        compile_transform(transform(lookups=[CUSTOMERS_LOOKUP]), RECORDS)


# ---- the spec model and its checks -----------------------------------------------------------------


def spec_with(transform_fields: dict[str, Any], load_table: str = "raw.orders") -> PipelineRunSpec:
    columns = [{"name": n, "type": t} for n, t in RECORDS.items()]
    return PipelineRunSpec.model_validate(
        {
            "source": {"uri": "/data/orders.csv", "columns": columns},
            "load": {"table": load_table},
            "transform": {"output": OUTPUT} | transform_fields,
        }
    )


def test_on_takes_a_list_of_shared_names_or_a_mapping_and_columns_a_name_or_a_rename() -> None:
    lookup = transform(
        lookups=[{"table": "ref.c", "on": ["customer"], "columns": ["segment", {"name": "x", "as": "y"}]}]
    ).lookups[0]

    assert lookup.on == {"customer": "customer"}
    assert [(c.name, c.output_name) for c in lookup.columns] == [("segment", "segment"), ("x", "y")]
    assert (lookup.type, lookup.on_missing, lookup.pick, lookup.label) == ("left", "keep", "unique", "ref.c")


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        ({"on": ["k"], "columns": ["v"]}, "give the reference as 'table' or 'uri', one of them"),
        ({"uri": "r.csv", "on": ["k"], "columns": ["v"]}, "a uri lookup needs 'schema'"),
        (
            {"table": "r.t", "schema": [{"name": "k"}], "on": ["k"], "columns": ["v"]},
            "a table lookup reads its columns from the warehouse",
        ),
        (
            {"table": "r.t", "on": ["k"], "columns": ["v"], "type": "inner", "onMissing": "reject"},
            "onMissing applies to type: left",
        ),
        ({"table": "r.t", "on": ["k"], "columns": ["v"], "pick": "latest"}, "pick: latest needs orderBy"),
        ({"table": "r.t", "on": ["k"], "columns": ["v"], "orderBy": "k"}, "orderBy only applies with pick"),
    ],
)
def test_a_lookup_the_model_refuses_says_why(lookup: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        transform(lookups=[lookup])


def test_semantic_check_lets_derive_filter_and_dedupe_use_looked_up_columns() -> None:
    spec = spec_with(
        {
            "lookups": [CUSTOMERS_LOOKUP],
            "derive": [{"name": "d", "expr": "customer_discount * qty"}],
            "filter": "segment IS NOT NULL",
            "dedupe": {"key": ["order_id"], "orderBy": ["customer_discount"]},
        }
    )

    assert semantic_problems(spec) == []


def test_semantic_check_names_each_wrong_lookup_column() -> None:
    csv_lookup = {
        "name": "prices",
        "uri": "/data/prices.csv",
        "schema": [{"name": "sku"}, {"name": "price", "type": "FLOAT64"}, {"name": "sku"}],
        "on": {"product": "code"},
        "columns": ["price", "cost", {"name": "sku", "as": "qty"}],
    }
    spec = spec_with(
        {
            "lookups": [CUSTOMERS_LOOKUP, csv_lookup, CUSTOMERS_LOOKUP | {"columns": ["tier"]}],
            "filter": "tier = 'x'",
            "keepFiltered": True,
        }
    )

    assert semantic_problems(spec) == [
        (
            "spec.transform.lookups[1].on.product",
            "unknown column 'product' (known: order_id, customer, qty, segment, customer_discount)",
        ),
        ("spec.transform.lookups[1].schema[2].name", "column 'sku' is declared twice"),
        ("spec.transform.lookups[1].on.product", "unknown reference column 'code' (schema: sku, price)"),
        ("spec.transform.lookups[1].columns[1]", "unknown column 'cost' (known: sku, price)"),
        ("spec.transform.lookups[1].columns[2]", "column 'qty' already exists; rename it with 'as'"),
        ("spec.transform.lookups[2].name", "lookup name 'customers' is used twice; give each a name"),
    ]


def test_semantic_check_wants_a_filter_with_keep_filtered_and_counts_the_rejects_table() -> None:
    keep_without_filter = spec_with({"keepFiltered": True})
    clash = spec_with(
        {"lookups": [CUSTOMERS_LOOKUP | {"onMissing": "reject"}]}, load_table="tds.orders_rejects"
    )

    assert semantic_problems(keep_without_filter) == [
        ("spec.transform.keepFiltered", "keeps the rows the filter drops: add a filter")
    ]
    assert semantic_problems(clash) == [
        ("spec", "table tds.orders_rejects is written twice by this run; give each output its own table")
    ]


def test_a_relative_lookup_uri_resolves_against_the_yaml_folder(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "orders"},
        "spec": {
            "source": {"uri": "orders.csv", "columns": [{"name": "sku"}]},
            "load": {"table": "raw.orders"},
            "transform": {
                "lookups": [
                    {
                        "uri": "ref/products.csv",
                        "schema": [{"name": "sku"}],
                        "on": ["sku"],
                        "columns": ["sku"],
                    },
                    {"table": "ref.p", "on": ["sku"], "columns": ["price"]},
                ],
                "output": OUTPUT,
            },
        },
    }

    run, _ = parse_spec_text(yaml.safe_dump(doc), "run.yaml", tmp_path)

    assert run.spec.transform is not None
    assert run.spec.transform.lookups[0].uri == str(tmp_path / "ref" / "products.csv")
    assert run.spec.transform.lookups[1].uri is None


def test_a_bare_on_in_yaml_is_read_as_on(tmp_path: Path) -> None:
    text = """
apiVersion: dataops.io/v1alpha1
kind: PipelineRun
metadata: {name: orders}
spec:
  source: {uri: orders.csv, columns: [{name: sku}]}
  load: {table: raw.orders}
  transform:
    lookups:
      - table: ref.p
        on: [sku]
        columns: [price]
    output: {table: tds.orders}
"""

    run, _ = parse_spec_text(text, "run.yaml", tmp_path)

    assert run.spec.transform is not None
    assert run.spec.transform.lookups[0].on == {"sku": "sku"}
