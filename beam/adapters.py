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

:func:`adapters_for` resolves them for one run; a stage logs the result when it starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.spec import PipelineRunSpec

SUCCESS_TOPIC_ENV = "DATAOPS_TOPIC_VALIDATION_SUCCESS"
ERROR_TOPIC_ENV = "DATAOPS_TOPIC_VALIDATION_ERROR"


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


def adapters_for(spec: PipelineRunSpec, workdir: str, env: Mapping[str, str]) -> Adapters:
    """The adapters of one run's stages. Pure: the caller passes the environment."""
    notify = spec.validate_.notify
    return Adapters(
        object_store=_store(spec.source.uri),
        workdir_store=_store(workdir),
        bus=env.get("DATAOPS_BUS") or "embedded",
        success_topic=(notify.success_topic if notify else None) or env.get(SUCCESS_TOPIC_ENV) or None,
        error_topic=(notify.error_topic if notify else None) or env.get(ERROR_TOPIC_ENV) or None,
        gcs_endpoint=env.get("STORAGE_EMULATOR_HOST") or None,
    )
