"""Aggregate: the TDS table through the BDS pipeline into one KPI table per ``spec.aggregate`` entry.

The Beam pipeline (:mod:`beam.pipelines.bds`) writes parquet parts under the run's ``aggregate/``
folder; each output table is then replaced by its parts in one warehouse transaction, ordered by its
``groupBy`` columns. A rerun rewrites the same parts and replaces the same tables.
"""

from __future__ import annotations

import time

from beam.pipelines import bds
from beam.pipelines.chunks import pipeline_options
from beam.sql import SpecSqlError
from beam.stages.context import (
    EXPRESSION_DATA_ERRORS,
    StageContext,
    StageFailed,
    StageResult,
    expression_failed,
)
from beam.warehouse import LineageRecord, WarehouseError, open_warehouse, pipeline_input

STAGE = "aggregate"


def run(ctx: StageContext) -> StageResult:
    spec = ctx.run.spec
    if spec.transform is None or not spec.aggregate:
        raise StageFailed(
            "spec.aggregate is empty (or spec.transform is not set): nothing to aggregate",
            reason="InvalidSpec",
        )
    source = spec.transform.output.table
    warehouse = open_warehouse(ctx.workdir, choice=spec.warehouse)
    if not warehouse.exists(source):
        raise StageFailed(
            f"input table {source} does not exist in {warehouse.path}: run the transform stage first",
            reason="MissingInput",
        )
    started = time.monotonic()
    try:
        outcome = bds.run_pipeline(
            ctx.run,
            pipeline_input(warehouse, [source], ctx.stage_dir(STAGE)),
            str(ctx.stage_dir(STAGE)),
            pipeline_options(ctx.beam_args),
            started_at=ctx.started_at,
        )
    except SpecSqlError as exc:
        raise StageFailed(str(exc), reason="InvalidSpec") from None
    except EXPRESSION_DATA_ERRORS as exc:
        raise expression_failed(exc, {}) from None
    piped = time.monotonic()
    rows: dict[str, int] = {}
    for aggregate in spec.aggregate:
        table = aggregate.output.table
        lineage = LineageRecord(
            table=table,
            run=ctx.name,
            namespace=ctx.run.metadata.namespace,
            stage=STAGE,
            source_uri=spec.source.uri,
            generation=ctx.run.metadata.generation,
            rows=0,
            written_at=ctx.started_at,
            inputs=[source],
            options={"name": aggregate.name, "groupBy": list(aggregate.group_by)},
        )
        parts = outcome["outputs"][table]
        try:
            rows[table] = warehouse.replace_table(
                table,
                parts["parts"],
                lineage,
                order_by=parts["group_by"],
                partition_by=aggregate.output.partition_by,
                cluster_by=aggregate.output.cluster_by,
            )
        except WarehouseError as exc:
            raise StageFailed(str(exc), reason="WriteRefused", bad_input=not exc.retryable) from None
    details = {
        "rows": rows,
        "seconds": {"pipeline": round(piped - started, 3), "swap": round(time.monotonic() - piped, 3)},
    }
    return StageResult(
        stage=STAGE,
        rows_in=outcome["rows_read"],
        rows_out=sum(rows.values()),
        bytes_billed=warehouse.bytes_billed,
        tables=list(rows),
        artifacts={table: o["parts"] for table, o in outcome["outputs"].items()},
        details=details,
        message=f"{len(rows)} KPI tables from {outcome['rows_read']} rows of {source}: "
        + ", ".join(f"{t} ({n} rows)" for t, n in rows.items()),
    )
