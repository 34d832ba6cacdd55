"""Lookups in the TDS pipeline on the in-process runner, checked against a reference written in plain
Python: both join paths (broadcast and keyed) as composite transforms and in whole runs, rejected and
filtered rows set aside, and the transform stage's rejects table, lineage and failures."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import pyarrow as pa
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from beam.pipelines import tds
from beam.pipelines.chunks import LOCAL_RUNNER, column_types
from beam.pipelines.lookups import JoinReference, ReferenceChunks
from beam.sql import ROW_ID, TransformSql, compile_transform
from beam.stages import transform as transform_stage
from beam.stages.context import StageContext, StageFailed
from beam.warehouse import LineageRecord, open_warehouse
from controller.spec import PipelineRun, Transform

pytestmark = pytest.mark.integration

RUN = "orders-test"
RAW = "shop_raw.orders"
TDS = "shop_tds.orders"
REJECTS = "shop_tds.orders_rejects"
CUSTOMERS = "shop_ref.customers"
STARTED_AT = "2026-02-03T04:05:06+00:00"
RAW_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer", pa.string()),
        ("sku", pa.string()),
        ("qty", pa.int64()),
        ("updated", pa.timestamp("us")),
    ]
)
CUSTOMER_SCHEMA = pa.schema([("customer_id", pa.string()), ("segment", pa.string()), ("region", pa.string())])
CUSTOMER_OF = {"ann": ("retail", "eu"), "bob": ("pro", "us"), "cat": ("staff", "eu"), "dan": (None, "us")}
PRODUCTS_CSV = "sku_code,category,Unit Price\nA,tools,2.5\nB,toys,10\nC,food,1\nD,,4\n"
PRODUCT_OF = {"A": ("tools", 2.5), "B": ("toys", 10.0), "C": ("food", 1.0), "D": (None, 4.0)}
PRODUCT_SCHEMA = pa.schema(
    [("sku_code", pa.string()), ("category", pa.string()), ("unit_price", pa.float64())]
)
CUSTOMERS_LOOKUP: dict[str, Any] = {
    "name": "customers",
    "table": CUSTOMERS,
    "on": {"customer": "customer_id"},
    "columns": ["segment", {"name": "region", "as": "customer_region"}],
    "onMissing": "reject",
}
PRODUCTS_LOOKUP: dict[str, Any] = {
    "name": "products",
    "uri": "products.csv",
    "schema": [
        {"name": "sku_code", "required": True},
        {"name": "category"},
        {"name": "unit_price", "type": "FLOAT64", "from": "Unit Price"},
    ],
    "on": {"sku": "sku_code"},
    "columns": ["category", "unit_price"],
    "type": "inner",
}
TRANSFORM: dict[str, Any] = {
    "standardize": [{"column": "customer", "case": "lower"}],
    "lookups": [CUSTOMERS_LOOKUP, PRODUCTS_LOOKUP],
    "derive": [{"name": "amount", "expr": "qty * unit_price"}, {"name": "big", "expr": "amount >= 20"}],
    "filter": "segment != 'staff'",
    "keepFiltered": True,
    "dedupe": {"key": ["order_id"], "orderBy": "updated"},
    "output": {"table": TDS},
}
CUSTOMER_SPELLINGS = {
    " Ann": "ann",
    "BOB": "bob",
    "cat ": "cat",
    "dan": "dan",
    "Eve": "eve",
    None: None,
    " ": None,
}


# ---- data and the reference in plain Python --------------------------------------------------------


def raw_rows(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """Orders with repeated ids, customers and products that are missing, staff, or NULL."""
    rnd = random.Random(seed)
    stamps = [None, *(datetime(2026, 1, 1) + timedelta(hours=h) for h in range(3))]
    return [
        {
            "order_id": f"o-{rnd.randrange(int(count * 0.7)):04d}",
            "customer": rnd.choice(list(CUSTOMER_SPELLINGS)),
            "sku": rnd.choice(["A", "B", "C", "D", "Z", None]),
            "qty": rnd.choice([None, 1, 2, 3, 7]),
            "updated": rnd.choice(stamps),
        }
        for _ in range(count)
    ]


def enriched(position: int, row: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """One raw row through TRANSFORM up to the dedupe: (the row, or None if an inner lookup drops it;
    the reason it is set aside, or None if it stays)."""
    customer = CUSTOMER_SPELLINGS[row["customer"]]
    if row["sku"] not in PRODUCT_OF:
        return None, None
    segment, region = CUSTOMER_OF.get(customer or "", (None, None))
    category, price = PRODUCT_OF[row["sku"]]
    amount = row["qty"] * price if row["qty"] is not None else None
    out = {
        "order_id": row["order_id"],
        "customer": customer,
        "sku": row["sku"],
        "qty": row["qty"],
        "updated": row["updated"],
        "segment": segment,
        "customer_region": region,
        "category": category,
        "unit_price": price,
        "amount": amount,
        "big": amount >= 20 if amount is not None else None,
    }
    if customer not in CUSTOMER_OF:
        return out, "lookup_missing:customers"
    if segment is None or segment == "staff":
        return out, "filtered"
    return out, None


def expected_tds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    for position, row in enumerate(rows):
        out, reason = enriched(position, row)
        if out is None or reason is not None:
            continue
        rank = (row["updated"] is not None, row["updated"] or datetime.min, position)
        if row["order_id"] not in latest or rank > latest[row["order_id"]][0]:
            latest[row["order_id"]] = (rank, out)
    return sorted((out for _, out in latest.values()), key=lambda r: r["order_id"])


def expected_rejects(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for position, row in enumerate(rows):
        out, reason = enriched(position, row)
        if out is not None and reason is not None:
            meta = {"reason": reason, "run": RUN, "rejected_at": STARTED_AT, "raw_row": position}
            kept.append(meta | out)
    return kept


def unmatched(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "customers": sum(1 for r in rows if CUSTOMER_SPELLINGS[r["customer"]] not in CUSTOMER_OF),
        "products": sum(1 for r in rows if r["sku"] not in PRODUCT_OF),
    }


# ---- fixtures as functions -------------------------------------------------------------------------


def lineage_of(table: str) -> LineageRecord:
    return LineageRecord(
        table=table,
        run="seed",
        namespace="default",
        stage="load",
        source_uri="test",
        generation=1,
        rows=0,
        written_at=STARTED_AT,
    )


def make_warehouse(
    workdir: Path, rows: list[dict[str, Any]], customers: list[tuple[Any, ...]] | None = None
) -> Path:
    warehouse = open_warehouse(workdir)
    warehouse.replace_table(RAW, pa.Table.from_pylist(rows, schema=RAW_SCHEMA), lineage_of(RAW))
    ref = customers if customers is not None else [(k, *v) for k, v in CUSTOMER_OF.items()]
    table = pa.Table.from_pylist(
        [dict(zip(CUSTOMER_SCHEMA.names, r, strict=True)) for r in ref], CUSTOMER_SCHEMA
    )
    warehouse.replace_table(CUSTOMERS, table, lineage_of(CUSTOMERS))
    (workdir / "products.csv").write_text(PRODUCTS_CSV, encoding="utf-8")
    return warehouse.path


def pipelinerun(workdir: Path, transform: dict[str, Any] | None = None) -> dict[str, Any]:
    """A PipelineRun whose relative lookup uri is already resolved (as loading the YAML file does)."""
    spec = dict(TRANSFORM if transform is None else transform)
    spec["lookups"] = [
        lookup | {"uri": str(workdir / lookup["uri"])} if "uri" in lookup else lookup
        for lookup in spec["lookups"]
    ]
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": RUN, "generation": 2},
        "spec": {
            "source": {"uri": "/data/orders.csv", "columns": [{"name": f.name} for f in RAW_SCHEMA]},
            "load": {"table": RAW},
            "transform": spec,
        },
    }


def context(workdir: Path, doc: dict[str, Any], *beam_args: str) -> StageContext:
    return StageContext(
        run=PipelineRun.model_validate(doc), workdir=workdir, started_at=STARTED_AT, beam_args=list(beam_args)
    )


def read_parts(glob: str, order: str) -> list[dict[str, Any]]:
    return duckdb.sql(f"SELECT * FROM read_parquet('{glob}') ORDER BY {order}").to_arrow_table().to_pylist()


def with_row_ids(table: pa.Table, first: int = 0) -> pa.Table:
    return table.append_column(ROW_ID, pa.array(range(first, first + table.num_rows), pa.int64()))


def customer_reference() -> pa.Table:
    rows = [dict(zip(CUSTOMER_SCHEMA.names, (k, *v), strict=True)) for k, v in CUSTOMER_OF.items()]
    return with_row_ids(pa.Table.from_pylist(rows, schema=CUSTOMER_SCHEMA))


def product_reference() -> pa.Table:
    rows = [{"sku_code": k, "category": c, "unit_price": p} for k, (c, p) in PRODUCT_OF.items()]
    return with_row_ids(pa.Table.from_pylist(rows, schema=PRODUCT_SCHEMA))


def plan_of(transform: dict[str, Any]) -> TransformSql:
    references = {"customers": customer_reference(), "products": product_reference()}
    return compile_transform(
        Transform.model_validate(transform),
        column_types(RAW_SCHEMA),
        references=[column_types(references[lookup["name"]].schema) for lookup in transform["lookups"]],
    )


def rows_of(key: str, expected: list[dict[str, Any]]) -> Callable[[list[Any]], None]:
    """A matcher for chunks or ``(bucket, chunk)`` elements: exactly ``expected``, ordered by ``key``."""

    def check(actual: list[Any]) -> None:
        tables = [t[1] if isinstance(t, tuple) else t for t in actual]
        rows = sorted((r for t in tables for r in t.to_pylist()), key=lambda r: r[key])
        if rows != expected:
            raise BeamAssertException(f"rows differ:\n{rows}\n!=\n{expected}")

    return check


# ---- composite transforms: both join paths ---------------------------------------------------------


@pytest.mark.parametrize("runner", [LOCAL_RUNNER, "FnApiRunner"])
@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "keyed"])
def test_join_reference_brings_the_columns_of_each_key_on_either_path(broadcast: bool, runner: str) -> None:
    plan = plan_of({"lookups": [CUSTOMERS_LOOKUP], "output": {"table": TDS}})
    (lookup,) = plan.lookups
    customers = ["ann", "eve", None, "cat", "ann", "dan", "bob"]
    chunks = [
        with_row_ids(pa.table({"order_id": [f"o{i}" for i in range(4)], "customer": customers[:4]})),
        with_row_ids(pa.table({"order_id": [f"o{i}" for i in range(4, 7)], "customer": customers[4:]}), 4),
    ]
    reference = customer_reference()
    expected = [
        {
            "order_id": f"o{i}",
            "customer": c,
            ROW_ID: i,
            "segment": CUSTOMER_OF.get(c or "", (None, None))[0],
            "customer_region": CUSTOMER_OF.get(c or "", (None, None))[1],
            lookup.match_column: c in CUSTOMER_OF,
        }
        for i, c in enumerate(customers)
    ]

    with TestPipeline(runner=runner) as p:
        ref_chunks = p | "Reference" >> beam.Create([reference.slice(0, 2), reference.slice(2)])
        out = (
            p
            | "Records" >> beam.Create(chunks)
            | JoinReference(lookup, ReferenceChunks(ref_chunks, reference.schema, broadcast), buckets=3)
        )

        assert_that(out, rows_of(ROW_ID, expected))


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "keyed"])
def test_build_outputs_enriches_derives_filters_and_sets_rows_aside(broadcast: bool) -> None:
    rows = raw_rows(240)
    plan = plan_of(TRANSFORM)
    table = pa.Table.from_pylist(rows, schema=RAW_SCHEMA)

    with TestPipeline(runner=LOCAL_RUNNER) as p:
        references = [
            ReferenceChunks(p | f"Reference{i}" >> beam.Create([ref]), ref.schema, broadcast)
            for i, ref in enumerate([customer_reference(), product_reference()])
        ]
        chunks = p | "Records" >> beam.Create(
            [with_row_ids(table.slice(0, 100)), with_row_ids(table.slice(100), 100)]
        )
        outputs = tds.build_outputs(chunks, plan, 3, references, RUN, STARTED_AT)

        assert_that(outputs.rows, rows_of("order_id", expected_tds(rows)), label="TdsRows")
        assert_that(outputs.rejects, rows_of("raw_row", expected_rejects(rows)), label="Rejects")


# ---- whole runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["1000000", "1"], ids=["broadcast", "keyed"])
def test_run_enriches_from_a_table_and_a_csv_like_the_plain_python_reference(
    tmp_path: Path, limit: str
) -> None:
    rows = raw_rows(900)
    warehouse = make_warehouse(tmp_path, rows)
    doc = pipelinerun(tmp_path)
    doc["spec"]["transform"]["lookups"][1]["uri"] = "products.csv"  # relative to the YAML file
    spec = tmp_path / "pipelinerun.yaml"
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    args = ["--spec", str(spec), "--warehouse", str(warehouse), "--staging", str(tmp_path / "staging")]

    outcome = tds.run(
        [
            *args,
            "--chunk-rows",
            "100",
            "--buckets",
            "3",
            "--broadcast-limit-rows",
            limit,
            "--started-at",
            STARTED_AT,
        ]
    )

    rejects = expected_rejects(rows)
    missing = unmatched(rows)
    assert read_parts(outcome["parts"], "order_id") == expected_tds(rows)
    assert read_parts(outcome["rejects_parts"], "raw_row") == rejects
    join = "broadcast" if limit != "1" else "keyed"
    assert outcome["lookups"] == {
        "customers": {
            "reference": CUSTOMERS,
            "reference_rows": 4,
            "join": join,
            "unmatched": missing["customers"],
        },
        "products": {
            "reference": str(tmp_path / "products.csv"),
            "reference_rows": 4,
            "join": join,
            "unmatched": missing["products"],
        },
    }
    assert (outcome["rows_read"], outcome["reference_rows_read"]) == (900, 4)
    assert outcome["rows_lookup_dropped"] == missing["products"]
    assert outcome["rows_rejected"] == sum(1 for r in rejects if r["reason"] == "lookup_missing:customers")
    assert outcome["rows_filtered"] == sum(1 for r in rejects if r["reason"] == "filtered")
    assert outcome["rejects_written"] == len(rejects)


# ---- the transform stage ---------------------------------------------------------------------------


def test_transform_stage_writes_the_output_and_its_rejects_with_the_references_in_lineage(
    tmp_path: Path,
) -> None:
    rows = raw_rows(300)
    make_warehouse(tmp_path, rows)
    ctx = context(tmp_path, pipelinerun(tmp_path), "--broadcast-limit-rows", "2")

    result = transform_stage.run(ctx)

    warehouse = open_warehouse(tmp_path)
    table = warehouse.query_arrow(f"SELECT * FROM {TDS} ORDER BY order_id").to_pylist()
    rejects = warehouse.query_arrow(f"SELECT * FROM {REJECTS} ORDER BY raw_row").to_pylist()
    lineage, rejects_lineage = warehouse.lineage(TDS), warehouse.lineage(REJECTS)
    assert table == expected_tds(rows)
    assert rejects == expected_rejects(rows)
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (300, len(table), len(rejects))
    assert result.tables == [TDS, REJECTS]
    assert result.details["rejects_table"] == REJECTS
    assert result.details["lookups"]["customers"]["join"] == "keyed"
    assert lineage is not None and rejects_lineage is not None
    assert lineage.inputs == [RAW, CUSTOMERS, str(tmp_path / "products.csv")]
    assert (rejects_lineage.inputs, rejects_lineage.stage, rejects_lineage.run) == (
        lineage.inputs,
        "transform",
        RUN,
    )


def test_a_left_lookup_that_keeps_unmatched_records_leaves_their_columns_null(tmp_path: Path) -> None:
    rows = [
        {"order_id": "o1", "customer": "ann", "sku": "A", "qty": 1},
        {"order_id": "o2", "customer": "eve", "sku": "B", "qty": 2},
    ]
    make_warehouse(tmp_path, rows)
    keep = {"lookups": [CUSTOMERS_LOOKUP | {"onMissing": "keep"}], "output": {"table": TDS}}

    result = transform_stage.run(context(tmp_path, pipelinerun(tmp_path, keep)))

    table = open_warehouse(tmp_path).query_arrow(f"SELECT order_id, segment FROM {TDS} ORDER BY order_id")
    assert table.to_pylist() == [{"order_id": "o1", "segment": "retail"}, {"order_id": "o2", "segment": None}]
    assert result.details["lookups"]["customers"]["unmatched"] == 1
    assert (result.tables, result.rows_rejected) == ([TDS], 0)
    assert not open_warehouse(tmp_path).exists(REJECTS)


def test_a_fail_lookup_fails_the_stage_naming_the_first_missing_keys_and_writes_nothing(
    tmp_path: Path,
) -> None:
    rows = [
        {"order_id": "o1", "customer": "ann", "sku": "A", "qty": 1},
        {"order_id": "o2", "customer": " Eve", "sku": "B", "qty": 2},
        {"order_id": "o3", "customer": "zoe", "sku": "B", "qty": 2},
        {"order_id": "o4", "customer": "EVE", "sku": "C", "qty": 2},
    ]
    make_warehouse(tmp_path, rows)
    fail = {
        "standardize": [{"column": "customer", "case": "lower"}],
        "lookups": [CUSTOMERS_LOOKUP | {"onMissing": "fail"}],
        "output": {"table": TDS},
    }

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(context(tmp_path, pipelinerun(tmp_path, fail)))

    assert failed.value.reason == "LookupMissing"
    assert str(failed.value) == (
        f"spec.transform.lookups[0]: 3 records have a key with no match in {CUSTOMERS} (onMissing: fail);"
        " first keys: customer='eve' (raw row 1, 2 records); customer='zoe' (raw row 2, 1 records)"
    )
    assert not open_warehouse(tmp_path).exists(TDS)


def test_a_repeated_reference_key_fails_naming_it_unless_pick_latest_says_which_row_wins(
    tmp_path: Path,
) -> None:
    rows = [{"order_id": "o1", "customer": "ann", "sku": "A", "qty": 1}]
    customers = [("ann", "old", "eu"), ("bob", "pro", "us"), ("ann", "new", "us"), ("ann", "newest", "us")]
    make_warehouse(tmp_path, rows, customers)
    unique = {"lookups": [CUSTOMERS_LOOKUP], "output": {"table": TDS}}
    latest = {
        "lookups": [CUSTOMERS_LOOKUP | {"pick": "latest", "orderBy": "region"}],
        "output": {"table": TDS},
    }

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(context(tmp_path, pipelinerun(tmp_path, unique)))
    transform_stage.run(context(tmp_path, pipelinerun(tmp_path, latest)))

    assert failed.value.reason == "DuplicateKeys"
    assert str(failed.value).startswith(
        f"spec.transform.lookups[0]: key (customer_id) is not unique in {CUSTOMERS}: 1 keys repeat,"
        " e.g. customer_id='ann' (3 rows); make the key unique, or set pick: latest"
    )
    table = open_warehouse(tmp_path).query_arrow(f"SELECT segment, customer_region FROM {TDS}")
    assert table.to_pylist() == [{"segment": "newest", "customer_region": "us"}]


def test_a_missing_reference_table_fails_as_missing_input(tmp_path: Path) -> None:
    make_warehouse(tmp_path, raw_rows(5))
    absent = {"lookups": [CUSTOMERS_LOOKUP | {"table": "shop_ref.nobody"}], "output": {"table": TDS}}

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(context(tmp_path, pipelinerun(tmp_path, absent)))

    assert failed.value.reason == "MissingInput"
    assert str(failed.value).startswith("spec.transform.lookups[0].table: shop_ref.nobody does not exist")


def test_a_reference_csv_with_a_bad_row_fails_naming_it(tmp_path: Path) -> None:
    make_warehouse(tmp_path, raw_rows(5))
    (tmp_path / "products.csv").write_text("sku_code,category,Unit Price\nA,tools,cheap\n", encoding="utf-8")
    products = {"lookups": [PRODUCTS_LOOKUP], "output": {"table": TDS}}

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(context(tmp_path, pipelinerun(tmp_path, products)))

    assert failed.value.reason == "BadReference"
    assert "products.csv row 1: unit_price: 'cheap' is not a valid FLOAT64" in str(failed.value)
