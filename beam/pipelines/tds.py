"""TDS: the raw table standardized, enriched, derived, filtered and deduplicated into parquet parts (Beam).

The seed's Dataflow job "transform, deduplicate, standardize", over chunks of rows, in a fixed order:

1. ``Standardize``: trim, case, null markers and fills, per chunk (DuckDB in memory);
2. ``LookupReferences``: each ``spec.transform.lookups[i]`` in turn joins its reference data to every
   record (:mod:`beam.pipelines.lookups`: a side input up to ``--broadcast-limit-rows`` reference rows,
   a keyed join on ``CoGroupByKey`` above it);
3. ``DeriveColumns``: derived columns, which may read looked-up columns and earlier derived ones;
4. ``FilterRows`` (or ``SetAsideRejects``, below): the filter, per chunk;
5. ``DedupeLatest``: chunks split by the hash of the dedupe key into a few buckets, shuffled, and each
   bucket keeps the latest row of every key.

Each bucket is written to ``<staging>/<output table>/part-<bucket>.parquet``; the transform stage swaps
those parts into the output table in one transaction.

The filter is a per-row step, so it runs before the dedupe: a key whose latest version is filtered
out keeps its latest version that passed.

Rejects: rows that leave for a reason go to one table, ``<output table>_rejects``, replaced by each
run like the output table. It has the columns ``reason``, ``run``, ``rejected_at`` and ``raw_row`` (the
row's position in the raw table), then the row's own columns as the output table has them (a missing
lookup's columns NULL). The reasons: ``lookup_missing:<lookup name>`` for a record a ``type: left,
onMissing: reject`` lookup found no match for, and ``filtered`` for a row the filter dropped when
``keepFiltered: true`` (without it, filtered rows are only counted). The table exists only for a spec
that can reject (a reject-mode lookup, or ``keepFiltered``). A record an ``onMissing: fail`` lookup
found no match for takes the same way, then fails the run naming its key; ``type: inner`` drops
unmatched records, counted as ``lookup_unmatched:<lookup name>``.

Run it on the in-process runner (the default here)::

    python -m beam.pipelines.tds --spec examples/inventory/pipelinerun.yaml \\
        --warehouse work/warehouse.duckdb --staging work/staging [--broadcast-limit-rows 1000000]

and on Dataflow, with the usual options::

    python -m beam.pipelines.tds --spec ... --warehouse ... --staging gs://BUCKET/staging \\
        --runner DataflowRunner --project PROJECT --region REGION --temp_location gs://BUCKET/tmp
"""

import argparse
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics.metric import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pvalue import TaggedOutput

from beam.pipelines.chunks import (
    CHUNK,
    DEFAULT_BUCKETS,
    DEFAULT_CHUNK_ROWS,
    NAMESPACE,
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
    memory_connection,
    parts_glob,
    pipeline_options,
    positive_int,
    row_ranges,
    run_sql,
)
from beam.pipelines.lookups import (
    DEFAULT_BROADCAST_LIMIT_ROWS,
    REFERENCE,
    SAMPLE,
    JoinReference,
    ReadReference,
    Reference,
    ReferenceChunks,
    ReferenceDataError,
    SettleLookupsFn,
    check_unique_keys,
    open_reference,
    picked_schema,
    reference_ranges,
)
from beam.sql import FILTERED, REASON_COLUMN, ROW_ID, SpecSqlError, TransformSql, compile_transform, literal
from beam.stages.validate import rejects_table_of
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse
from controller.spec import PipelineRun, load_spec_file

log = logging.getLogger("dataops.tds")

COUNTED = (
    "rows_read",
    "reference_rows_read",
    "rows_lookup_dropped",
    "rows_filtered",
    "duplicates_dropped",
    "rows_written",
    "rejects_written",
)
"""The counters a run reports (with ``rows_rejected``, the rows reject-mode lookups set aside)."""


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


