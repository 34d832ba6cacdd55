"""Chunk I/O shared by the TDS and BDS pipelines: elements are Arrow tables of many rows, not rows.

Per-row Beam elements cost ~38x DuckDB's time on the same work; here each element is a chunk of rows
(a ``pyarrow.Table``), each step runs DuckDB SQL over the chunk in memory, and the only shuffle moves a
few large elements: every chunk is split by ``hash(key) % buckets`` and the pieces of one bucket meet
in one ``GroupByKey`` group, where DuckDB deduplicates or aggregates them.

The DoFns are small and stateless; their one connection (in-memory DuckDB) is opened in ``setup()``.
Reading talks to the warehouse port only; parts are written through Beam's ``FileSystems`` so a
``gs://`` staging folder works the same as a local one.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.coders.typecoders import registry
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics, MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.pvalue import PBegin, PCollection
from apache_beam.runners.runner import PipelineResult

from beam.sql import ROW_ID, SpecSqlError, bucket_sql
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse, quote_table

CHUNK = "chunk"
"""The relation name a chunk is registered under when its SQL runs."""

NAMESPACE = "dataops"
"""The namespace of every counter the pipelines keep."""

LOCAL_RUNNER = "BundleBasedDirectRunner"
"""The in-process runner used when argv names none.

Beam 2.77's ``DirectRunner`` first tries to download the Prism runner (no network here: it fails, then
falls back). Measured on 1M raw rows (TDS + BDS + swaps, best of 3, 2 CPUs): ``BundleBasedDirectRunner``
8.6 s, ``FnApiRunner`` (``direct_running_mode=in_memory``) 10.8 s, the latter encoding every chunk
between stages; ``multi_processing`` was 3-5x slower and ``multi_threading`` grew past 20 GB and was
OOM-killed. ``--runner FnApiRunner`` (or DataflowRunner) still works from argv."""

Chunks = PCollection[pa.Table]
"""Chunks of rows: the elements of every per-row step."""

Buckets = PCollection[tuple[int, pa.Table]]
"""``(bucket, rows)``: all the rows of a bucket's keys, after the shuffle."""

DEFAULT_BUCKETS = 4
DEFAULT_CHUNK_ROWS = 262144


# ---- options and results ----------------------------------------------------------------------------


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """Beam options from argv; the in-process runner unless ``--runner`` names another one."""
    options = PipelineOptions(list(beam_args))
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
    return options


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"{text} is not at least 1")
    return value


def counters(result: PipelineResult) -> dict[str, int]:
    """The pipeline's counters (committed where the runner has them, else attempted)."""
    found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    out: dict[str, int] = {}
    for counter in found:
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


# ---- Arrow chunks in DuckDB -------------------------------------------------------------------------


class ArrowTableCoder(beam.coders.Coder):
    """A chunk as one Arrow IPC stream: slices write only their rows, no pickling."""

    def encode(self, value: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, value.schema) as writer:
            writer.write_table(value)
        return bytes(sink.getvalue())

    def decode(self, encoded: bytes) -> pa.Table:
        return pa.ipc.open_stream(pa.py_buffer(encoded)).read_all()

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: pa.Table) -> int:
        return int(value.nbytes)

    def to_type_hint(self) -> Any:
        return pa.Table


registry.register_coder(pa.Table, ArrowTableCoder)


_ARROW_TO_BIGQUERY = (
    (pa.types.is_boolean, "BOOL"),
    (pa.types.is_integer, "INT64"),
    (pa.types.is_floating, "FLOAT64"),
    (pa.types.is_decimal, "NUMERIC"),
    (pa.types.is_date, "DATE"),
    (lambda t: pa.types.is_timestamp(t) and t.tz is None, "DATETIME"),
    (pa.types.is_timestamp, "TIMESTAMP"),
    (pa.types.is_string, "STRING"),
    (pa.types.is_large_string, "STRING"),
    (pa.types.is_string_view, "STRING"),
)


def column_types(schema: pa.Schema) -> dict[str, str]:
    """``name -> BigQuery type`` of a table's columns, in order (the shape :mod:`beam.sql` takes)."""
    out = {}
    for f in schema:
        if f.name == ROW_ID:
            continue
        out[f.name] = next((bq for test, bq in _ARROW_TO_BIGQUERY if test(f.type)), str(f.type).upper())
    return out


