"""The TDS pipeline on the in-process runner: its composite transforms, a full run, and the transform stage."""

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
from beam.pipelines.chunks import LOCAL_RUNNER, ArrowTableCoder, column_types
from beam.sql import ROW_ID, TransformSql, compile_transform
from beam.stages import transform as transform_stage
from beam.stages.context import StageContext, StageFailed
from beam.warehouse import LineageRecord, open_warehouse
from controller.spec import PipelineRun, Transform

pytestmark = pytest.mark.integration

RAW = "items_raw.items"
TDS = "items_tds.items"
STARTED_AT = "2026-02-03T04:05:06+00:00"
RAW_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("owner", pa.string()),
        ("cores", pa.int64()),
        ("cost", pa.float64()),
        ("updated", pa.timestamp("us")),
    ]
)
TRANSFORM: dict[str, Any] = {
    "standardize": [
        {"column": "name", "case": "title"},
        {"column": "kind", "case": "lower", "nullValues": ["n/a"]},
        {"column": "owner", "case": "lower", "fillNull": "unassigned"},
        {"column": "cores", "fillNull": 0},
    ],
    "derive": [
        {"name": "cost_x2", "expr": "cost * 2"},
        {
            "name": "band",
            "expr": "CASE WHEN cost_x2 >= 2000 THEN 'high' WHEN cost >= 100 THEN 'medium' ELSE 'low' END",
        },
        {"name": "per_core", "expr": "SAFE_DIVIDE(cost, cores)"},
    ],
    "filter": "kind IS NULL OR kind != 'bucket'",
    "dedupe": {"key": ["item_id"], "orderBy": "updated"},
    "output": {
        "table": TDS,
        "clusterBy": ["kind"],
        "partitionBy": {"column": "updated", "granularity": "DAY"},
    },
}
TITLE = {"  alpha one ": "Alpha One", "beta-TWO": "Beta-Two", "gamma_three x": "Gamma_Three X"}
KIND = {"VM": "vm", " disk ": "disk", "Bucket": "bucket", "N/A": None, None: None}
OWNER = {"Ann": "ann", " BOB": "bob", None: "unassigned", "": "unassigned"}


def pipelinerun(transform: dict[str, Any] | None = None) -> dict[str, Any]:
    columns = [{"name": f.name} for f in RAW_SCHEMA]
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "items-test", "generation": 3},
        "spec": {
            "source": {"uri": "/data/items.csv", "columns": columns},
            "load": {"table": RAW},
            "transform": TRANSFORM if transform is None else transform,
        },
    }


def raw_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Rows with ~20% repeated ids, ties and NULLs on the orderBy column."""
    rnd = random.Random(seed)
    unique = int(count * 0.8)
    stamps = [None, *(datetime(2026, 1, 1) + timedelta(hours=h) for h in range(4))]
    return [
        {
            "item_id": f"it-{i if i < unique else rnd.randrange(unique):05d}",
            "name": rnd.choice([*TITLE, None, "", "  "]),
            "kind": rnd.choice(list(KIND)),
            "owner": rnd.choice(list(OWNER)),
            "cores": rnd.choice([None, 0, 1, 2, 8]),
            "cost": round(rnd.uniform(0, 2000), 2),
            "updated": rnd.choice(stamps),
        }
        for i in range(count)
    ]


def expected_tds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The transform written out in plain Python: standardize, derive, filter, latest per id."""
    latest: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    for position, row in enumerate(rows):
        name = row["name"].strip() if row["name"] else None
        cores = 0 if row["cores"] is None else row["cores"]
        cost = row["cost"]
        out = {
            "item_id": row["item_id"],
            "name": TITLE[row["name"]] if name else None,
            "kind": KIND[row["kind"]],
            "owner": OWNER[row["owner"]],
            "cores": cores,
            "cost": cost,
            "updated": row["updated"],
            "cost_x2": cost * 2,
            "band": "high" if cost * 2 >= 2000 else "medium" if cost >= 100 else "low",
            "per_core": cost / cores if cores else None,
        }
        if out["kind"] == "bucket":
            continue
        rank = (row["updated"] is not None, row["updated"] or datetime.min, position)
        if row["item_id"] not in latest or rank > latest[row["item_id"]][0]:
            latest[row["item_id"]] = (rank, out)
    return sorted((out for _, out in latest.values()), key=lambda r: r["item_id"])


def make_warehouse(workdir: Path, rows: list[dict[str, Any]]) -> Path:
    warehouse = open_warehouse(workdir)
    lineage = LineageRecord(
        table=RAW,
        run="seed",
        namespace="default",
        stage="load",
        source_uri="test",
        generation=1,
        rows=0,
        written_at=STARTED_AT,
    )
    warehouse.replace_table(RAW, pa.Table.from_pylist(rows, schema=RAW_SCHEMA), lineage)
    return warehouse.path


def write_spec(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "pipelinerun.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def plan_of(transform: dict[str, Any]) -> TransformSql:
    return compile_transform(Transform.model_validate(transform), column_types(RAW_SCHEMA))


def chunk(rows: list[dict[str, Any]], first_row: int) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=RAW_SCHEMA)
    return table.append_column(ROW_ID, pa.array(range(first_row, first_row + len(rows)), pa.int64()))


