"""The warehouse port: where raw, TDS and BDS tables live.

Production speaks BigQuery; the embedded default is one DuckDB file, ``<workdir>/warehouse.duckdb``,
where BigQuery ``dataset.table`` is DuckDB schema ``dataset``, table ``table``.
"""

from __future__ import annotations

from pathlib import Path

from beam.warehouse.duckdb_warehouse import DuckDBWarehouse, LineageRecord, WarehouseError

WAREHOUSE_FILE = "warehouse.duckdb"


def open_warehouse(workdir: Path | str) -> DuckDBWarehouse:
    """The embedded warehouse of a workdir."""
    return DuckDBWarehouse(Path(workdir) / WAREHOUSE_FILE)


__all__ = ["WAREHOUSE_FILE", "DuckDBWarehouse", "LineageRecord", "WarehouseError", "open_warehouse"]