def memory_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for chunk SQL: nothing on disk, no progress bar on the terminal."""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    return con


def run_sql(
    con: duckdb.DuckDBPyConnection, sql: str, chunk: pa.Table, relations: Mapping[str, pa.Table] | None = None
) -> pa.Table:
    """``sql`` over ``chunk`` registered as :data:`CHUNK` (and ``relations`` under their names)."""
    tables = {CHUNK: chunk, **(relations or {})}
    for name, table in tables.items():
        con.register(name, table)
    try:
        result = con.sql(sql).to_arrow_table()
    finally:
        for name in tables:
            con.unregister(name)
    return result


def check_sql(
    statements: Sequence[str],
    schema: pa.Schema,
    what: str,
    relations: Mapping[str, pa.Schema] | None = None,
) -> pa.Schema:
    """Run the chain of ``statements`` (each over :data:`CHUNK`) on no rows; the schema that comes out.

    ``relations`` are other tables the statements read (empty too). Catches what only the engine sees
    (a type mismatch in an expression) before any data moves."""
    table = schema.empty_table()
    others = {name: other.empty_table() for name, other in (relations or {}).items()}
    with memory_connection() as con:
        for sql in statements:
            try:
                table = run_sql(con, sql, table, others)
            except duckdb.Error as exc:
                raise SpecSqlError(f"{what}: {exc}") from None
    return table.schema


# ---- read ------------------------------------------------------------------------------------------


def row_ranges(table: str, warehouse: DuckDBWarehouse, chunk_rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` rowid ranges covering ``table``: at least one, so an empty table still flows."""
    found = warehouse.query_arrow(f"SELECT coalesce(max(rowid) + 1, 0) AS stop FROM {quote_table(table)}")
    stop = int(found.column(0)[0].as_py())
    return [(start, min(start + chunk_rows, stop)) for start in range(0, stop, chunk_rows)] or [(0, 0)]


@beam.typehints.with_input_types(tuple[int, int])
@beam.typehints.with_output_types(pa.Table)
class ReadChunkFn(beam.DoFn):
    """Rows ``start <= rowid < stop`` of a warehouse table, as one chunk; ``counter`` counts them."""

    def __init__(
        self,
        warehouse: str,
        table: str,
        schema: pa.Schema,
        with_row_id: str | None,
        counter: str = "rows_read",
    ) -> None:
        self.warehouse = warehouse
        self.table = table
        self.schema = schema
        self.with_row_id = with_row_id
        self.rows_read = Metrics.counter(NAMESPACE, counter)

    def process(self, element: tuple[int, int]) -> Iterator[pa.Table]:
        start, stop = element
        port = DuckDBWarehouse(Path(self.warehouse))
        batches = list(port.read_batches(self.table, start, stop, max(stop - start, 1), self.with_row_id))
        chunk = pa.Table.from_batches(batches, schema=self.schema)
        self.rows_read.inc(chunk.num_rows)
        yield chunk


class ReadTableChunks(beam.PTransform[PBegin, Chunks]):
    """A warehouse table as chunks of rows, read by rowid range (ranges spread over workers)."""

    def __init__(
        self,
        warehouse: str,
        table: str,
        ranges: Sequence[tuple[int, int]],
        schema: pa.Schema,
        with_row_id: str | None = ROW_ID,
        counter: str = "rows_read",
    ) -> None:
        super().__init__()
        self.warehouse = warehouse
        self.table = table
        self.ranges = list(ranges)
        self.schema = schema.append(pa.field(with_row_id, pa.int64())) if with_row_id else schema
        self.with_row_id = with_row_id
        self.counter = counter

    def expand(self, pbegin: PBegin) -> Chunks:
        read = ReadChunkFn(self.warehouse, self.table, self.schema, self.with_row_id, self.counter)
        return (
            pbegin
            | "RowRanges" >> beam.Create(self.ranges)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadRanges" >> beam.ParDo(read)
        )


# ---- per chunk, per bucket -------------------------------------------------------------------------


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(pa.Table)
class ChunkSqlFn(beam.DoFn):
    """One SQL statement over each chunk; ``dropped`` counts the rows it removes."""

    def __init__(self, sql: str, dropped: str | None = None) -> None:
        self.sql = sql
        self.dropped = Metrics.counter(NAMESPACE, dropped) if dropped else None

    def setup(self) -> None:
        self.con = memory_connection()

    def process(self, chunk: pa.Table) -> Iterator[pa.Table]:
        out = run_sql(self.con, self.sql, chunk)
        if self.dropped is not None:
            self.dropped.inc(chunk.num_rows - out.num_rows)
        yield out

    def teardown(self) -> None:
        self.con.close()


