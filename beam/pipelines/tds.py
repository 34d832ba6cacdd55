"""TDS: the raw table standardized, derived, filtered and deduplicated into parquet parts (Apache Beam).

The seed's Dataflow job "transform, deduplicate, standardize", over chunks of rows: each chunk is
standardized, derived and filtered by DuckDB in memory; chunks are then split by the hash of the
dedupe key into a few buckets, shuffled, and each bucket keeps the latest row of every key. Each
bucket is written to ``<staging>/<output table>/part-<bucket>.parquet``; the transform stage swaps
those parts into the output table in one transaction.

Run it on the in-process runner (the default here)::

    python -m beam.pipelines.tds --spec examples/inventory/pipelinerun.yaml \\
        --warehouse work/warehouse.duckdb --staging work/staging

and on Dataflow, with the usual options::

    python -m beam.pipelines.tds --spec ... --warehouse ... --staging gs://BUCKET/staging \\
        --runner DataflowRunner --project PROJECT --region REGION --temp_location gs://BUCKET/tmp
"""

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from beam.pipelines.chunks import (
    CHUNK,
    DEFAULT_BUCKETS,
    DEFAULT_CHUNK_ROWS,
    Buckets,
    BucketSqlFn,
    Chunks,
    ChunkSqlFn,
    GroupIntoBuckets,
    ReadTableChunks,
    WriteParquetParts,
    check_sql,
    clear_parts,
    column_types,
    counters,
    parts_glob,
    pipeline_options,
    row_ranges,
)
from beam.sql import ROW_ID, SpecSqlError, TransformSql, compile_transform
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse
from controller.spec import PipelineRun, load_spec_file

log = logging.getLogger("dataops.tds")


class Standardize(beam.PTransform[Chunks, Chunks]):
    """Trim, case, null markers and fills, per ``spec.transform.standardize``."""

    def __init__(self, plan: TransformSql) -> None:
        super().__init__()
        self.plan = plan

    def expand(self, chunks: Chunks) -> Chunks:
        return chunks | "StandardizeChunk" >> beam.ParDo(ChunkSqlFn(self.plan.standardize_sql(CHUNK)))


class DeriveColumns(beam.PTransform[Chunks, Chunks]):
    """The ``spec.transform.derive`` columns, appended in order."""

    def __init__(self, plan: TransformSql) -> None:
        super().__init__()
        self.plan = plan

    def expand(self, chunks: Chunks) -> Chunks:
        return chunks | "DeriveChunk" >> beam.ParDo(ChunkSqlFn(self.plan.derive_sql(CHUNK)))


class FilterRows(beam.PTransform[Chunks, Chunks]):
    """Only the rows where ``spec.transform.filter`` is TRUE; the others are counted (rows_filtered)."""

    def __init__(self, plan: TransformSql) -> None:
        super().__init__()
        self.plan = plan

    def expand(self, chunks: Chunks) -> Chunks:
        return chunks | "FilterChunk" >> beam.ParDo(ChunkSqlFn(self.plan.filter_sql(CHUNK), "rows_filtered"))


class DedupeLatest(beam.PTransform[Chunks, Buckets]):
    """One row per dedupe key, the latest by ``orderBy`` then by raw position, as ``(bucket, table)``.

    Without a dedupe key every row is kept and the chunks are only regrouped into ``buckets`` parts."""

    def __init__(self, plan: TransformSql, buckets: int) -> None:
        super().__init__()
        self.plan = plan
        self.buckets = buckets

    def expand(self, chunks: Chunks) -> Buckets:
        key = self.plan.dedupe_key or (ROW_ID,)
        return (
            chunks
            | "GroupByKeyHash" >> GroupIntoBuckets(key, self.buckets)
            | "KeepLatest" >> beam.ParDo(BucketSqlFn(self.plan.dedupe_sql(CHUNK), "duplicates_dropped"))
        )


def build(chunks: Chunks, plan: TransformSql, buckets: int) -> Buckets:
    """Raw chunks (with the row id column) in, ``(bucket, table)`` of TDS rows out."""
    rows = chunks | "Standardize" >> Standardize(plan) | "DeriveColumns" >> DeriveColumns(plan)
    if plan.filter_expr is not None:
        rows = rows | "FilterRows" >> FilterRows(plan)
    return rows | "DedupeLatest" >> DedupeLatest(plan, buckets)


def plan_for(run: PipelineRun, warehouse: DuckDBWarehouse, started_at: str | None = None) -> TransformSql:
    """The compiled transform of ``run`` over its raw table, checked on zero rows."""
    transform = run.spec.transform
    if transform is None:
        raise SpecSqlError("spec.transform: the run has no transform")
    schema = warehouse.schema(run.spec.load.table)
    plan = compile_transform(
        transform, column_types(schema), ingestion_timestamp=started_at, source_uri=run.spec.source.uri
    )
    with_row_id = schema.append(pa.field(ROW_ID, pa.int64()))
    check_sql([plan.select_sql(CHUNK), plan.dedupe_sql(CHUNK)], with_row_id, "spec.transform")
    return plan


def output_table(run: PipelineRun) -> str:
    """The TDS table of ``run`` (``spec.transform.output.table``)."""
    if run.spec.transform is None:
        raise SpecSqlError("spec.transform: the run has no transform")
    return run.spec.transform.output.table


def run_pipeline(
    run: PipelineRun,
    warehouse: Path,
    staging: str,
    options: PipelineOptions,
    *,
    buckets: int = DEFAULT_BUCKETS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    started_at: str | None = None,
) -> dict[str, Any]:
    """Run TDS for ``run``; its counters, the parts' glob and the output columns."""
    started = time.monotonic()
    port = DuckDBWarehouse(warehouse)
    plan = plan_for(run, port, started_at)
    source, output = run.spec.load.table, output_table(run)
    ranges = row_ranges(source, port, chunk_rows)
    clear_parts(staging, output)
    pipeline = beam.Pipeline(options=options)
    chunks = pipeline | "ReadTableChunks" >> ReadTableChunks(
        str(warehouse), source, ranges, port.schema(source)
    )
    _ = build(chunks, plan, buckets) | "WriteParquetParts" >> WriteParquetParts(staging, output)
    result = pipeline.run()
    result.wait_until_finish()
    found = counters(result)
    out = {
        name: found.get(name, 0)
        for name in ("rows_read", "rows_filtered", "duplicates_dropped", "rows_written")
    }
    log.info("tds %s: %s", run.metadata.name, out)
    return out | {
        "parts": parts_glob(staging, output),
        "output_columns": list(plan.output_columns),
        "seconds": round(time.monotonic() - started, 3),
    }


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam.pipelines.tds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", required=True, type=Path, help="the PipelineRun YAML")
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse file (DuckDB)")
    parser.add_argument("--staging", required=True, help="folder (local or gs://) for the parquet parts")
    parser.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS, help="shuffle buckets (output parts)")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per chunk read")
    parser.add_argument("--started-at", default=None, help="the run's start (ISO 8601), for output.metadata")
    return parser.parse_known_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """``--spec FILE --warehouse PATH --staging DIR [--buckets N] [--chunk-rows N]`` + Beam options."""
    args, beam_args = parse_args(argv)
    return run_pipeline(
        load_spec_file(args.spec),
        args.warehouse,
        args.staging,
        pipeline_options(beam_args),
        buckets=args.buckets,
        chunk_rows=args.chunk_rows,
        started_at=args.started_at,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
