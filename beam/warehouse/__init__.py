"""The warehouse port: where raw, TDS and BDS tables live.

Production speaks BigQuery (:mod:`beam.warehouse.bigquery_warehouse`); the embedded default is one DuckDB
file, ``<workdir>/warehouse.duckdb``, where BigQuery ``dataset.table`` is DuckDB schema ``dataset``, table
``table``. Which one a stage gets is decided in :mod:`beam.adapters`, from the spec and the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beam.warehouse.duckdb_warehouse import DuckDBWarehouse, LineageRecord, WarehouseError

if TYPE_CHECKING:
    from beam.adapters import WarehouseConfig
    from beam.warehouse.bigquery_warehouse import BigQueryWarehouse

WAREHOUSE_FILE = "warehouse.duckdb"


def open_warehouse(workdir: Path | str, environ: Mapping[str, str] | None = None, choice: Any = None) -> Any:
    """The warehouse a stage writes to: DuckDB in ``workdir`` unless the run's ``spec.warehouse``
    (``choice``) or the environment selects BigQuery."""
    from beam.adapters import warehouse_config  # beam.adapters imports this package's errors

    config = warehouse_config(os.environ if environ is None else environ, choice)
    if config.kind == "bigquery":
        return open_bigquery(config)
    return DuckDBWarehouse(Path(workdir) / WAREHOUSE_FILE)


def pipeline_input(warehouse: Any, tables: Sequence[str], folder: Path) -> Path:
    """The DuckDB file a Beam pipeline on the DirectRunner reads ``tables`` from: the embedded warehouse
    itself, or for BigQuery a snapshot of those tables in ``folder`` (read through the BigQuery API)."""
    if isinstance(warehouse, DuckDBWarehouse):
        return warehouse.path
    snapshot: Path = warehouse.snapshot(tables, folder / "input-snapshot.duckdb")
    return snapshot


def open_bigquery(config: WarehouseConfig) -> BigQueryWarehouse:
    from google.cloud import bigquery  # the production extra: google-cloud-bigquery

    from beam.warehouse.bigquery_warehouse import BigQueryWarehouse

    options: dict[str, Any] = {}
    if config.endpoint:  # a double or an emulator: no Google credentials
        from google.auth.credentials import AnonymousCredentials

        options = {"credentials": AnonymousCredentials(), "client_options": {"api_endpoint": config.endpoint}}
    client = bigquery.Client(project=config.project, location=config.location, **options)
    return BigQueryWarehouse(client, config.location)


__all__ = [
    "WAREHOUSE_FILE",
    "DuckDBWarehouse",
    "LineageRecord",
    "WarehouseError",
    "open_warehouse",
    "pipeline_input",
]
