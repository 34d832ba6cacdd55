"""Which adapter each port of a stage uses: the one place that says it, read from the run's spec and the
environment (which the Helm chart sets in the cluster); never from code edits.

| port | chosen by | local default | in the cluster (Helm) |
|---|---|---|---|
| object store | the URI's scheme: ``spec.source.uri``, ``--workdir`` | local paths, ``file://`` | ``gs://`` (``worker.workdir``, the landing bucket) |
| message bus | ``DATAOPS_BUS`` (``--bus`` for consolidation) | ``embedded`` (a queue in the workdir) | ``pubsub`` when ``gcp.projectId`` is set |
| Pub/Sub project | ``PUBSUB_PROJECT_ID``, else ``GOOGLE_CLOUD_PROJECT`` | (the emulator's with ``PUBSUB_EMULATOR_HOST``) | ``gcp.projectId`` |
| validation topics | ``spec.validate.notify``, else ``DATAOPS_TOPIC_VALIDATION_SUCCESS`` / ``_ERROR`` | none: nothing published | ``gcp.topics.validation-success`` / ``-error`` |
| GCS endpoint | ``STORAGE_EMULATOR_HOST`` (fake-gcs-server), else Google's | | Google's, Workload Identity |
| scratch of a ``gs://`` workdir | ``DATAOPS_SCRATCH``, else a temp folder | | the pod's ``/tmp`` emptyDir |
| warehouse | ``spec.warehouse.type``, else ``DATAOPS_WAREHOUSE`` | ``duckdb`` (``<workdir>/warehouse.duckdb``) | ``warehouse.type`` |
| BigQuery project | ``spec.warehouse.project``, else ``DATAOPS_BIGQUERY_PROJECT``, else ``GOOGLE_CLOUD_PROJECT`` | | ``warehouse.bigquery.project`` |
| BigQuery location | ``spec.warehouse.location``, else ``DATAOPS_BIGQUERY_LOCATION`` (``US``, ``EU``, ``europe-west1``...) | | ``warehouse.bigquery.location`` |
| BigQuery endpoint | ``DATAOPS_BIGQUERY_ENDPOINT`` (a local double or emulator: anonymous credentials) | | Google's |

:func:`adapters_for` resolves the object store, bus and topics for one run, and a stage logs the result
when it starts; :func:`warehouse_config` resolves the warehouse, which the stage opens
(:func:`beam.warehouse.open_warehouse`). Both are pure: the caller passes the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from beam.warehouse.duckdb_warehouse import WarehouseError
from controller.spec import PipelineRunSpec

SUCCESS_TOPIC_ENV = "DATAOPS_TOPIC_VALIDATION_SUCCESS"
ERROR_TOPIC_ENV = "DATAOPS_TOPIC_VALIDATION_ERROR"

WarehouseKind = Literal["duckdb", "bigquery"]
WAREHOUSE_KINDS: tuple[WarehouseKind, ...] = ("duckdb", "bigquery")


@dataclass(frozen=True)
class Adapters:
    object_store: str  # "local" | "gcs": where the source is read from
    workdir_store: str  # "local" | "gcs": where run files are kept
    bus: str  # "embedded" | "pubsub"
    success_topic: str | None
    error_topic: str | None
    gcs_endpoint: str | None  # None: Google's

    def describe(self) -> str:
        topics = f"success={self.success_topic or '-'} error={self.error_topic or '-'}"
        endpoint = f" ({self.gcs_endpoint})" if self.gcs_endpoint else ""
        return f"source={self.object_store}{endpoint} workdir={self.workdir_store} bus={self.bus} topics: {topics}"


def _store(uri: str) -> str:
    return "gcs" if uri.startswith("gs://") else "local"


def bus_kind(env: Mapping[str, str], kind: str | None = None) -> str:
    """The message bus: ``kind`` (``--bus``), else ``DATAOPS_BUS``, else ``embedded``."""
    return kind or env.get("DATAOPS_BUS") or "embedded"


def adapters_for(spec: PipelineRunSpec, workdir: str, env: Mapping[str, str]) -> Adapters:
    """The adapters of one run's stages. Pure: the caller passes the environment."""
    notify = spec.validate_.notify
    return Adapters(
        object_store=_store(spec.source.uri),
        workdir_store=_store(workdir),
        bus=bus_kind(env),
        success_topic=(notify.success_topic if notify else None) or env.get(SUCCESS_TOPIC_ENV) or None,
        error_topic=(notify.error_topic if notify else None) or env.get(ERROR_TOPIC_ENV) or None,
        gcs_endpoint=env.get("STORAGE_EMULATOR_HOST") or None,
    )


@dataclass(frozen=True)
class WarehouseConfig:
    kind: WarehouseKind = "duckdb"
    project: str | None = None
    location: str | None = None
    endpoint: str | None = None


def warehouse_config(environ: Mapping[str, str], choice: Any = None) -> WarehouseConfig:
    """From the environment, where a run's ``spec.warehouse`` (``choice``: ``type``, ``project``,
    ``location``) wins field by field."""
    kind = (getattr(choice, "type", None) or environ.get("DATAOPS_WAREHOUSE") or "duckdb").strip().lower()
    if kind not in WAREHOUSE_KINDS:
        raise WarehouseError(f"DATAOPS_WAREHOUSE={kind!r}: choose one of {', '.join(WAREHOUSE_KINDS)}")
    if kind == "duckdb":
        return WarehouseConfig()
    project = (
        getattr(choice, "project", None)
        or environ.get("DATAOPS_BIGQUERY_PROJECT")
        or environ.get("GOOGLE_CLOUD_PROJECT")
    )
    if not project:
        raise WarehouseError(
            "DATAOPS_WAREHOUSE=bigquery needs a project: set DATAOPS_BIGQUERY_PROJECT"
            " (Helm: warehouse.bigquery.project)"
        )
    return WarehouseConfig(
        kind="bigquery",
        project=project,
        location=getattr(choice, "location", None) or environ.get("DATAOPS_BIGQUERY_LOCATION") or None,
        endpoint=environ.get("DATAOPS_BIGQUERY_ENDPOINT") or None,
    )
