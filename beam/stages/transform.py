"""Transform: the raw table through the TDS pipeline into the TDS table, whole or not at all.

The Beam pipeline (:mod:`beam.pipelines.tds`) writes parquet parts under the run's ``transform/``
folder; the parts then replace the output table in one warehouse transaction, ordered by the
``clusterBy`` columns. A rerun rewrites the same parts and replaces the same table.

A spec that can set rows aside (a lookup with ``onMissing: reject``, or ``keepFiltered: true``) also
replaces ``<output table>_rejects`` with this run's rejected and filtered rows, each with its
``reason`` (see :mod:`beam.pipelines.tds`). The lineage of both lists the raw table and every
reference table or file the lookups read.

Tuning settings may come among the stage's extra arguments (``--buckets``, ``--chunk-rows``,
``--broadcast-limit-rows``); the rest are Beam options.
"""

from __future__ import annotations

import time
from dataclasses import replace

from beam.pipelines import tds
from beam.pipelines.chunks import pipeline_options
from beam.pipelines.lookups import ReferenceDataError
from beam.sql import SpecSqlError
from beam.stages.context import (
    EXPRESSION_DATA_ERRORS,
    StageContext,
    StageFailed,
    StageResult,
    expression_failed,
)
from beam.warehouse import LineageRecord, WarehouseError, open_warehouse, pipeline_input

STAGE = "transform"


def run(ctx: StageContext) -> StageResult:
    spec = ctx.run.spec
    if spec.transform is None:
        raise StageFailed("spec.transform is not set: this run has no transform stage", reason="InvalidSpec")
    source, output = spec.load.table, spec.transform.output
    warehouse = open_warehouse(ctx.workdir, choice=spec.warehouse)
    if not warehouse.exists(source):
        raise StageFailed(
            f"input table {source} does not exist in {warehouse.path}: run the load stage first",
            reason="MissingInput",
        )
    settings, beam_args = tds.parse_settings(ctx.beam_args)
    started = time.monotonic()
    references = [lookup.table for lookup in spec.transform.lookups if lookup.table]
    try:
        outcome = tds.run_pipeline(
            ctx.run,
            pipeline_input(warehouse, [source, *references], ctx.stage_dir(STAGE)),
            str(ctx.stage_dir(STAGE)),
            pipeline_options(beam_args),
            buckets=settings.buckets,
            chunk_rows=settings.chunk_rows,
            broadcast_limit_rows=settings.broadcast_limit_rows,
            started_at=ctx.started_at,
        )
    except SpecSqlError as exc:
        raise StageFailed(str(exc), reason="InvalidSpec") from None
    except ReferenceDataError as exc:
        raise StageFailed(str(exc), reason=exc.reason) from None
    except EXPRESSION_DATA_ERRORS as exc:
        named = {
            f'"{d.name}"': f"spec.transform.derive[{i}].expr" for i, d in enumerate(spec.transform.derive)
        }
        raise expression_failed(exc, named) from None
    piped = time.monotonic()
    partition = output.partition_by.model_dump(by_alias=True) if output.partition_by else None
    lineage = LineageRecord(
        table=output.table,
        run=ctx.name,
        namespace=ctx.run.metadata.namespace,
        stage=STAGE,
        source_uri=spec.source.uri,
        generation=ctx.run.metadata.generation,
        rows=0,
        written_at=ctx.started_at,
        inputs=[source, *outcome["references"]],
        options={"partitionBy": partition, "clusterBy": list(output.cluster_by)},
    )
    rejects = outcome["rejects_table"]
    try:
        rows = warehouse.replace_table(
            output.table,
            outcome["parts"],
            lineage,
            order_by=output.cluster_by,
            partition_by=output.partition_by,
            cluster_by=output.cluster_by,
        )
        if rejects is not None:
            rejected_lineage = replace(lineage, table=rejects, options={})
            warehouse.replace_table(rejects, outcome["rejects_parts"], rejected_lineage, order_by=["raw_row"])
    except WarehouseError as exc:
        raise StageFailed(str(exc), reason="WriteRefused", bad_input=not exc.retryable) from None
    set_aside = outcome["rejects_written"] if rejects is not None else 0
    details = {
        "duplicates_dropped": outcome["duplicates_dropped"],
        "rows_filtered": outcome["rows_filtered"],
        "rows_rejected": outcome["rows_rejected"],
        "rejects_table": rejects,
        "rejects_written": set_aside,
        "lookups": outcome["lookups"],
        "seconds": {"pipeline": round(piped - started, 3), "swap": round(time.monotonic() - piped, 3)},
    }
    kept = f", {set_aside} set aside in {rejects}" if rejects is not None else ""
    return StageResult(
        stage=STAGE,
        rows_in=outcome["rows_read"],
        rows_out=rows,
        rows_rejected=set_aside,
        bytes_billed=warehouse.bytes_billed,
        tables=[output.table, *([rejects] if rejects is not None else [])],
        artifacts={"parts": outcome["parts"]},
        details=details,
        message=(
            f"{rows} rows written to {output.table} from {outcome['rows_read']} rows of {source}"
            f" ({outcome['duplicates_dropped']} duplicates dropped, {outcome['rows_filtered']} filtered,"
            f" {outcome['rows_rejected']} rejected by lookups{kept})"
        ),
    )
