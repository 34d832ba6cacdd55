"""Transform: the raw table through the TDS pipeline into the TDS table, whole or not at all.

The Beam pipeline (:mod:`beam.pipelines.tds`) writes parquet parts under the run's ``transform/``
folder; the parts then replace the output table in one warehouse transaction, ordered by the
``clusterBy`` columns. A rerun rewrites the same parts and replaces the same table.
"""

from __future__ import annotations

import time

from beam.pipelines import tds
from beam.pipelines.chunks import pipeline_options
from beam.sql import SpecSqlError
from beam.stages.context import StageContext, StageFailed, StageResult
from beam.warehouse import LineageRecord, WarehouseError, open_warehouse

STAGE = "transform"


def run(ctx: StageContext) -> StageResult:
    spec = ctx.run.spec
    if spec.transform is None:
        raise StageFailed("spec.transform is not set: this run has no transform stage", reason="InvalidSpec")
    source, output = spec.load.table, spec.transform.output
    warehouse = open_warehouse(ctx.workdir)
    if not warehouse.exists(source):
        raise StageFailed(
            f"input table {source} does not exist in {warehouse.path}: run the load stage first",
            reason="MissingInput",
        )
    started = time.monotonic()
    try:
        outcome = tds.run_pipeline(
            ctx.run,
            warehouse.path,
            str(ctx.stage_dir(STAGE)),
            pipeline_options(ctx.beam_args),
            started_at=ctx.started_at,
        )
    except SpecSqlError as exc:
        raise StageFailed(str(exc), reason="InvalidSpec") from None
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
        inputs=[source],
        options={"partitionBy": partition, "clusterBy": list(output.cluster_by)},
    )
    try:
        rows = warehouse.replace_table(output.table, outcome["parts"], lineage, order_by=output.cluster_by)
    except WarehouseError as exc:
        raise StageFailed(str(exc), reason="WriteRefused") from None
    details = {
        "duplicates_dropped": outcome["duplicates_dropped"],
        "rows_filtered": outcome["rows_filtered"],
        "seconds": {"pipeline": round(piped - started, 3), "swap": round(time.monotonic() - piped, 3)},
    }
    return StageResult(
        stage=STAGE,
        rows_in=outcome["rows_read"],
        rows_out=rows,
        tables=[output.table],
        artifacts={"parts": outcome["parts"]},
        details=details,
        message=(
            f"{rows} rows written to {output.table} from {outcome['rows_read']} rows of {source}"
            f" ({outcome['duplicates_dropped']} duplicates dropped, {outcome['rows_filtered']} filtered)"
        ),
    )
