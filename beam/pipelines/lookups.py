"""Lookups: each record of the TDS pipeline joined with reference data, by broadcast or by a keyed join.

The seed's enrichment step ("a side input for small tables, CoGroupByKey for large ones"). Each
``spec.transform.lookups[i]`` names a reference: a warehouse table, read at pipeline level by rowid
ranges, or a CSV, read and typed once in the driver (``read_csv_source``, as the source is) and
staged as one parquet file the pipeline reads. Either way it is read once per run, never per bundle.

How it is joined follows its size, a setting (``--broadcast-limit-rows``):

- at most the limit, **broadcast**: the prepared reference becomes one Arrow table, a side input
  (``AsSingleton``) that DuckDB joins each chunk with;
- above it, **keyed**: records and reference rows are split by the hash of the key into the same
  buckets, ``CoGroupByKey`` brings each bucket's records and reference rows together, and DuckDB joins
  them there.

The SQL of every step is :class:`beam.sql.LookupSql`'s. Every join keeps every record, with a match
flag; once all have run, ``SettleLookupsFn`` counts ``lookup_unmatched:<name>`` (records whose key found
no match), drops those of inner lookups (``rows_lookup_dropped``), and leaves the flags of left
lookups with ``onMissing: reject|fail`` for the TDS pipeline to route on.
"""

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import ReadFromParquetBatched
from apache_beam.metrics.metric import Metrics
from apache_beam.pvalue import PBegin

from beam.io.csv_source import FILE_COL, ROW_COL, SourceError, read_csv_source
from beam.pipelines.chunks import (
    CHUNK,
    NAMESPACE,
    Chunks,
    ChunkSqlFn,
    ReadTableChunks,
    SplitIntoBucketsFn,
    check_sql,
    column_types,
    memory_connection,
    row_ranges,
    run_sql,
)
from beam.sql import ROW_ID, LookupSql, quote
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse, quote_table
from controller.spec import Lookup, Source

REFERENCE = "reference"
"""The relation name a prepared reference is registered under when a join runs."""

DEFAULT_BROADCAST_LIMIT_ROWS = 1_000_000
"""References of at most this many rows are broadcast (a side input); larger ones are joined by key."""

SAMPLE = 5
"""How many keys an error names."""


class ReferenceDataError(Exception):
    """The reference data cannot serve its lookup (missing, unreadable, repeated keys, or a record whose
    key has no match under ``onMissing: fail``). ``reason`` is the stage's failure reason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# ---- the reference, read once in the driver --------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """One lookup's reference as the run found it, before the pipeline."""

    source: str  # the table, or the CSV file(s): what lineage lists
    schema: pa.Schema  # its columns, with the row id
    rows: int
    data: pa.Table | None = None  # a CSV reference, typed (a table stays in the warehouse)
    staged: str | None = None  # where the pipeline reads a CSV reference (parquet)

    @property
    def columns(self) -> dict[str, str]:
        """``name -> BigQuery type`` (the shape :func:`beam.sql.compile_transform` takes)."""
        return column_types(self.schema)

    def joined_by_broadcast(self, limit_rows: int) -> bool:
        """The join-path rule: a reference of at most ``limit_rows`` rows is broadcast."""
        return self.rows <= limit_rows


def open_reference(index: int, lookup: Lookup, warehouse: DuckDBWarehouse, staging: str) -> Reference:
    """Find ``lookup``'s reference: a table's schema and size, or a CSV read, typed and staged as parquet."""
    path = f"spec.transform.lookups[{index}]"
    if lookup.table is not None:
        if not warehouse.exists(lookup.table):
            raise ReferenceDataError(
                f"{path}.table: {lookup.table} does not exist in {warehouse.path}; load it first",
                reason="MissingInput",
            )
        schema = warehouse.schema(lookup.table).append(pa.field(ROW_ID, pa.int64()))
        return Reference(lookup.table, schema, warehouse.row_count(lookup.table))
    source = Source(
        uri=str(lookup.uri),
        columns=lookup.schema_,
        delimiter=lookup.delimiter,
        null_markers=lookup.null_markers,
    )
    with tempfile.TemporaryDirectory(prefix="dataops-lookup-") as tmp:
        try:
            read = read_csv_source(source, Path(tmp))
        except SourceError as exc:
            raise ReferenceDataError(f"{path}.uri: {exc}", reason="MissingInput") from None
    if read.rejects.num_rows:
        shown = "; ".join(
            f"{Path(r['file']).name} row {r['row_number']}: {r['message']}"
            for r in read.rejects.slice(0, SAMPLE).to_pylist()
        )
        raise ReferenceDataError(
            f"{path}.uri: {read.rejects.num_rows} problems in the reference CSV (reference data must be"
            f" clean): {shown}",
            reason="BadReference",
        )
    typed = read.typed.drop_columns([ROW_COL, FILE_COL])
    data = typed.append_column(ROW_ID, pa.array(range(typed.num_rows), pa.int64()))
    staged = FileSystems.join(staging, "lookups", f"reference-{index:02d}.parquet")
    with FileSystems.create(staged, compression_type=CompressionTypes.UNCOMPRESSED) as sink:
        pq.write_table(data, sink)
    return Reference(", ".join(read.files), data.schema, data.num_rows, data, staged)