@beam.typehints.with_input_types(pa.Table)
@beam.typehints.with_output_types(tuple[int, pa.Table])
class SplitIntoBucketsFn(beam.DoFn):
    """``(bucket, rows)`` for every bucket, the rows of a chunk whose key hashes there (maybe none).

    ``ids_sql`` (over :data:`CHUNK`, one INTEGER column) replaces ``hash(key) % buckets`` where two
    inputs must agree on buckets (a keyed join casts both sides' keys to one type first)."""

    def __init__(self, key: Sequence[str], buckets: int, ids_sql: str | None = None) -> None:
        self.key = list(key)
        self.buckets = buckets if self.key else 1
        self.ids_sql = ids_sql or bucket_sql(self.key, self.buckets, CHUNK)

    def setup(self) -> None:
        self.con = memory_connection()

    def process(self, chunk: pa.Table) -> Iterator[tuple[int, pa.Table]]:
        if self.buckets == 1:
            yield 0, chunk
            return
        ids = run_sql(self.con, self.ids_sql, chunk).column(0)
        ordered = chunk.take(pc.sort_indices(ids))
        sizes = np.bincount(ids.to_numpy(), minlength=self.buckets)
        offset = 0
        for bucket, size in enumerate(sizes.tolist()):
            yield bucket, ordered.slice(offset, size)
            offset += size

    def teardown(self) -> None:
        self.con.close()


def _concat(element: tuple[int, Iterable[pa.Table]]) -> tuple[int, pa.Table]:
    bucket, pieces = element
    return bucket, pa.concat_tables(list(pieces))


class GroupIntoBuckets(beam.PTransform[Chunks, Buckets]):
    """Chunks regrouped so that all rows of one key are in one ``(bucket, table)``; every bucket comes out."""

    def __init__(self, key: Sequence[str], buckets: int) -> None:
        super().__init__()
        self.key = list(key)
        self.buckets = buckets

    def expand(self, chunks: Chunks) -> Buckets:
        return (
            chunks
            | "SplitByKeyHash" >> beam.ParDo(SplitIntoBucketsFn(self.key, self.buckets))
            | "ShuffleBuckets" >> beam.GroupByKey()
            | "ConcatBucket" >> beam.Map(_concat).with_output_types(tuple[int, pa.Table])
        )


@beam.typehints.with_input_types(tuple[int, pa.Table])
@beam.typehints.with_output_types(tuple[int, pa.Table])
class BucketSqlFn(beam.DoFn):
    """One SQL statement over each bucket's rows; ``dropped`` counts the rows it removes."""

    def __init__(self, sql: str, dropped: str | None = None) -> None:
        self.sql = sql
        self.dropped = Metrics.counter(NAMESPACE, dropped) if dropped else None

    def setup(self) -> None:
        self.con = memory_connection()

    def process(self, element: tuple[int, pa.Table]) -> Iterator[tuple[int, pa.Table]]:
        bucket, rows = element
        out = run_sql(self.con, self.sql, rows)
        if self.dropped is not None:
            self.dropped.inc(rows.num_rows - out.num_rows)
        yield bucket, out

    def teardown(self) -> None:
        self.con.close()


# ---- write -----------------------------------------------------------------------------------------


def part_path(staging: str, name: str, part: int) -> str:
    """Where part ``part`` of output ``name`` goes: a fixed name, so a retry overwrites it."""
    return FileSystems.join(staging, name, f"part-{part:05d}.parquet")


def parts_glob(staging: str, name: str) -> str:
    return FileSystems.join(staging, name, "part-*.parquet")


def clear_parts(staging: str, name: str) -> None:
    """Remove the parts an earlier attempt left (it may have had more buckets)."""
    found = FileSystems.match([parts_glob(staging, name)])[0].metadata_list
    if found:
        FileSystems.delete([m.path for m in found])


@beam.typehints.with_input_types(tuple[int, pa.Table])
@beam.typehints.with_output_types(str)
class WritePartFn(beam.DoFn):
    def __init__(self, staging: str, name: str, counter: str) -> None:
        self.staging = staging
        self.name = name
        self.rows_written = Metrics.counter(NAMESPACE, counter)

    def process(self, element: tuple[int, pa.Table]) -> Iterator[str]:
        part, rows = element
        path = part_path(self.staging, self.name, part)
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as sink:
            pq.write_table(rows, sink)
        self.rows_written.inc(rows.num_rows)
        yield path


class WriteParquetParts(beam.PTransform[Buckets, PCollection[str]]):
    """Each ``(part, table)`` to ``<staging>/<name>/part-<part>.parquet``; the paths come out."""

    def __init__(self, staging: str, name: str, counter: str = "rows_written") -> None:
        super().__init__()
        self.staging = staging
        self.name = name
        self.counter = counter

    def expand(self, parts: Buckets) -> PCollection[str]:
        return parts | "WritePart" >> beam.ParDo(WritePartFn(self.staging, self.name, self.counter))
