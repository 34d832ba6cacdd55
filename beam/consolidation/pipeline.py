"""The consolidation pipeline (Apache Beam): operation ids in, the staging rows out as parquet parts.

The seed's Dataflow job, over chunks of rows (Arrow tables, as in :mod:`beam.pipelines.chunks`):
the ids a cycle took from the subscription come in chunks; ``ReadOperations`` reads their source rows
(those at or before the cycle's end), ``JoinRows`` brings the joined tables' columns, ``DedupeLatest``
shuffles by the target key and keeps the latest row of each key by ``(cursor, id)``, and
``WriteStaging`` writes ``<staging>/rows/part-<bucket>.parquet``. The cycle loads those parts into
the staging table and merges it.

Every step runs a statement of :mod:`beam.consolidation.sql` (BigQuery dialect, translated for
DuckDB). On the in-process runner (the default here)::

    python -m beam.consolidation.pipeline --spec examples/transactions/ingestionsource.yaml \\
        --workdir work/tx --ids ids.txt --upto-cursor '2026-01-05 10:00:00' --upto-id 1042 \\
        --staging work/tx/staging
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions

from beam.consolidation.duck import run_on_chunk
from beam.consolidation.plan import STAGING_PARTS, ConsolidationPlan, Position
from beam.consolidation.sql import ID_TEXT, Sql, dedupe_latest_sql, join_rows_sql, read_operations_sql
from beam.pipelines.chunks import (
    CHUNK,
    DEFAULT_BUCKETS,
    NAMESPACE,
    Buckets,
    BucketSqlFn,
    Chunks,
    GroupIntoBuckets,
    WriteParquetParts,
    clear_parts,
    counters,
    parts_glob,
    pipeline_options,
)
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse

log = logging.getLogger("dataops.consolidation")

IDS_PER_CHUNK = 65536


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(pa.Table)
class WarehouseSqlFn(beam.DoFn):
    """One statement over each chunk, on a read-only connection to the warehouse (opened per chunk,
    so none outlives the pipeline); ``counter`` counts the rows that come out."""

    def __init__(self, warehouse: str, sql: Sql, counter: str) -> None:
        self.warehouse = warehouse
        self.sql = sql
        self.rows = Metrics.counter(NAMESPACE, counter)

    def process(self, chunk: pa.Table) -> Iterator[pa.Table]:
        with DuckDBWarehouse(Path(self.warehouse)).connect(read_only=True) as con:
            out = run_on_chunk(con, self.sql, CHUNK, chunk)
        self.rows.inc(out.num_rows)
        yield out


class ReadOperations(beam.PTransform[Chunks, Chunks]):
    """The source rows of each chunk of ids, at or before the cycle's end."""

    def __init__(self, plan: ConsolidationPlan, warehouse: str, upto: Position | None) -> None:
        super().__init__()
        self.sql = read_operations_sql(plan, CHUNK, upto)
        self.warehouse = warehouse

    def expand(self, ids: Chunks) -> Chunks:
        return ids | "ReadChunk" >> beam.ParDo(WarehouseSqlFn(self.warehouse, self.sql, "operations_read"))


class JoinRows(beam.PTransform[Chunks, Chunks]):
    """The columns of every joined table (its latest row per ``on`` key), left or inner."""

    def __init__(self, plan: ConsolidationPlan, warehouse: str) -> None:
        super().__init__()
        self.sql = join_rows_sql(plan, CHUNK)
        self.warehouse = warehouse

    def expand(self, operations: Chunks) -> Chunks:
        return operations | "JoinChunk" >> beam.ParDo(WarehouseSqlFn(self.warehouse, self.sql, "rows_joined"))