def check_unique_keys(reference: Reference, lookup: LookupSql, warehouse: DuckDBWarehouse) -> None:
    """Fail naming a sample of repeated keys, unless ``pick: latest`` says which row of a key wins."""
    if lookup.order_by:
        return
    if reference.data is not None:
        with memory_connection() as con:
            con.register(REFERENCE, reference.data)
            found = con.sql(lookup.duplicates_sql(REFERENCE, SAMPLE)).to_arrow_table()
    else:
        table = quote_table(reference.source)
        found = warehouse.query_arrow(
            f"WITH {quote(REFERENCE)} AS (SELECT * FROM {table}) {lookup.duplicates_sql(REFERENCE, SAMPLE)}"
        )
    if found.num_rows == 0:
        return
    rows = found.to_pylist()
    keys = ", ".join(lookup.reference_keys)
    shown = "; ".join(
        ", ".join(f"{k}={row[k]!r}" for k in lookup.reference_keys) + f" ({row['copies']} rows)"
        for row in rows
    )
    raise ReferenceDataError(
        f"{lookup.path}: key ({keys}) is not unique in {reference.source}: {rows[0]['repeated_keys']} keys"
        f" repeat, e.g. {shown}; make the key unique, or set pick: latest with orderBy to say which row"
        " wins",
        reason="DuplicateKeys",
    )


