"""The staging table, then ONE transaction: MERGE staging into target and move the watermarks.

The transaction runs :func:`beam.consolidation.sql.transaction_steps` (the same statements the
BigQuery script wraps): it first checks that this cycle still holds the lock and that no watermark
moved since the cycle read it; any failed check or error rolls everything back.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from beam.consolidation.duck import execute, guard
from beam.consolidation.plan import META_DATASET, ConsolidationPlan
from beam.consolidation.sql import (
    TransactionPlan,
    create_target_sql,
    cycle_counts_sql,
    drop_staging_sql,
    transaction_steps,
)
from beam.warehouse.duckdb_warehouse import quote_ident, quote_table


class MergeRefused(Exception):
    """A check inside the merge transaction failed (the lock was lost, or a watermark moved):
    nothing was merged; the messages are redelivered to the next cycle."""


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    unchanged: int


def load_staging(con: duckdb.DuckDBPyConnection, plan: ConsolidationPlan, parts: str) -> int:
    """Replace the staging table with the pipeline's parquet parts (one transaction); its row count."""
    cols = ", ".join(quote_ident(c) for c in plan.output_columns)
    glob = "'" + parts.replace("'", "''") + "'"
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(META_DATASET)}")
        con.execute(
            f"CREATE OR REPLACE TABLE {quote_table(plan.staging)} AS SELECT {cols} FROM read_parquet({glob})"
        )
        rows = int(con.execute(f"SELECT count(*) FROM {quote_table(plan.staging)}").fetchall()[0][0])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return rows


def merge_staging_into_target(
    con: duckdb.DuckDBPyConnection, plan: ConsolidationPlan, tx: TransactionPlan
) -> MergeCounts:
    """Merge (when rows were staged), move the watermarks and record the cycle, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        if tx.staged:
            for ddl in create_target_sql(plan):
                execute(con, ddl)
        for step in transaction_steps(plan, tx):
            if step.kind == "guard" and not guard(con, step.sql):
                raise MergeRefused(f"cycle {tx.cycle_id} of {plan.source_name} did not merge: {step.reason}")
            if step.kind == "run":
                execute(con, step.sql)
        counts = execute(con, cycle_counts_sql(plan, tx.cycle_id))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if tx.staged:
        execute(con, drop_staging_sql(plan))
    inserted, updated, unchanged = (int(v or 0) for v in counts[0])
    return MergeCounts(inserted=inserted, updated=updated, unchanged=unchanged)
