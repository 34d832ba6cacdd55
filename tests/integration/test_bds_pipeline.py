"""The BDS pipeline on the in-process runner: ComputeKpis, a full run, and the aggregate stage."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import pyarrow as pa
import pytest
import yaml
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from beam.pipelines import bds
from beam.pipelines.chunks import LOCAL_RUNNER
from beam.sql import compile_aggregate
from beam.stages import aggregate as aggregate_stage
from beam.stages.context import StageContext, StageFailed
from beam.warehouse import LineageRecord, open_warehouse
from controller.spec import Aggregate, PipelineRun

pytestmark = pytest.mark.integration

TDS = "shop_tds.orders"
BY_REGION = "shop_bds.by_region"
TOTALS = "shop_bds.totals"
STARTED_AT = "2026-02-03T04:05:06+00:00"
TDS_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("region", pa.string()),
        ("channel", pa.string()),
        ("customer", pa.string()),
        ("amount", pa.float64()),
        ("items", pa.int64()),
        ("paid", pa.bool_()),
    ]
)
BY_REGION_SPEC: dict[str, Any] = {
    "name": "by-region",
    "output": {"table": BY_REGION},
    "groupBy": ["region", "channel"],
    "metrics": [
        {"name": "orders", "agg": "count"},
        {"name": "with_customer", "agg": "count", "column": "customer"},
        {"name": "customers", "agg": "count_distinct", "column": "customer"},
        {"name": "revenue", "agg": "sum", "column": "amount"},
        {"name": "avg_items", "agg": "avg", "column": "items"},
        {"name": "smallest", "agg": "min", "column": "amount"},
        {"name": "largest", "agg": "max", "column": "amount"},
        {"name": "paid_orders", "agg": "sum", "expr": "IF(paid, 1, 0)"},
    ],
}
TOTALS_SPEC: dict[str, Any] = {
    "output": TOTALS,
    "reportDate": True,
    "metrics": [{"name": "orders", "agg": "count"}, {"name": "items", "agg": "sum", "column": "items"}],
}


def pipelinerun(aggregates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "shop-test", "generation": 2},
        "spec": {
            "source": {"uri": "/data/orders.csv", "columns": [{"name": f.name} for f in TDS_SCHEMA]},
            "load": {"table": "shop_raw.orders"},
            "transform": {"output": {"table": TDS}},
            "aggregate": [BY_REGION_SPEC, TOTALS_SPEC] if aggregates is None else aggregates,
        },
    }


def tds_rows(count: int, seed: int = 11) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [
        {
            "order_id": f"o-{i}",
            "region": rnd.choice(["emea", "amer", "apac", None]),
            "channel": rnd.choice(["web", "store"]),
            "customer": rnd.choice(["c1", "c2", "c3", "c4", None]),
            "amount": float(rnd.randrange(1, 500)),
            "items": rnd.choice([1, 2, 3, None]),
            "paid": rnd.choice([True, False, None]),
        }
        for i in range(count)
    ]


def expected_by_region(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The by-region KPIs in plain Python; NULL region is a group of its own and sorts last."""
    groups: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["region"], row["channel"])].append(row)
    out = []
    for (region, channel), members in groups.items():
        customers = [m["customer"] for m in members if m["customer"] is not None]
        items = [m["items"] for m in members if m["items"] is not None]
        amounts = [m["amount"] for m in members]
        out.append(
            {
                "region": region,
                "channel": channel,
                "orders": len(members),
                "with_customer": len(customers),
                "customers": len(set(customers)),
                "revenue": sum(amounts),
                "avg_items": sum(items) / len(items) if items else None,
                "smallest": min(amounts),
                "largest": max(amounts),
                "paid_orders": sum(1 for m in members if m["paid"]),
            }
        )
    return sorted(out, key=lambda r: (r["region"] is None, r["region"] or "", r["channel"]))


def make_warehouse(workdir: Path, rows: list[dict[str, Any]]) -> Path:
    warehouse = open_warehouse(workdir)
    lineage = LineageRecord(
        table=TDS,
        run="seed",
        namespace="default",
        stage="transform",
        source_uri="test",
        generation=1,
        rows=0,
        written_at=STARTED_AT,
    )
    warehouse.replace_table(TDS, pa.Table.from_pylist(rows, schema=TDS_SCHEMA), lineage)
    return warehouse.path


def kpi_rows(expected: list[dict[str, Any]], buckets: int) -> Callable[[list[Any]], None]:
    def check(actual: list[tuple[int, pa.Table]]) -> None:
        rows = [r for _, t in actual for r in t.to_pylist()]
        rows.sort(key=lambda r: (r["region"] is None, r["region"] or "", r["channel"]))
        if rows != expected:
            raise BeamAssertException(f"rows differ:\n{rows}\n!=\n{expected}")
        if sorted(b for b, _ in actual) != list(range(buckets)):
            raise BeamAssertException(f"buckets {sorted(b for b, _ in actual)} != 0..{buckets - 1}")

    return check


def test_compute_kpis_aggregates_groups_split_across_chunks() -> None:
    rows = tds_rows(240)
    plan = compile_aggregate(Aggregate.model_validate(BY_REGION_SPEC), TDS_SCHEMA.names, 0)
    chunks = [pa.Table.from_pylist(rows[i : i + 50], schema=TDS_SCHEMA) for i in range(0, 240, 50)]

    with TestPipeline(runner=LOCAL_RUNNER) as p:
        out = p | beam.Create(chunks) | "ComputeKpis" >> bds.ComputeKpis(plan, buckets=3)

        assert_that(out, kpi_rows(expected_by_region(rows), buckets=3))


