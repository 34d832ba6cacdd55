"""Incremental consolidation: new source rows, with their joined rows, merged into a target table,
each row once, whatever crashes; a watermark per stream that moves with the merge, in one transaction.

``run_cycle`` runs one cycle; ``python -m beam.consolidation SPEC.yaml --workdir DIR`` is its command
line (the CronJob's and ``dataops consolidate``'s). See :mod:`beam.consolidation.cycle` for the steps.
"""

from __future__ import annotations

from beam.consolidation.cycle import CycleResult, consolidation_of, plan_for, run_cycle
from beam.consolidation.faults import FAULT_EXIT_STATUS, FAULT_POINTS
from beam.consolidation.lock import LockHeld, WarehouseLock
from beam.consolidation.merge import MergeRefused
from beam.consolidation.messages import IdsNotReturned
from beam.consolidation.plan import ConsolidationError, ConsolidationPlan, Position, compile_plan
from beam.consolidation.spec_file import load_ingestion_source

__all__ = [
    "FAULT_EXIT_STATUS",
    "FAULT_POINTS",
    "ConsolidationError",
    "ConsolidationPlan",
    "CycleResult",
    "IdsNotReturned",
    "LockHeld",
    "MergeRefused",
    "Position",
    "WarehouseLock",
    "compile_plan",
    "consolidation_of",
    "load_ingestion_source",
    "plan_for",
    "run_cycle",
]
