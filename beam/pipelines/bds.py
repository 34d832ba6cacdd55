"""BDS: the KPIs of ``spec.aggregate`` computed over the TDS table into parquet parts (Apache Beam).

The seed's Dataflow job "KPIs -> bds_table", over chunks of rows: the TDS table is read once in
chunks; for each aggregate, each chunk keeps only the columns the aggregate reads, is split by the
hash of the groupBy key into a few buckets (one bucket when there is no groupBy), and DuckDB
aggregates each bucket. Each bucket goes to ``<staging>/<output table>/part-<bucket>.parquet``; the
aggregate stage swaps those parts into the output tables.

Run it on the in-process runner (the default here)::

    python -m beam.pipelines.bds --spec examples/inventory/pipelinerun.yaml \\
        --warehouse work/warehouse.duckdb --staging work/staging

and on Dataflow, with the usual options::

    python -m beam.pipelines.bds --spec ... --warehouse ... --staging gs://BUCKET/staging \\
        --runner DataflowRunner --project PROJECT --region REGION --temp_location gs://BUCKET/tmp
"""

import argparse
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
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
    GroupIntoBuckets,
    ReadTableChunks,
    WriteParquetParts,
    check_sql,
    clear_parts,
    column_types,
    counters,
    parts_glob,
    pipeline_options,
    positive_int,
    row_ranges,
)
from beam.sql import AggregateSql, SpecSqlError, compile_aggregate
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse
from controller.spec import PipelineRun, load_spec_file

log = logging.getLogger("dataops.bds")


def _select(columns: Sequence[str]) -> Any:
    def select(chunk: pa.Table) -> pa.Table:
        return chunk.select(list(columns))

    return select


class ComputeKpis(beam.PTransform[Chunks, Buckets]):
    """One aggregate's KPIs per group, as ``(bucket, table)``; with no groupBy, one bucket, one row."""

    def __init__(self, plan: AggregateSql, buckets: int) -> None:
        super().__init__()
        self.plan = plan
        self.buckets = buckets

    def expand(self, chunks: Chunks) -> Buckets:
        return (
            chunks
            | "KeepInputColumns" >> beam.Map(_select(self.plan.input_columns)).with_output_types(pa.Table)
            | "GroupByGroupHash" >> GroupIntoBuckets(self.plan.group_by, self.buckets)
            | "Aggregate" >> beam.ParDo(BucketSqlFn(self.plan.sql(CHUNK)))
        )


def build(chunks: Chunks, plans: Mapping[str, AggregateSql], buckets: int) -> dict[str, Buckets]:
    """TDS chunks in; for each output table, its ``(bucket, table)`` of KPI rows."""
    return {
        table: chunks | f"ComputeKpis[{table}]" >> ComputeKpis(plan, buckets) for table, plan in plans.items()
    }


def plans_for(
    run: PipelineRun, warehouse: DuckDBWarehouse, started_at: str | None = None
) -> dict[str, AggregateSql]:
    """The compiled aggregates of ``run`` over its TDS table, each checked on zero rows."""
    transform = run.spec.transform
    if transform is None or not run.spec.aggregate:
        raise SpecSqlError("spec.aggregate: the run has no aggregate (or no transform to read)")
    schema = warehouse.schema(transform.output.table)
    report_date = started_at[:10] if started_at else None
    plans: dict[str, AggregateSql] = {}
    for i, aggregate in enumerate(run.spec.aggregate):
        table = aggregate.output.table
        if table in plans:
            raise SpecSqlError(
                f"spec.aggregate[{i}].output.table: {table} is written by an earlier aggregate"
            )
        plan = compile_aggregate(aggregate, list(column_types(schema)), i, report_date)
        sums = plan.sum_inputs_sql(CHUNK)
        if sums is not None:
            types = check_sql([sums], schema, f"spec.aggregate[{i}]")
            integers = frozenset(f.name for f in types if pa.types.is_integer(f.type))
            plan = replace(plan, integer_sums=integers)
        check_sql([plan.sql(CHUNK)], schema, f"spec.aggregate[{i}]")
        plans[table] = plan
    return plans


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
    """Run BDS for ``run``: rows read, and per output table its rows written and parts' glob."""
    started = time.monotonic()
    port = DuckDBWarehouse(warehouse)
    plans = plans_for(run, port, started_at)
    source = run.spec.transform.output.table if run.spec.transform else ""
    ranges = row_ranges(source, port, chunk_rows)
    for table in plans:
        clear_parts(staging, table)
    pipeline = beam.Pipeline(options=options)
    chunks = pipeline | "ReadTableChunks" >> ReadTableChunks(
        str(warehouse), source, ranges, port.schema(source), with_row_id=None
    )
    for table, kpis in build(chunks, plans, buckets).items():
        _ = kpis | f"WriteParquetParts[{table}]" >> WriteParquetParts(
            staging, table, f"rows_written[{table}]"
        )
    result = pipeline.run()
    result.wait_until_finish()
    found = counters(result)
    outputs = {
        table: {
            "rows_written": found.get(f"rows_written[{table}]", 0),
            "parts": parts_glob(staging, table),
            "group_by": list(plan.group_by),
        }
        for table, plan in plans.items()
    }
    log.info("bds %s: %s rows read, %s", run.metadata.name, found.get("rows_read", 0), outputs)
    return {
        "rows_read": found.get("rows_read", 0),
        "outputs": outputs,
        "seconds": round(time.monotonic() - started, 3),
    }


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam.pipelines.bds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", required=True, type=Path, help="the PipelineRun YAML")
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse file (DuckDB)")
    parser.add_argument("--staging", required=True, help="folder (local or gs://) for the parquet parts")
    parser.add_argument(
        "--buckets", type=positive_int, default=DEFAULT_BUCKETS, help="shuffle buckets (output parts)"
    )
    parser.add_argument(
        "--chunk-rows", type=positive_int, default=DEFAULT_CHUNK_ROWS, help="rows per chunk read"
    )
    parser.add_argument("--started-at", default=None, help="the run's start (ISO 8601), for reportDate")
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
