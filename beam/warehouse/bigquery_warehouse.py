"""The production warehouse: BigQuery, written by load jobs only, each job exactly once.

- Tables are written by load jobs (``WRITE_TRUNCATE`` to replace, ``WRITE_APPEND`` to append), never by
  streaming inserts: rows in the streaming buffer would block a later MERGE, UPDATE or DELETE.
- Job ids are deterministic: ``dataops-<namespace>-<run>-<stage>-<op>-<dataset>-<table>-g<generation>-
  <run start digest>-<n>``. A stage that is run again after a crash sends the same ids: BigQuery answers
  409 and the job that already ran is re-attached (awaited, never run twice), so an append cannot land
  twice. ``n`` is the job's own retry: a job that failed is retried under the next ``n`` (BigQuery never
  reruns an id).
- Quota and rate limits, backend errors and "Could not serialize access ... due to concurrent update"
  are retried with exponential backoff.
- Jobs carry labels ``run``, ``stage``, ``namespace`` and ``source`` (cost attribution); the bytes billed
  of every job are summed in :attr:`BigQueryWarehouse.bytes_billed` (loads are free; queries are billed).
- A refused permission names the role to grant and the resource; a missing dataset says how to create it.

``client`` is a ``google.cloud.bigquery.Client``; ``open_warehouse`` (see :mod:`beam.adapters`)
builds one from the environment.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from beam.warehouse.bigquery_types import ARROW_OF, bigquery_type, schema_name
from beam.warehouse.duckdb_warehouse import LineageRecord, WarehouseError, split_table

log = logging.getLogger("dataops.warehouse")

ATTEMPTS = 6
BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 60.0
RETRYABLE_REASONS = {"quotaExceeded", "rateLimitExceeded", "backendError", "internalError", "jobBackendError"}
RETRYABLE_TEXT = ("could not serialize access", "due to concurrent update")
ROLE_OF_PERMISSION = {
    "bigquery.jobs.create": "roles/bigquery.jobUser",
    "bigquery.tables.get": "roles/bigquery.dataViewer",
    "bigquery.tables.getData": "roles/bigquery.dataViewer",
    "bigquery.tables.list": "roles/bigquery.dataViewer",
    "bigquery.datasets.get": "roles/bigquery.dataViewer",
}
WRITER_ROLE = "roles/bigquery.dataEditor"


class BigQueryPermissionError(WarehouseError):
    """BigQuery refused a permission: the message names the role to grant and on which resource."""


class MissingDatasetError(WarehouseError):
    """A dataset the stage writes to does not exist."""


class WarehouseUnavailable(WarehouseError):
    """BigQuery kept refusing for a reason that passes with time (quota, rate limit, backend, conflict)."""

    retryable = True


def label_value(text: str) -> str:
    """BigQuery label rule: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def job_id_base(lineage: LineageRecord, operation: str, table: str) -> str:
    """The deterministic id of a job, without its retry number: the same in every attempt of a stage."""
    dataset, name = split_table(table)
    digest = hashlib.sha256(f"{lineage.namespace}/{lineage.run}/{lineage.written_at}".encode()).hexdigest()[
        :10
    ]
    parts = [
        lineage.namespace,
        lineage.run,
        lineage.stage,
        operation,
        dataset,
        name,
        f"g{lineage.generation}",
    ]
    text = "-".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in ["dataops", *parts, digest])
    return text[:1000]


def job_labels(lineage: LineageRecord) -> dict[str, str]:
    source = lineage.source_uri.rstrip("/").rsplit("/", 1)[-1] or lineage.source_uri
    return {
        "run": label_value(lineage.run),
        "stage": label_value(lineage.stage),
        "namespace": label_value(lineage.namespace),
        "source": label_value(source),
    }


def load_schema(schema: pa.Schema, declared: Mapping[str, str] | None = None) -> list[bigquery.SchemaField]:
    """The load job's schema: the spec's BigQuery type where it declares one, else the file's."""
    declared = {k: schema_name(v) for k, v in (declared or {}).items()}
    return [bigquery.SchemaField(f.name, declared.get(f.name) or bigquery_type(f.type)) for f in schema]


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, gexc.ServerError | gexc.TooManyRequests):
        return True
    errors = getattr(exc, "errors", None) or []
    reasons = {e.get("reason") for e in errors if isinstance(e, dict)}
    text = str(exc).lower()
    return bool(reasons & RETRYABLE_REASONS) or any(t in text for t in RETRYABLE_TEXT)


