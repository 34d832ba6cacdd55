"""The catalog port: lineage and table aspects for the tables a stage writes. Off unless configured.

``DATAOPS_CATALOG=dataplex`` turns it on for a stage's process (the chart hands the variables to stage
pods); then, after a stage succeeds, :func:`record_stage` writes

- lineage through the Data Lineage API (:mod:`beam.catalog.lineage`): inputs -> tables written;
- a ``dataops-table`` aspect on each table's BigQuery entry through Dataplex Catalog
  (:mod:`beam.catalog.aspects`).

Settings: ``DATAOPS_CATALOG_PROJECT`` (else ``GOOGLE_CLOUD_PROJECT``), ``DATAOPS_CATALOG_LOCATION`` (else
``DATAOPS_GCP_REGION``), ``DATAOPS_CATALOG_ASPECT_TYPE`` (``dataops-table``), ``DATAOPS_LINEAGE_ENDPOINT``
and ``DATAOPS_DATAPLEX_ENDPOINT`` (a private endpoint, or tests), ``DATAOPS_CATALOG_CREDENTIALS``
(``adc`` or ``anonymous``). Locally nothing is set, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from beam.catalog import aspects, lineage
from beam.catalog.rest import CatalogError, GoogleRest
from controller.spec import PipelineRun

__all__ = ["CatalogError", "CatalogSettings", "catalog_settings", "record_stage"]


@dataclass(frozen=True)
class CatalogSettings:
    project: str
    location: str
    aspect_type: str = aspects.DEFAULT_ASPECT_TYPE
    lineage_endpoint: str = lineage.DEFAULT_ENDPOINT
    dataplex_endpoint: str = aspects.DEFAULT_ENDPOINT
    anonymous: bool = False


def catalog_settings(env: Mapping[str, str]) -> CatalogSettings | None:
    """The catalog settings of a stage's environment; None when the catalog is off (the default)."""
    kind = env.get("DATAOPS_CATALOG", "")
    if not kind:
        return None
    if kind != "dataplex":
        raise CatalogError(f"DATAOPS_CATALOG={kind!r}: the only catalog is 'dataplex' (or unset: none)")
    project = env.get("DATAOPS_CATALOG_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT", "")
    location = env.get("DATAOPS_CATALOG_LOCATION") or env.get("DATAOPS_GCP_REGION", "")
    if not project or not location:
        raise CatalogError(
            "DATAOPS_CATALOG=dataplex needs DATAOPS_CATALOG_PROJECT (or GOOGLE_CLOUD_PROJECT) and "
            "DATAOPS_CATALOG_LOCATION (or DATAOPS_GCP_REGION)"
        )
    return CatalogSettings(
        project=project,
        location=location,
        aspect_type=env.get("DATAOPS_CATALOG_ASPECT_TYPE") or aspects.DEFAULT_ASPECT_TYPE,
        lineage_endpoint=env.get("DATAOPS_LINEAGE_ENDPOINT") or lineage.DEFAULT_ENDPOINT,
        dataplex_endpoint=env.get("DATAOPS_DATAPLEX_ENDPOINT") or aspects.DEFAULT_ENDPOINT,
        anonymous=env.get("DATAOPS_CATALOG_CREDENTIALS", "adc") == "anonymous",
    )


def _segment(text: str) -> str:
    """An FQN segment, in backticks when it holds a reserved character (colon, dot, whitespace)."""
    if any(c in text for c in ":. \t") or "`" in text:
        return "`" + text.replace("`", "``") + "`"
    return text


def fqn(name: str, project: str) -> str | None:
    """The fully qualified name of a table (``dataset.table``) or a gs:// object; None for a local file."""
    if name.startswith("gs://"):
        bucket, _, path = name[len("gs://") :].partition("/")
        return f"gcs:{bucket}.{_segment(path)}" if path else f"gcs:{bucket}"
    if "://" in name or "/" in name:
        return None
    dataset, _, table = name.partition(".")
    return f"bigquery:{project}.{dataset}.{table}" if table else None


def stage_inputs(run: PipelineRun, stage: str) -> list[str]:
    """What a stage reads, from the spec: the file, the raw table, the references, the TDS table."""
    spec = run.spec
    if stage in ("validate", "load"):
        return [spec.source.uri]
    if stage == "transform" and spec.transform is not None:
        refs = [ref.table or ref.uri or "" for ref in spec.transform.lookups]
        return [spec.load.table, *[r for r in refs if r]]
    if stage == "aggregate" and spec.transform is not None:
        return [spec.transform.output.table]
    return []


def record_stage(
    settings: CatalogSettings,
    run: PipelineRun,
    stage: str,
    tables: list[str],
    rows: int,
    started_at: str,
    rest: tuple[GoogleRest, GoogleRest] | None = None,
) -> str:
    """Write the lineage and the aspects of one succeeded stage; a one-line summary."""
    if not tables:
        return "no table written: nothing to catalog"
    lineage_rest, dataplex_rest = rest or (
        GoogleRest(settings.lineage_endpoint, lineage.ROLE, settings.anonymous),
        GoogleRest(settings.dataplex_endpoint, aspects.ROLE, settings.anonymous),
    )
    inputs = [f for f in (fqn(i, settings.project) for i in stage_inputs(run, stage)) if f]
    outputs = [f for f in (fqn(t, settings.project) for t in tables) if f]
    meta = run.metadata
    ended = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    event = lineage.LineageWriter(lineage_rest, settings.project, settings.location).record(
        lineage.LineageEntry(
            namespace=meta.namespace,
            run=meta.name,
            generation=meta.generation,
            stage=stage,
            inputs=inputs,
            outputs=outputs,
            start_time=started_at,
            end_time=ended,
            attributes={"rows": rows},
        )
    )
    writer = aspects.AspectWriter(dataplex_rest, settings.project, settings.location, settings.aspect_type)
    for table in tables:
        writer.tag(
            table,
            {
                "run": f"{meta.namespace}/{meta.name}",
                "stage": stage,
                "generation": meta.generation,
                "source_uri": run.spec.source.uri,
                "inputs": ",".join(stage_inputs(run, stage)),
                "rows": rows,
                "written_at": started_at,
            },
        )
    return f"lineage {event}; aspect {writer.key} on {len(tables)} table(s)"
