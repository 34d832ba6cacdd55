"""A PipelineRun with transform and aggregate stages, and a workdir whose raw table is already loaded.

Shared by the Dataflow client tests and the controller tests with ``runner: dataflow``: the Dataflow
stages read the raw table a load stage would have written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from beam.warehouse import LineageRecord, open_warehouse

RAW = "shop_raw.items"
TDS = "shop_tds.items"
BDS = "shop_bds.by_kind"
STARTED_AT = "2026-02-03T04:05:06+00:00"
RAW_ROWS = [
    {"item_id": "a", "kind": " VM", "cost": 10.0},
    {"item_id": "b", "kind": "disk", "cost": 5.5},
    {"item_id": "c", "kind": "vm ", "cost": 2.0},
    {"item_id": "a", "kind": "vm", "cost": 12.0},
]
RAW_SCHEMA = pa.schema([("item_id", pa.string()), ("kind", pa.string()), ("cost", pa.float64())])

SPEC: dict[str, Any] = {
    "runner": "dataflow",
    "source": {
        "uri": "/data/items.csv",
        "columns": [
            {"name": "item_id", "type": "STRING"},
            {"name": "kind", "type": "STRING"},
            {"name": "cost", "type": "FLOAT64"},
        ],
    },
    "load": {"table": RAW},
    "transform": {
        "standardize": [{"column": "kind", "trim": True, "case": "lower"}],
        "dedupe": {"key": ["item_id"], "orderBy": "cost"},
        "output": {"table": TDS},
    },
    "aggregate": [
        {
            "output": {"table": BDS},
            "groupBy": ["kind"],
            "metrics": [
                {"name": "items", "agg": "count"},
                {"name": "total_cost", "agg": "sum", "column": "cost"},
            ],
        }
    ],
    "retries": {"limit": 0, "backoffSeconds": 0},
}


def seed_raw_table(workdir: Path) -> None:
    """The raw table as the load stage writes it."""
    lineage = LineageRecord(
        table=RAW,
        run="seed",
        namespace="default",
        stage="load",
        source_uri="test",
        generation=1,
        rows=0,
        written_at=STARTED_AT,
    )
    open_warehouse(workdir).replace_table(RAW, pa.Table.from_pylist(RAW_ROWS, schema=RAW_SCHEMA), lineage)


def run_document(name: str, spec: dict[str, Any] | None = None, namespace: str = "default") -> str:
    """The run as the controller hands it to a stage (``controller.manifests.run_document``)."""
    body = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "namespace": namespace, "generation": 1},
        "spec": SPEC if spec is None else spec,
    }
    return json.dumps(body, sort_keys=True)


def table_rows(workdir: Path, table: str, order_by: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = (
        open_warehouse(workdir).query_arrow(f"SELECT * FROM {table} ORDER BY {order_by}").to_pylist()
    )
    return rows