class DedupeLatest(beam.PTransform[Chunks, Buckets]):
    """One row per target key, the latest by ``(cursor, id)``: the same key always meets in one bucket."""

    def __init__(self, plan: ConsolidationPlan, buckets: int) -> None:
        super().__init__()
        self.key = plan.target_key
        self.sql = dedupe_latest_sql(plan, CHUNK).duckdb
        self.buckets = buckets

    def expand(self, rows: Chunks) -> Buckets:
        return (
            rows
            | "GroupByTargetKey" >> GroupIntoBuckets(self.key, self.buckets)
            | "KeepLatest" >> beam.ParDo(BucketSqlFn(self.sql, "duplicates_dropped"))
        )


def id_chunks(ids: Sequence[str], per_chunk: int = IDS_PER_CHUNK) -> list[pa.Table]:
    """The ids as Arrow chunks of one ``id_text`` column."""
    return [
        pa.table({ID_TEXT: pa.array(list(ids[start : start + per_chunk]), type=pa.string())})
        for start in range(0, len(ids), per_chunk)
    ]


def build(
    ids: Chunks, plan: ConsolidationPlan, warehouse: str, upto: Position | None, buckets: int
) -> Buckets:
    rows = ids | "ReadOperations" >> ReadOperations(plan, warehouse, upto)
    if plan.joins:
        rows = rows | "JoinRows" >> JoinRows(plan, warehouse)
    return rows | "DedupeLatest" >> DedupeLatest(plan, buckets)


def run_pipeline(
    plan: ConsolidationPlan,
    warehouse: Path,
    ids: Sequence[str],
    upto: Position | None,
    staging: str,
    options: PipelineOptions,
    *,
    buckets: int = DEFAULT_BUCKETS,
) -> dict[str, Any]:
    """Stage the latest row of every target key among ``ids``; the counters and the parts' glob."""
    clear_parts(staging, STAGING_PARTS)
    pipeline = beam.Pipeline(options=options)
    chunks = pipeline | "OperationIds" >> beam.Create(id_chunks(ids)).with_output_types(pa.Table)
    _ = build(chunks, plan, str(warehouse), upto, buckets) | "WriteStaging" >> WriteParquetParts(
        staging, STAGING_PARTS, "rows_staged"
    )
    result = pipeline.run()
    result.wait_until_finish()
    found = counters(result)
    out: dict[str, Any] = {
        name: found.get(name, 0)
        for name in ("operations_read", "rows_joined", "duplicates_dropped", "rows_staged")
    }
    log.info("consolidation pipeline %s: %s", plan.source_name, out)
    return out | {"parts": parts_glob(staging, STAGING_PARTS)}


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam.consolidation.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", required=True, type=Path, help="the IngestionSource YAML")
    parser.add_argument("--workdir", required=True, type=Path, help="folder of the warehouse")
    parser.add_argument(
        "--ids", required=True, help="a text file (local or gs://), one operation id per line"
    )
    parser.add_argument("--upto-cursor", default=None, help="the cycle's end: cursor, as text")
    parser.add_argument("--upto-id", default="", help="the cycle's end: id, as text")
    parser.add_argument("--staging", required=True, help="folder (local or gs://) for the parquet parts")
    parser.add_argument("--buckets", type=int, default=DEFAULT_BUCKETS, help="shuffle buckets (output parts)")
    return parser.parse_known_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """``--spec FILE --workdir DIR --ids FILE --upto-cursor C --upto-id I --staging DIR`` + Beam options."""
    from beam.consolidation.cycle import plan_for
    from beam.consolidation.spec_file import load_ingestion_source
    from beam.warehouse import open_warehouse

    args, beam_args = parse_args(argv)
    source = load_ingestion_source(args.spec)
    warehouse = open_warehouse(args.workdir)
    plan = plan_for(source, warehouse)
    with FileSystems.open(args.ids) as found:
        text = found.read().decode("utf-8")
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    upto = None if args.upto_cursor is None else Position(args.upto_cursor, (args.upto_id,))
    return run_pipeline(
        plan, warehouse.path, ids, upto, args.staging, pipeline_options(beam_args), buckets=args.buckets
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