class LookupReferences(beam.PTransform[Chunks, Chunks]):
    """The ``spec.transform.lookups`` joined in order (a lookup may key on an earlier one's columns),
    then settled: unmatched records counted per lookup, and dropped where the lookup is ``inner``."""

    def __init__(self, plan: TransformSql, references: Sequence[ReferenceChunks], buckets: int) -> None:
        super().__init__()
        if len(references) != len(plan.lookups):
            raise ValueError(f"{len(plan.lookups)} lookups need as many references, not {len(references)}")
        self.plan = plan
        self.references = list(references)
        self.buckets = buckets

    def expand(self, chunks: Chunks) -> Chunks:
        for lookup, reference in zip(self.plan.lookups, self.references, strict=True):
            chunks = chunks | f"Lookup{lookup.index}" >> JoinReference(lookup, reference, self.buckets)
        return chunks | "SettleLookups" >> beam.ParDo(SettleLookupsFn(self.plan.lookups))


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(pa.Table)
class RouteRowsFn(beam.DoFn):
    """The rows of a chunk that stay (main output) and those that leave for a kept reason (``rejects``).

    Counted by reason: ``rows_filtered``, ``rows_lookup_rejected``, ``rows_lookup_failed``."""

    REJECTS = "rejects"

    def __init__(self, sql: str, kept: Sequence[str], failing: Sequence[str]) -> None:
        self.sql = sql
        self.kept = list(kept)
        self.counter_of = {reason: "rows_lookup_failed" for reason in failing} | {FILTERED: "rows_filtered"}

    def setup(self) -> None:
        self.con = memory_connection()

    def process(self, chunk: pa.Table) -> Iterator[Any]:
        out = run_sql(self.con, self.sql, chunk)
        stays = pc.is_null(out.column(REASON_COLUMN))
        yield out.filter(stays).drop_columns([REASON_COLUMN])
        gone = out.filter(pc.invert(stays))
        for count in pc.value_counts(gone.column(REASON_COLUMN).combine_chunks()).to_pylist():
            name = self.counter_of.get(count["values"], "rows_lookup_rejected")
            Metrics.counter(NAMESPACE, name).inc(count["counts"])
        kept = pc.is_in(gone.column(REASON_COLUMN), value_set=pa.array(self.kept, pa.string()))
        yield TaggedOutput(self.REJECTS, gone.filter(kept))

    def teardown(self) -> None:
        self.con.close()


class SetAsideRejects(beam.PTransform[Chunks, dict[str, Chunks]]):
    """The filter and the lookups' ``onMissing``, when rows may leave for a reason (see the module
    docstring): ``rows`` stay; ``rejects`` leave, shaped as ``<output table>_rejects`` keeps them."""

    def __init__(self, plan: TransformSql, run_name: str, rejected_at: str | None) -> None:
        super().__init__()
        self.plan = plan
        self.run_name = run_name
        self.rejected_at = rejected_at

    def expand(self, chunks: Chunks) -> dict[str, Chunks]:
        failing = [lookup.reason for lookup in self.plan.lookups if lookup.on_missing == "fail"]
        route = RouteRowsFn(self.plan.route_sql(CHUNK), self.plan.kept_reasons, failing)
        routed = chunks | "RouteRows" >> beam.ParDo(route).with_outputs(RouteRowsFn.REJECTS, main="rows")
        rejects = routed[RouteRowsFn.REJECTS] | "RejectsColumns" >> beam.ParDo(
            ChunkSqlFn(self.plan.rejects_sql(CHUNK, self.run_name, self.rejected_at))
        )
        return {"rows": routed["rows"], "rejects": rejects}


@dataclass(frozen=True)
class TdsOutputs:
    """The TDS rows, one part per bucket; and the rows set aside (``<output table>_rejects``), when the
    spec can set any aside."""

    rows: Buckets
    rejects: Buckets | None


def build_outputs(
    chunks: Chunks,
    plan: TransformSql,
    buckets: int,
    references: Sequence[ReferenceChunks] = (),
    run_name: str = "",
    rejected_at: str | None = None,
) -> TdsOutputs:
    """Raw chunks (with the row id column) and each lookup's reference in; TDS rows and rejects out."""
    rows = chunks | "Standardize" >> Standardize(plan)
    if plan.lookups:
        rows = rows | "LookupReferences" >> LookupReferences(plan, references, buckets)
    rows = rows | "DeriveColumns" >> DeriveColumns(plan)
    rejects = None
    if plan.routes:
        routed = rows | "SetAsideRejects" >> SetAsideRejects(plan, run_name, rejected_at)
        rows = routed["rows"]
        rejects = routed["rejects"] | "GroupRejects" >> GroupIntoBuckets(("raw_row",), buckets)
    elif plan.filter_expr is not None:
        rows = rows | "FilterRows" >> FilterRows(plan)
    return TdsOutputs(rows=rows | "DedupeLatest" >> DedupeLatest(plan, buckets), rejects=rejects)