class ReadReference(beam.PTransform[PBegin, Chunks]):
    """A reference's rows as chunks (with the row id), read once at pipeline level: a table by its rowid
    ``ranges`` (counted as ``reference_rows_read``), a CSV from its staged parquet."""

    def __init__(self, reference: Reference, warehouse: str, ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        self.reference = reference
        self.warehouse = warehouse
        self.ranges = list(ranges)

    def expand(self, pbegin: PBegin) -> Chunks:
        ref = self.reference
        if ref.staged is not None:
            return pbegin | "ReadStagedCsv" >> ReadFromParquetBatched(ref.staged)
        schema = pa.schema([f for f in ref.schema if f.name != ROW_ID])
        return pbegin | "ReadTable" >> ReadTableChunks(
            self.warehouse, ref.source, self.ranges, schema, counter="reference_rows_read"
        )


def reference_ranges(
    reference: Reference, warehouse: DuckDBWarehouse, chunk_rows: int
) -> list[tuple[int, int]]:
    """The rowid ranges :class:`ReadReference` reads a table reference by (none for a CSV)."""
    return [] if reference.staged is not None else row_ranges(reference.source, warehouse, chunk_rows)


# ---- the join ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceChunks:
    """What a join needs of a reference: its rows (raw, with the row id), their schema, and whether it is
    broadcast (else joined by key)."""

    chunks: Chunks
    schema: pa.Schema
    broadcast: bool


class _JoinFn(beam.DoFn):
    """Records joined with a prepared, picked reference, each with its match flag."""

    def __init__(self, lookup: LookupSql) -> None:
        self.lookup = lookup

    def setup(self) -> None:
        self.con = memory_connection()

    def join(self, rows: pa.Table, reference: pa.Table) -> pa.Table:
        return run_sql(self.con, self.lookup.join_sql(CHUNK, REFERENCE), rows, {REFERENCE: reference})

    def teardown(self) -> None:
        self.con.close()


@beam.typehints.with_input_types(pa.Table, pa.Table)
@beam.typehints.with_output_types(pa.Table)
class BroadcastJoinFn(_JoinFn):
    """Each chunk joined with the whole reference, a side input."""

    def process(self, chunk: pa.Table, reference: pa.Table) -> Iterator[pa.Table]:
        yield self.join(chunk, reference)


@beam.typehints.with_input_types(tuple[int, dict[str, Iterable[pa.Table]]])
@beam.typehints.with_output_types(pa.Table)
class KeyedJoinFn(_JoinFn):
    """A bucket's records joined with the bucket's reference rows (all the rows of its keys)."""

    def __init__(self, lookup: LookupSql, prepared: pa.Schema) -> None:
        super().__init__(lookup)
        self.prepared = prepared

    def process(self, element: tuple[int, dict[str, Iterable[pa.Table]]]) -> Iterator[pa.Table]:
        _, sides = element
        pieces = list(sides["rows"])
        if not pieces:
            return
        prepared = one_table(list(sides["reference"]), self.prepared)
        reference = run_sql(self.con, self.lookup.pick_sql(CHUNK), prepared)
        yield self.join(pa.concat_tables(pieces), reference)


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(pa.Table)
class SettleLookupsFn(beam.DoFn):
    """After every join: records with no match counted per lookup (``lookup_unmatched:<name>``), those
    of ``inner`` lookups dropped (``rows_lookup_dropped``), and the match flags no later step routes on
    dropped.

    Counted here rather than in the joins: on ``BundleBasedDirectRunner`` a broadcast join's own
    counters came back empty when its chunks arrived before its side input was ready."""

    def __init__(self, lookups: Sequence[LookupSql]) -> None:
        self.lookups = list(lookups)
        self.unmatched = [Metrics.counter(NAMESPACE, f"lookup_unmatched:{x.label}") for x in self.lookups]
        self.dropped = Metrics.counter(NAMESPACE, "rows_lookup_dropped")

    def process(self, chunk: pa.Table) -> Iterator[pa.Table]:
        keep = None
        for lookup, unmatched in zip(self.lookups, self.unmatched, strict=True):
            matched = chunk.column(lookup.match_column)
            unmatched.inc(chunk.num_rows - int(pc.sum(matched).as_py() or 0))
            if lookup.join_type == "inner":
                keep = matched if keep is None else pc.and_(keep, matched)
        if keep is not None:
            kept = chunk.filter(keep)
            self.dropped.inc(chunk.num_rows - kept.num_rows)
            chunk = kept
        yield chunk.drop_columns([x.match_column for x in self.lookups if not x.routes_unmatched])


def one_table(pieces: Sequence[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(list(pieces)) if pieces else schema.empty_table()


def pick_reference(pieces: Sequence[pa.Table], lookup: LookupSql, prepared: pa.Schema) -> pa.Table:
    """Prepared reference pieces as one table with one row per key (:meth:`LookupSql.pick_sql`)."""
    with memory_connection() as con:
        return run_sql(con, lookup.pick_sql(CHUNK), one_table(pieces, prepared))


class JoinReference(beam.PTransform[Chunks, Chunks]):
    """One lookup: the reference prepared (:meth:`LookupSql.prepare_sql`), then joined to each record
    by broadcast or by key (see the module docstring)."""

    def __init__(self, lookup: LookupSql, reference: ReferenceChunks, buckets: int) -> None:
        super().__init__()
        self.lookup = lookup
        self.reference = reference
        self.buckets = buckets
        self.prepared = check_sql([lookup.prepare_sql(CHUNK)], reference.schema, lookup.path)

    def expand(self, rows: Chunks) -> Chunks:
        lookup = self.lookup
        prepared = self.reference.chunks | "PrepareReference" >> beam.ParDo(
            ChunkSqlFn(lookup.prepare_sql(CHUNK))
        )
        if self.reference.broadcast:
            table = (
                prepared
                | "CollectReference" >> beam.combiners.ToList()
                | "OneRowPerKey"
                >> beam.Map(pick_reference, lookup, self.prepared).with_output_types(pa.Table)
            )
            return rows | "JoinBroadcast" >> beam.ParDo(
                BroadcastJoinFn(lookup), beam.pvalue.AsSingleton(table)
            )
        by_record = lookup.bucket_sql(CHUNK, self.buckets, prepared=False)
        by_reference = lookup.bucket_sql(CHUNK, self.buckets, prepared=True)
        sides: dict[str, Any] = {
            "rows": rows
            | "SplitRecords" >> beam.ParDo(SplitIntoBucketsFn(lookup.keys, self.buckets, by_record)),
            "reference": prepared
            | "SplitReference"
            >> beam.ParDo(SplitIntoBucketsFn(lookup.prepared_keys, self.buckets, by_reference)),
        }
        return (
            sides
            | "CoGroupByBucket" >> beam.CoGroupByKey()
            | "JoinBucket" >> beam.ParDo(KeyedJoinFn(lookup, self.prepared))
        )


def picked_schema(lookup: LookupSql, schema: pa.Schema) -> pa.Schema:
    """The columns a join reads of a reference (prepared and picked), checked on no rows."""
    return check_sql([lookup.prepare_sql(CHUNK), lookup.pick_sql(CHUNK)], schema, lookup.path)
