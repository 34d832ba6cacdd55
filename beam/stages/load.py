"""Load: the validated rows into the raw table, whole or not at all.

``writeMode: replace`` swaps the table in one transaction; ``append`` adds the run's rows once per
(run, generation), so a re-run after a crash never duplicates them.
"""

from __future__ import annotations

from beam.stages.context import StageContext, StageFailed, StageResult
from beam.stages.validate import VALIDATED
from beam.warehouse import LineageRecord, WarehouseError, open_warehouse


def run(ctx: StageContext) -> StageResult:
    spec = ctx.run.spec
    validated = ctx.run_dir / "validate" / VALIDATED
    if not validated.exists():
        raise StageFailed(
            f"{validated} is missing: the validate stage has not succeeded for this run",
            bad_input=False,
            reason="MissingInput",
        )
    table = spec.load.table
    lineage = LineageRecord(
        table=table,
        run=ctx.name,
        namespace=ctx.run.metadata.namespace,
        stage="load",
        source_uri=spec.source.uri,
        generation=ctx.run.metadata.generation,
        rows=0,
        written_at=ctx.started_at,
        options={"writeMode": spec.load.write_mode},
    )
    layout = {
        "partition_by": spec.load.partition_by,
        "cluster_by": list(spec.load.cluster_by),
        "declared": {c.name: c.type.value for c in spec.source.columns},
    }
    try:
        warehouse = open_warehouse(ctx.workdir, choice=spec.warehouse)
        if spec.load.write_mode == "replace":
            loaded = warehouse.replace_table(table, str(validated), lineage, **layout)
        else:
            loaded = warehouse.append_table(table, str(validated), lineage, **layout)
        total = warehouse.row_count(table)
    except WarehouseError as exc:
        raise StageFailed(str(exc), reason="LoadRefused", bad_input=not exc.retryable) from None
    return StageResult(
        stage="load",
        rows_in=loaded,
        rows_out=loaded,
        bytes_billed=warehouse.bytes_billed,
        tables=[table],
        message=f"{loaded} rows loaded into {table} ({spec.load.write_mode}; {total} rows in table)",
    )