def explain(exc: gexc.GoogleAPICallError, what: str, project: str, location: str | None) -> WarehouseError:
    """A user's error from BigQuery's: which role on which resource, which dataset and how to create it."""
    message = exc.message if isinstance(exc.message, str) else str(exc)
    message = message.split("\n\nLocation:")[0].strip()
    errors = getattr(exc, "errors", None) or []
    reasons = {e.get("reason") for e in errors if isinstance(e, dict)}
    if "accessDenied" in reasons or "Access Denied" in message:
        found = re.search(r"Permission (\S+) denied on (\w+) (\S+?)(?: \(|\.?$)", message)
        project_level = re.search(r"does not have (\S+) permission in project (\S+?)\.?$", message)
        if found:
            permission, kind, resource = found.groups()
        elif project_level:
            permission, resource = project_level.groups()
            kind = "project"
        else:
            permission, kind, resource = "(not named)", "resource", "(not named)"
        role = ROLE_OF_PERMISSION.get(permission, WRITER_ROLE)
        return BigQueryPermissionError(
            f"{what}: BigQuery denied {permission} on {kind} {resource}: grant {role} on {kind} {resource}"
            f" to the stage's service account (Workload Identity), then retry the run. BigQuery said: {message}"
        )
    dataset = re.search(r"Not found: Dataset ([\w.-]+):([\w-]+)", message)
    if isinstance(exc, gexc.NotFound) and dataset:
        name = dataset.group(2)
        where = f" --location={location}" if location else ""
        return MissingDatasetError(
            f"{what}: dataset {dataset.group(1)}:{name} does not exist. Create it (terraform/gke declares the"
            f" pipeline's datasets) or with `bq mk --dataset{where} {project}:{name}`, then retry the run."
        )
    return WarehouseError(f"{what}: {message}")