def test_compute_kpis_without_group_by_gives_one_row_in_one_bucket() -> None:
    rows = tds_rows(90)
    plan = compile_aggregate(
        Aggregate.model_validate(TOTALS_SPEC), TDS_SCHEMA.names, 1, report_date="2026-02-03"
    )
    chunks = [pa.Table.from_pylist(rows[i : i + 40], schema=TDS_SCHEMA) for i in range(0, 90, 40)]
    items = sum(r["items"] for r in rows if r["items"] is not None)

    def check(actual: list[tuple[int, pa.Table]]) -> None:
        got = [(b, {k: str(v) for k, v in t.to_pylist()[0].items()}) for b, t in actual]
        want = [(0, {"orders": "90", "items": str(items), "report_date": "2026-02-03"})]
        if got != want:
            raise BeamAssertException(f"{got} != {want}")

    with TestPipeline(runner=LOCAL_RUNNER) as p:
        out = p | beam.Create(chunks) | "ComputeKpis" >> bds.ComputeKpis(plan, buckets=4)

        assert_that(out, check)


def test_run_writes_every_aggregate_as_parquet_parts(tmp_path: Path) -> None:
    rows = tds_rows(2000)
    warehouse = make_warehouse(tmp_path, rows)
    spec = tmp_path / "pipelinerun.yaml"
    spec.write_text(yaml.safe_dump(pipelinerun()), encoding="utf-8")

    outcome = bds.run(
        [
            "--spec",
            str(spec),
            "--warehouse",
            str(warehouse),
            "--staging",
            str(tmp_path / "staging"),
            "--buckets",
            "3",
            "--chunk-rows",
            "300",
            "--started-at",
            STARTED_AT,
        ]
    )

    by_region = (
        duckdb.sql(
            f"SELECT * FROM read_parquet('{outcome['outputs'][BY_REGION]['parts']}') ORDER BY region NULLS LAST, channel"
        )
        .to_arrow_table()
        .to_pylist()
    )
    totals = duckdb.sql(f"SELECT * FROM read_parquet('{outcome['outputs'][TOTALS]['parts']}')").fetchall()
    expected = expected_by_region(rows)
    assert [r | {"revenue": pytest.approx(r["revenue"])} for r in by_region] == expected
    assert [(n, int(i), str(d)) for n, i, d in totals] == [
        (2000, sum(r["items"] for r in rows if r["items"] is not None), "2026-02-03")
    ]
    assert outcome["rows_read"] == 2000
    assert outcome["outputs"][BY_REGION]["rows_written"] == len(expected)
    assert outcome["outputs"][TOTALS]["rows_written"] == 1


# ---- the aggregate stage ---------------------------------------------------------------------------


def context(workdir: Path, doc: dict[str, Any]) -> StageContext:
    return StageContext(run=PipelineRun.model_validate(doc), workdir=workdir, started_at=STARTED_AT)


def test_aggregate_stage_replaces_each_kpi_table_ordered_by_group(tmp_path: Path) -> None:
    rows = tds_rows(500)
    make_warehouse(tmp_path, rows)

    result = aggregate_stage.run(context(tmp_path, pipelinerun()))

    warehouse = open_warehouse(tmp_path)
    table = warehouse.query_arrow(f"SELECT * FROM {BY_REGION}").to_pylist()
    lineage = warehouse.lineage(BY_REGION)
    assert [r | {"revenue": pytest.approx(r["revenue"])} for r in table] == expected_by_region(rows)
    assert result.tables == [BY_REGION, TOTALS]
    assert (result.rows_in, result.details["rows"]) == (500, {BY_REGION: len(table), TOTALS: 1})
    assert lineage is not None
    assert (lineage.stage, lineage.inputs, lineage.generation) == ("aggregate", [TDS], 2)
    assert lineage.options == {"name": "by-region", "groupBy": ["region", "channel"]}
    assert warehouse.schema(BY_REGION).field("paid_orders").type == pa.int64()
    assert warehouse.schema(TOTALS).field("items").type == pa.int64()


def test_aggregate_stage_on_an_empty_tds_table_writes_empty_kpi_tables_with_every_column(
    tmp_path: Path,
) -> None:
    make_warehouse(tmp_path, [])

    aggregate_stage.run(context(tmp_path, pipelinerun()))

    warehouse = open_warehouse(tmp_path)
    assert warehouse.row_count(BY_REGION) == 0
    assert warehouse.schema(BY_REGION).names == ["region", "channel"] + [
        m["name"] for m in BY_REGION_SPEC["metrics"]
    ]
    assert warehouse.query_arrow(f"SELECT orders FROM {TOTALS}").to_pylist() == [{"orders": 0}]


def test_aggregate_stage_without_its_input_table_fails_as_bad_input(tmp_path: Path) -> None:
    with pytest.raises(StageFailed) as failed:
        aggregate_stage.run(context(tmp_path, pipelinerun()))

    assert failed.value.bad_input
    assert TDS in str(failed.value)


def test_aggregate_stage_with_an_unknown_group_column_fails_naming_the_field(tmp_path: Path) -> None:
    make_warehouse(tmp_path, tds_rows(5))
    broken = TOTALS_SPEC | {"groupBy": ["country"]}

    with pytest.raises(StageFailed) as failed:
        aggregate_stage.run(context(tmp_path, pipelinerun([BY_REGION_SPEC, broken])))

    assert failed.value.bad_input
    assert str(failed.value).startswith("spec.aggregate[1].groupBy[0]: unknown column 'country'")