def bucket_rows(key: str, expected: list[dict[str, Any]], buckets: int) -> Callable[[list[Any]], None]:
    """A matcher: the ``(bucket, table)`` elements hold exactly ``expected`` rows, and every bucket is there."""

    def check(actual: list[tuple[int, pa.Table]]) -> None:
        rows = sorted((r for _, t in actual for r in t.to_pylist()), key=lambda r: r[key])
        if rows != expected:
            raise BeamAssertException(f"rows differ:\n{rows}\n!=\n{expected}")
        if sorted(b for b, _ in actual) != list(range(buckets)):
            raise BeamAssertException(f"buckets {sorted(b for b, _ in actual)} != 0..{buckets - 1}")

    return check


def chunk_rows(expected: list[dict[str, Any]]) -> Callable[[list[Any]], None]:
    def check(actual: list[pa.Table]) -> None:
        rows = sorted((r for t in actual for r in t.to_pylist()), key=lambda r: r[ROW_ID])
        if rows != expected:
            raise BeamAssertException(f"rows differ:\n{rows}\n!=\n{expected}")

    return check


# ---- composite transforms --------------------------------------------------------------------------


def test_standardize_then_derive_work_chunk_by_chunk() -> None:
    plan = plan_of({k: TRANSFORM[k] for k in ("standardize", "derive", "output")})
    first = chunk(
        [{"item_id": "a", "name": "beta-TWO", "kind": " disk ", "owner": None, "cores": 2, "cost": 300.0}], 0
    )
    second = chunk(
        [{"item_id": "b", "name": "", "kind": "N/A", "owner": " BOB", "cores": None, "cost": 1500.0}], 1
    )

    with TestPipeline(runner=LOCAL_RUNNER) as p:
        out = (
            p
            | beam.Create([first, second])
            | "Standardize" >> tds.Standardize(plan)
            | "DeriveColumns" >> tds.DeriveColumns(plan)
        )

        assert_that(
            out,
            chunk_rows(
                [
                    {
                        "item_id": "a",
                        "name": "Beta-Two",
                        "kind": "disk",
                        "owner": "unassigned",
                        "cores": 2,
                        "cost": 300.0,
                        "updated": None,
                        ROW_ID: 0,
                        "cost_x2": 600.0,
                        "band": "medium",
                        "per_core": 150.0,
                    },
                    {
                        "item_id": "b",
                        "name": None,
                        "kind": None,
                        "owner": "bob",
                        "cores": 0,
                        "cost": 1500.0,
                        "updated": None,
                        ROW_ID: 1,
                        "cost_x2": 3000.0,
                        "band": "high",
                        "per_core": None,
                    },
                ]
            ),
        )


def test_filter_rows_drops_rows_where_the_filter_is_not_true() -> None:
    plan = plan_of({"filter": "cores > 1", "output": {"table": TDS}})
    rows = [{"item_id": "a", "cores": 2}, {"item_id": "b", "cores": None}, {"item_id": "c", "cores": 1}]

    with TestPipeline(runner=LOCAL_RUNNER) as p:
        out = p | beam.Create([chunk(rows, 0)]) | "FilterRows" >> tds.FilterRows(plan)

        assert_that(
            out,
            chunk_rows(
                [
                    {
                        "item_id": "a",
                        "name": None,
                        "kind": None,
                        "owner": None,
                        "cores": 2,
                        "cost": None,
                        "updated": None,
                        ROW_ID: 0,
                    },
                ]
            ),
        )


def test_dedupe_latest_keeps_one_row_per_key_across_chunks() -> None:
    plan = plan_of({"dedupe": {"key": ["item_id"], "orderBy": "updated"}, "output": {"table": TDS}})
    day = datetime(2026, 1, 5)
    first = chunk(
        [{"item_id": "a", "owner": "old", "updated": day}, {"item_id": "b", "owner": "b1", "updated": None}],
        0,
    )
    second = chunk(
        [
            {"item_id": "a", "owner": "tie-later", "updated": day},
            {"item_id": "b", "owner": "b2", "updated": day - timedelta(days=9)},
            {"item_id": "c", "owner": "c", "updated": None},
        ],
        2,
    )
    blank = {"name": None, "kind": None, "cores": None, "cost": None}

    with TestPipeline(runner=LOCAL_RUNNER) as p:
        out = p | beam.Create([first, second]) | "DedupeLatest" >> tds.DedupeLatest(plan, buckets=4)

        assert_that(
            out,
            bucket_rows(
                "item_id",
                [
                    {"item_id": "a", "owner": "tie-later", "updated": day} | blank,
                    {"item_id": "b", "owner": "b2", "updated": day - timedelta(days=9)} | blank,
                    {"item_id": "c", "owner": "c", "updated": None} | blank,
                ],
                buckets=4,
            ),
        )


