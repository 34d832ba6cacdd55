"""Which warehouse a stage writes to: one place, read from the environment, never from code edits.

| variable | meaning |
|---|---|
| ``DATAOPS_WAREHOUSE`` | ``duckdb`` (default: ``<workdir>/warehouse.duckdb``) or ``bigquery`` |
| ``DATAOPS_BIGQUERY_PROJECT`` | the project that runs the jobs and holds the datasets (default: ``GOOGLE_CLOUD_PROJECT``) |
| ``DATAOPS_BIGQUERY_LOCATION`` | where jobs run and datasets live (``US``, ``EU``, ``europe-west1``...) |
| ``DATAOPS_BIGQUERY_ENDPOINT`` | an API endpoint override, for a local double or emulator: anonymous credentials are used |

In the cluster the Helm chart sets them on every stage pod (``warehouse.*`` values); locally they come
from the shell. A run's ``spec.warehouse`` (``type``, ``project``, ``location``) overrides them for that
run. :func:`warehouse_config` is pure (it reads the mapping and the choice it is given).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from beam.warehouse.duckdb_warehouse import WarehouseError

Kind = Literal["duckdb", "bigquery"]
KINDS: tuple[Kind, ...] = ("duckdb", "bigquery")


@dataclass(frozen=True)
class WarehouseConfig:
    kind: Kind = "duckdb"
    project: str | None = None
    location: str | None = None
    endpoint: str | None = None


def warehouse_config(environ: Mapping[str, str], choice: Any = None) -> WarehouseConfig:
    """From the environment, where a run's ``spec.warehouse`` (``choice``: ``type``, ``project``,
    ``location``) wins field by field."""
    kind = (getattr(choice, "type", None) or environ.get("DATAOPS_WAREHOUSE") or "duckdb").strip().lower()
    if kind not in KINDS:
        raise WarehouseError(f"DATAOPS_WAREHOUSE={kind!r}: choose one of {', '.join(KINDS)}")
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