def build(
    chunks: Chunks, plan: TransformSql, buckets: int, references: Sequence[ReferenceChunks] = ()
) -> Buckets:
    """Raw chunks (with the row id column) in, ``(bucket, table)`` of TDS rows out."""
    return build_outputs(chunks, plan, buckets, references).rows


def plan_for(
    run: PipelineRun,
    warehouse: DuckDBWarehouse,
    started_at: str | None = None,
    references: Sequence[Reference] = (),
) -> TransformSql:
    """The compiled transform of ``run`` over its raw table and ``references``, checked on zero rows."""
    transform = run.spec.transform
    if transform is None:
        raise SpecSqlError("spec.transform: the run has no transform")
    schema = warehouse.schema(run.spec.load.table)
    plan = compile_transform(
        transform,
        column_types(schema),
        ingestion_timestamp=started_at,
        source_uri=run.spec.source.uri,
        references=[reference.columns for reference in references],
    )
    picked = {
        f"{REFERENCE}_{lookup.index}": picked_schema(lookup, reference.schema)
        for lookup, reference in zip(plan.lookups, references, strict=True)
    }
    with_row_id = schema.append(pa.field(ROW_ID, pa.int64()))
    statements = [plan.select_sql(CHUNK, list(picked)), plan.dedupe_sql(CHUNK)]
    check_sql(statements, with_row_id, "spec.transform", picked)
    if plan.routes:
        joins = [lookup.join_sql(CHUNK, name) for lookup, name in zip(plan.lookups, picked, strict=True)]
        routed = [plan.standardize_sql(CHUNK), *joins, plan.derive_sql(CHUNK), plan.route_sql(CHUNK)]
        rejects = plan.rejects_sql(CHUNK, run.metadata.name, started_at)
        check_sql([*routed, rejects], with_row_id, "spec.transform", picked)
    return plan


def output_table(run: PipelineRun) -> str:
    """The TDS table of ``run`` (``spec.transform.output.table``)."""
    if run.spec.transform is None:
        raise SpecSqlError("spec.transform: the run has no transform")
    return run.spec.transform.output.table


def rejects_table(run: PipelineRun) -> str:
    """Where ``run`` sets rows aside: ``<output table>_rejects`` (see the module docstring)."""
    return rejects_table_of(output_table(run))


def run_pipeline(
    run: PipelineRun,
    warehouse: Path,
    staging: str,
    options: PipelineOptions,
    *,
    buckets: int = DEFAULT_BUCKETS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    broadcast_limit_rows: int = DEFAULT_BROADCAST_LIMIT_ROWS,
    started_at: str | None = None,
) -> dict[str, Any]:
    """Run TDS for ``run``; its counters, the parts' globs, the output columns and the references used.

    Raises :class:`ReferenceDataError` for a reference that cannot serve (missing, repeated keys) and
    for records an ``onMissing: fail`` lookup found no match for."""
    started = time.monotonic()
    port = DuckDBWarehouse(warehouse)
    transform = run.spec.transform
    lookups = transform.lookups if transform is not None else []
    references = [open_reference(i, lookup, port, staging) for i, lookup in enumerate(lookups)]
    plan = plan_for(run, port, started_at, references)
    for reference, lookup in zip(references, plan.lookups, strict=True):
        check_unique_keys(reference, lookup, port)
    source, output, rejects = run.spec.load.table, output_table(run), rejects_table(run)
    ranges = row_ranges(source, port, chunk_rows)
    clear_parts(staging, output)
    clear_parts(staging, rejects)
    pipeline = beam.Pipeline(options=options)
    chunks = pipeline | "ReadTableChunks" >> ReadTableChunks(
        str(warehouse), source, ranges, port.schema(source)
    )
    inputs = [
        ReferenceChunks(
            pipeline
            | f"ReadReference{i}"
            >> ReadReference(reference, str(warehouse), reference_ranges(reference, port, chunk_rows)),
            reference.schema,
            reference.joined_by_broadcast(broadcast_limit_rows),
        )
        for i, reference in enumerate(references)
    ]
    outputs = build_outputs(chunks, plan, buckets, inputs, run.metadata.name, started_at)
    _ = outputs.rows | "WriteParquetParts" >> WriteParquetParts(staging, output)
    if outputs.rejects is not None:
        _ = outputs.rejects | "WriteRejectParts" >> WriteParquetParts(staging, rejects, "rejects_written")
    result = pipeline.run()
    result.wait_until_finish()
    found = counters(result)
    if found.get("rows_lookup_failed"):
        raise _missing_keys_error(plan, references, parts_glob(staging, rejects), found)
    out = {name: found.get(name, 0) for name in COUNTED} | {
        "rows_rejected": found.get("rows_lookup_rejected", 0)
    }
    log.info("tds %s: %s", run.metadata.name, out)
    return out | {
        "parts": parts_glob(staging, output),
        "rejects_table": rejects if plan.writes_rejects else None,
        "rejects_parts": parts_glob(staging, rejects) if plan.writes_rejects else None,
        "output_columns": list(plan.output_columns),
        "references": [reference.source for reference in references],
        "lookups": {
            lookup.label: {
                "reference": reference.source,
                "reference_rows": reference.rows,
                "join": "broadcast" if reference.joined_by_broadcast(broadcast_limit_rows) else "keyed",
                "unmatched": found.get(f"lookup_unmatched:{lookup.label}", 0),
            }
            for lookup, reference in zip(plan.lookups, references, strict=True)
        },
        "seconds": round(time.monotonic() - started, 3),
    }