@pytest.mark.parametrize("runner", [LOCAL_RUNNER, "FnApiRunner"])
def test_build_composes_the_steps_into_deduplicated_buckets(runner: str) -> None:
    rows = raw_rows(300)
    plan = plan_of(TRANSFORM)

    with TestPipeline(runner=runner) as p:
        chunks = p | beam.Create([chunk(rows[:120], 0), chunk(rows[120:], 120)])
        out = tds.build(chunks, plan, buckets=3)

        assert_that(out, bucket_rows("item_id", expected_tds(rows), buckets=3))


def test_arrow_coder_round_trips_a_slice_without_the_rest_of_its_table() -> None:
    table = chunk(raw_rows(1000), 0)
    piece = table.slice(100, 10)
    coder = ArrowTableCoder()

    encoded = coder.encode(piece)

    assert coder.decode(encoded).equals(piece)
    assert len(encoded) < table.nbytes / 20


# ---- the whole pipeline ----------------------------------------------------------------------------


def test_run_writes_the_transformed_rows_as_parquet_parts(tmp_path: Path) -> None:
    rows = raw_rows(1500)
    warehouse = make_warehouse(tmp_path, rows)
    spec = write_spec(tmp_path, pipelinerun())
    staging = tmp_path / "staging"

    outcome = tds.run(
        [
            "--spec",
            str(spec),
            "--warehouse",
            str(warehouse),
            "--staging",
            str(staging),
            "--buckets",
            "3",
            "--chunk-rows",
            "200",
        ]
    )

    expected = expected_tds(rows)
    written = duckdb.sql(
        f"SELECT * FROM read_parquet('{outcome['parts']}') ORDER BY item_id"
    ).to_arrow_table()
    assert written.to_pylist() == expected
    assert sorted(p.name for p in (staging / TDS).iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    filtered = sum(1 for r in rows if KIND[r["kind"]] == "bucket")
    assert outcome["rows_read"] == 1500
    assert outcome["rows_filtered"] == filtered
    assert outcome["duplicates_dropped"] == 1500 - filtered - len(expected)
    assert outcome["rows_written"] == len(expected)


# ---- the transform stage ---------------------------------------------------------------------------


def context(workdir: Path, doc: dict[str, Any]) -> StageContext:
    return StageContext(run=PipelineRun.model_validate(doc), workdir=workdir, started_at=STARTED_AT)


def test_transform_stage_replaces_the_output_table_and_records_lineage(tmp_path: Path) -> None:
    rows = raw_rows(400)
    make_warehouse(tmp_path, rows)
    ctx = context(tmp_path, pipelinerun())

    result = transform_stage.run(ctx)

    warehouse = open_warehouse(tmp_path)
    table = warehouse.query_arrow(f"SELECT * FROM {TDS} ORDER BY item_id").to_pylist()
    lineage = warehouse.lineage(TDS)
    assert table == expected_tds(rows)
    assert (result.rows_in, result.rows_out, result.tables) == (400, len(table), [TDS])
    assert result.details["duplicates_dropped"] + result.details["rows_filtered"] + len(table) == 400
    assert lineage is not None
    assert (lineage.run, lineage.stage, lineage.generation, lineage.inputs) == (
        "items-test",
        "transform",
        3,
        [RAW],
    )
    assert (lineage.source_uri, lineage.written_at, lineage.rows) == (
        "/data/items.csv",
        STARTED_AT,
        len(table),
    )
    assert lineage.options == {
        "partitionBy": {"column": "updated", "granularity": "DAY"},
        "clusterBy": ["kind"],
    }


def test_transform_stage_on_an_empty_raw_table_writes_an_empty_table_with_every_column(
    tmp_path: Path,
) -> None:
    make_warehouse(tmp_path, [])
    ctx = context(tmp_path, pipelinerun())

    result = transform_stage.run(ctx)

    schema = open_warehouse(tmp_path).schema(TDS)
    assert (result.rows_in, result.rows_out) == (0, 0)
    assert open_warehouse(tmp_path).row_count(TDS) == 0
    assert schema.names == [f.name for f in RAW_SCHEMA] + ["cost_x2", "band", "per_core"]


def test_transform_stage_without_its_input_table_fails_as_bad_input(tmp_path: Path) -> None:
    ctx = context(tmp_path, pipelinerun())

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(ctx)

    assert failed.value.bad_input
    assert RAW in str(failed.value)


def test_transform_stage_with_an_unknown_column_fails_as_bad_input_naming_the_field(tmp_path: Path) -> None:
    make_warehouse(tmp_path, raw_rows(10))
    ctx = context(tmp_path, pipelinerun(TRANSFORM | {"dedupe": {"key": ["foo"], "orderBy": "updated"}}))

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(ctx)

    assert failed.value.bad_input
    assert str(failed.value).startswith("spec.transform.dedupe.key[0]: unknown column 'foo'")


def test_transform_stage_with_a_mistyped_expression_fails_as_bad_input(tmp_path: Path) -> None:
    make_warehouse(tmp_path, raw_rows(10))
    derive = [{"name": "broken", "expr": "cost + name"}]
    ctx = context(tmp_path, pipelinerun(TRANSFORM | {"derive": derive}))

    with pytest.raises(StageFailed) as failed:
        transform_stage.run(ctx)

    assert failed.value.bad_input
    assert str(failed.value).startswith("spec.transform:")