class BigQueryWarehouse:
    """BigQuery ``dataset.table`` in one project. Mirrors :class:`DuckDBWarehouse` where stages use it."""

    def __init__(
        self,
        client: bigquery.Client,
        location: str | None = None,
        *,
        attempts: int = ATTEMPTS,
        backoff_seconds: float = BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.project: str = client.project
        self.location = location
        self.attempts, self.backoff_seconds, self.sleep = attempts, backoff_seconds, sleep
        self.bytes_billed = 0
        self.job_ids: list[str] = []

    @property
    def path(self) -> str:
        """Where the tables live, for messages (the DuckDB warehouse's file path)."""
        return f"BigQuery project {self.project}"

    def _ref(self, table: str) -> str:
        dataset, name = split_table(table)
        return f"{self.project}.{dataset}.{name}"

    # ---- reading -------------------------------------------------------------------------------------

    def exists(self, table: str) -> bool:
        try:
            self.client.get_table(self._ref(table))
        except gexc.NotFound:
            return False
        except gexc.GoogleAPICallError as exc:
            raise explain(exc, f"reading {table}", self.project, self.location) from None
        return True

    def require(self, table: str) -> None:
        if not self.exists(table):
            raise WarehouseError(f"table {table} does not exist in {self.path}")

    def row_count(self, table: str) -> int:
        try:
            return int(self.client.get_table(self._ref(table)).num_rows or 0)
        except gexc.GoogleAPICallError as exc:
            raise explain(exc, f"reading {table}", self.project, self.location) from None

    def table(self, table: str) -> bigquery.Table:
        """The table's resource: schema, partitioning, clustering, labels, description."""
        try:
            return self.client.get_table(self._ref(table))
        except gexc.GoogleAPICallError as exc:
            raise explain(exc, f"reading {table}", self.project, self.location) from None

    def schema(self, table: str) -> pa.Schema:
        fields = self.table(table).schema
        return pa.schema(
            [pa.field(f.name, ARROW_OF.get(schema_name(f.field_type), pa.string())) for f in fields]
        )

    def read_arrow(self, table: str, columns: Sequence[str] | None = None) -> pa.Table:
        ref = self.table(table)
        fields = [f for f in ref.schema if not columns or f.name in columns]
        rows = self.client.list_rows(ref, selected_fields=fields)
        return rows.to_arrow(create_bqstorage_client=False)

    def snapshot(self, tables: Sequence[str], path: Path) -> Path:
        """A DuckDB file holding a copy of ``tables`` (read through the BigQuery API): the input of a Beam
        pipeline run on the DirectRunner, which reads the warehouse as a DuckDB file."""
        path.unlink(missing_ok=True)
        con = duckdb.connect(str(path))
        try:
            for table in tables:
                dataset, name = split_table(table)
                con.register("__snapshot", self.read_arrow(table))
                con.execute(f'CREATE SCHEMA IF NOT EXISTS "{dataset}"')
                con.execute(f'CREATE TABLE "{dataset}"."{name}" AS SELECT * FROM __snapshot')
                con.unregister("__snapshot")
        finally:
            con.close()
        return path

    def lineage(self, table: str) -> LineageRecord | None:
        try:
            description = self.client.get_table(self._ref(table)).description
        except gexc.NotFound:
            return None
        try:
            return LineageRecord(**json.loads(description or ""))
        except (ValueError, TypeError):
            return None

    # ---- writing -------------------------------------------------------------------------------------

    def replace_table(
        self,
        table: str,
        data: pa.Table | str,
        lineage: LineageRecord,
        order_by: Sequence[str] = (),
        *,
        partition_by: Any = None,
        cluster_by: Sequence[str] = (),
        declared: Mapping[str, str] | None = None,
    ) -> int:
        """Replace ``table`` with ``data`` (Arrow, a local parquet glob, or ``gs://`` URIs) by one load job.

        ``order_by`` has no meaning in BigQuery (its order is its clustering: ``cluster_by``)."""
        job = self._load(
            table, data, lineage, "replace", "WRITE_TRUNCATE", partition_by, cluster_by, declared
        )
        self._describe(table, lineage)
        return int(job.output_rows or 0)

    def append_table(
        self,
        table: str,
        data: pa.Table | str,
        lineage: LineageRecord,
        *,
        partition_by: Any = None,
        cluster_by: Sequence[str] = (),
        declared: Mapping[str, str] | None = None,
    ) -> int:
        """Append ``data`` once per (run, generation): a stage run again re-attaches to the load it made."""
        job = self._load(table, data, lineage, "append", "WRITE_APPEND", partition_by, cluster_by, declared)
        self._describe(table, lineage)
        return int(job.output_rows or 0)

    def replace_run_rows(self, table: str, data: pa.Table, lineage: LineageRecord) -> int:
        """Replace this run's rows of a table shared by runs (``run`` column): staged by a load job, then
        ``DELETE`` + ``INSERT`` in one transaction."""
        dataset, name = split_table(table)
        staging = f"{dataset}._dataops_staging_{re.sub(r'[^A-Za-z0-9_]', '_', lineage.run)}_{name}"[:1024]
        self._load(staging, data, lineage, "stage", "WRITE_TRUNCATE", None, (), None)
        target, staged = f"`{self._ref(table)}`", f"`{self._ref(staging)}`"
        script = (
            f"CREATE TABLE IF NOT EXISTS {target} AS SELECT * FROM {staged} LIMIT 0;\n"
            "BEGIN TRANSACTION;\n"
            f"DELETE FROM {target} WHERE run = @run;\n"
            f"INSERT INTO {target} SELECT * FROM {staged};\n"
            "COMMIT TRANSACTION;\n"
        )
        self.query(script, {"run": lineage.run}, lineage, "swap", table)
        self.client.delete_table(self._ref(staging), not_found_ok=True)
        self._describe(table, lineage)
        return self.row_count(table)

    def drop_table(self, table: str) -> None:
        self.client.delete_table(self._ref(table), not_found_ok=True)

    def query(
        self, sql: str, params: Mapping[str, Any], lineage: LineageRecord, operation: str, table: str
    ) -> bigquery.QueryJob:
        """A query job (a script may hold a transaction) with a deterministic id, run exactly once."""
        config = bigquery.QueryJobConfig(
            query_parameters=[_parameter(k, v) for k, v in sorted(params.items())], labels=job_labels(lineage)
        )

        def start(job_id: str) -> Any:
            return self.client.query(
                sql, job_config=config, job_id=job_id, location=self.location, job_retry=None
            )

        job: bigquery.QueryJob = self._run_job(
            start, job_id_base(lineage, operation, table), f"{operation} {table}"
        )
        return job

    def _load(
        self,
        table: str,
        data: pa.Table | str,
        lineage: LineageRecord,
        operation: str,
        write: str,
        partition_by: Any,
        cluster_by: Sequence[str],
        declared: Mapping[str, str] | None,
    ) -> bigquery.LoadJob:
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=write,
            create_disposition="CREATE_IF_NEEDED",
            labels=job_labels(lineage),
        )
        if partition_by is not None:
            config.time_partitioning = bigquery.TimePartitioning(
                type_=str(getattr(partition_by, "granularity", "DAY")), field=partition_by.column
            )
        if cluster_by:
            config.clustering_fields = list(cluster_by)
        what = f"loading {table}"
        ref = self._ref(table)
        if isinstance(data, str) and data.startswith("gs://"):
            if declared:  # the spec's columns, in its order and types (the files must hold exactly those)
                config.schema = [
                    bigquery.SchemaField(name, schema_name(kind)) for name, kind in declared.items()
                ]

            def start(job_id: str) -> Any:
                return self.client.load_table_from_uri(
                    data, ref, job_id=job_id, job_config=config, location=self.location
                )

        else:
            arrow = data if isinstance(data, pa.Table) else _read_parquet(data)
            config.schema = load_schema(arrow.schema, declared)
            buffer = io.BytesIO()
            pq.write_table(arrow, buffer)
            payload = buffer.getvalue()

            def start(job_id: str) -> Any:
                return self.client.load_table_from_file(
                    io.BytesIO(payload),
                    ref,
                    job_id=job_id,
                    job_config=config,
                    size=len(payload),
                    location=self.location,
                )

        job: bigquery.LoadJob = self._run_job(start, job_id_base(lineage, operation, table), what)
        return job

    def _run_job(self, start: Callable[[str], Any], base: str, what: str) -> Any:
        """Insert and await a job; re-attach on 409; retry what may pass later under the next id."""
        last = self.attempts - 1
        for attempt in range(self.attempts):
            job_id = f"{base}-{attempt}"
            fresh = True
            try:
                job = start(job_id)
            except gexc.Conflict:  # this id ran before (a lost answer, or an earlier run of the stage)
                log.info("job %s exists already: re-attached", job_id)
                job = self.client.get_job(job_id, location=self.location)
                fresh = False
            except gexc.GoogleAPICallError as exc:  # the insert was refused: no job was created
                if retryable(exc) and attempt < last:
                    self._back_off(attempt, job_id, exc)
                    continue
                raise self._gave_up(exc, what) from None
            try:
                job.result()
            except gexc.GoogleAPICallError as exc:
                if not fresh and attempt < last:  # an earlier run's failed job: the next id is fresh
                    continue
                if retryable(exc) and attempt < last:
                    self._back_off(attempt, job_id, exc)
                    continue
                raise self._gave_up(exc, what) from None
            self.job_ids.append(job_id)
            self.bytes_billed += int(getattr(job, "total_bytes_billed", None) or 0)
            return job
        raise AssertionError("unreachable")

    def _gave_up(self, exc: gexc.GoogleAPICallError, what: str) -> WarehouseError:
        error = explain(exc, what, self.project, self.location)
        if retryable(exc):
            return WarehouseUnavailable(
                f"{error} (still failing after {self.attempts} attempts: the stage may be retried)"
            )
        return error

    def _back_off(self, attempt: int, job_id: str, exc: Exception) -> None:
        delay = min(self.backoff_seconds * 2**attempt, MAX_BACKOFF_SECONDS)
        log.warning(
            "job %s: %s; retrying in %.0fs under the next id", job_id, str(exc).splitlines()[0], delay
        )
        self.sleep(delay)

    def _describe(self, table: str, lineage: LineageRecord) -> None:
        """The lineage as the table's description (BigQuery's stand-in for catalog tags), its run as labels."""
        try:
            ref = self.client.get_table(self._ref(table))
            ref.description = json.dumps(asdict(lineage) | {"rows": int(ref.num_rows or 0)}, sort_keys=True)
            ref.labels = {**(ref.labels or {}), **job_labels(lineage)}
            self.client.update_table(ref, ["description", "labels"])
        except gexc.GoogleAPICallError as exc:
            raise explain(exc, f"describing {table}", self.project, self.location) from None


def _read_parquet(path: str) -> pa.Table:
    """Every part of a local parquet glob, as one table (one load job is one atomic write)."""
    con = duckdb.connect()
    try:
        return con.sql(f"SELECT * FROM read_parquet('{path.replace(chr(39), chr(39) * 2)}')").to_arrow_table()
    finally:
        con.close()


def _parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter:
    kind = "BOOL" if isinstance(value, bool) else "INT64" if isinstance(value, int) else "STRING"
    if hasattr(value, "tzinfo"):
        kind = "TIMESTAMP"
    elif isinstance(value, float):
        kind = "FLOAT64"
    return bigquery.ScalarQueryParameter(name, kind, value)