def _missing_keys_error(
    plan: TransformSql, references: Sequence[Reference], rejects_glob: str, found: dict[str, int]
) -> ReferenceDataError:
    """The first ``onMissing: fail`` lookup that found no match for some records, naming their keys."""
    for lookup, reference in zip(plan.lookups, references, strict=True):
        missing = found.get(f"lookup_unmatched:{lookup.label}", 0)
        if lookup.on_missing != "fail" or not missing:
            continue
        with memory_connection() as con:
            con.execute(f"CREATE VIEW rejects AS SELECT * FROM read_parquet({literal(rejects_glob)})")
            keys = con.sql(lookup.missing_keys_sql("rejects", SAMPLE)).to_arrow_table().to_pylist()
        shown = "; ".join(
            ", ".join(f"{k}={row[k]!r}" for k in lookup.keys)
            + f" (raw row {row['first_row']}, {row['records']} records)"
            for row in keys
        )
        return ReferenceDataError(
            f"{lookup.path}: {missing} records have a key with no match in {reference.source}"
            f" (onMissing: fail); first keys: {shown}",
            reason="LookupMissing",
        )
    return ReferenceDataError("a lookup with onMissing: fail found records with no match", "LookupMissing")


def add_settings(parser: argparse.ArgumentParser) -> None:
    """The pipeline's tuning settings (the CLI's and the transform stage's)."""
    parser.add_argument(
        "--buckets", type=positive_int, default=DEFAULT_BUCKETS, help="shuffle buckets (output parts)"
    )
    parser.add_argument(
        "--chunk-rows", type=positive_int, default=DEFAULT_CHUNK_ROWS, help="rows per chunk read"
    )
    parser.add_argument(
        "--broadcast-limit-rows",
        type=positive_int,
        default=DEFAULT_BROADCAST_LIMIT_ROWS,
        help="a lookup's reference of at most this many rows is broadcast (a side input); a larger one"
        " is joined by key (CoGroupByKey)",
    )


def parse_settings(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The settings among a stage's extra arguments; the rest are Beam options."""
    parser = argparse.ArgumentParser(prog="beam.pipelines.tds settings", add_help=False)
    add_settings(parser)
    return parser.parse_known_args(list(argv))


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam.pipelines.tds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--spec", required=True, type=Path, help="the PipelineRun YAML")
    parser.add_argument("--warehouse", required=True, type=Path, help="the warehouse file (DuckDB)")
    parser.add_argument("--staging", required=True, help="folder (local or gs://) for the parquet parts")
    add_settings(parser)
    parser.add_argument("--started-at", default=None, help="the run's start (ISO 8601), for output.metadata")
    return parser.parse_known_args(argv)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """``--spec FILE --warehouse PATH --staging DIR [--buckets N] [--chunk-rows N]
    [--broadcast-limit-rows N]`` + Beam options."""
    args, beam_args = parse_args(argv)
    return run_pipeline(
        load_spec_file(args.spec),
        args.warehouse,
        args.staging,
        pipeline_options(beam_args),
        buckets=args.buckets,
        chunk_rows=args.chunk_rows,
        broadcast_limit_rows=args.broadcast_limit_rows,
        started_at=args.started_at,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
