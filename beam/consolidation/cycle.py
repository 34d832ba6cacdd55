"""One consolidation cycle: extract, publish, pull, stage (Beam), merge + move the watermark, ack.

1. Under the source's warehouse lock, read the committed watermarks.
2. Extract the source positions after the watermark, in ``(cursor, id)`` order, at most ``batchSize``;
   for each join with a cursor, its next window of joined rows, and the already-merged operations
   those rows belong to (they are re-merged: a late joined row is never lost).
3. Publish the ids in batches, a message each (the cycle id, the stream and the position of its
   last id as attributes).
4. Pull until every message this cycle published came back; sort every message received against the
   committed watermarks (:mod:`beam.consolidation.messages`).
5. The Beam pipeline stages the latest row per target key of the ids to merge.
6. One transaction: MERGE staging into target, move the watermarks, record the cycle.
7. Only then acknowledge.

A crash anywhere leaves the watermark where the last committed merge put it: the next cycle extracts
the same rows again, and messages of the dead cycle are merged with its own (each id once) or, once
a watermark has passed them, acknowledged without merging. The MERGE only replaces a target row by a
row at least as recent in ``(cursor, id)``, so merging an id again never moves a row backwards.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from beam.bus import DEFAULT_ACK_DEADLINE_SECONDS, MessageBus, OutgoingMessage, open_bus
from beam.consolidation.dataflow import (
    DataflowRun,
    LaunchedJob,
    launch_parameters,
    run_job,
    window_folder,
    window_key,
    write_ids,
)
from beam.consolidation.duck import ensure_meta, fetch_arrow, table_types
from beam.consolidation.faults import FaultHook, faults_from_env
from beam.consolidation.lock import DEFAULT_TTL_SECONDS, DEFAULT_WAIT_SECONDS, LockHeld, WarehouseLock
from beam.consolidation.merge import load_staging, merge_staging_into_target
from beam.consolidation.messages import (
    ids_in,
    own_parts,
    publish,
    pull_messages,
    rejoin_messages,
    sort_deliveries,
    source_messages,
)
from beam.consolidation.plan import (
    STAGING_PARTS,
    ConsolidationPlan,
    Position,
    compile_plan,
    lock_name,
    safe_name,
)
from beam.consolidation.sql import ID_TEXT, CycleRecord, TransactionPlan, rejoin_sql
from beam.consolidation.watermark import Window, next_window, read_watermarks, watermarks_json
from beam.warehouse import DuckDBWarehouse, open_warehouse
from controller.settings import DataflowSettings
from controller.spec import API_VERSION, Consolidation, IngestionSource, IngestionSourceSpec

log = logging.getLogger("dataops.consolidation")

DEFAULT_PULL_TIMEOUT_SECONDS = 120.0

Source = IngestionSource | IngestionSourceSpec | Consolidation


@dataclass
class CycleResult:
    """What one cycle did; ``to_json()`` is the CLI's JSON summary."""

    cycle_id: str
    source: str
    target: str
    status: str = "Idle"  # Merged: a transaction committed | Idle: nothing to do | Skipped: locked
    message: str = ""
    extracted: int = 0
    rejoined: int = 0
    published: int = 0  # ids
    messages_published: int = 0
    received: int = 0  # messages
    duplicates: int = 0
    already_merged: int = 0
    deferred: int = 0
    staged: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    acked: int = 0
    backlog: bool = False
    watermark_before: dict[str, Any] = field(default_factory=dict)
    watermark_after: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    duration_seconds: float = 0.0
    dataflow_job: dict[str, str] | None = None  # runner: dataflow: the job's name, id and state

    @property
    def merged(self) -> int:
        return self.inserted + self.updated

    def to_json(self) -> dict[str, Any]:
        return {
            "cycleId": self.cycle_id,
            "source": self.source,
            "target": self.target,
            "status": self.status,
            "message": self.message,
            "rows": {
                "extracted": self.extracted,
                "rejoined": self.rejoined,
                "published": self.published,
                "staged": self.staged,
                "merged": {"inserted": self.inserted, "updated": self.updated, "unchanged": self.unchanged},
            },
            "messages": {
                "published": self.messages_published,
                "received": self.received,
                "duplicates": self.duplicates,
                "alreadyMerged": self.already_merged,
                "deferred": self.deferred,
                "acked": self.acked,
            },
            "backlog": self.backlog,
            "watermark": {"before": self.watermark_before, "after": self.watermark_after},
            "startedAt": self.started_at,
            "durationSeconds": self.duration_seconds,
        } | ({"dataflowJob": self.dataflow_job} if self.dataflow_job else {})


def consolidation_of(source: Source) -> tuple[str, Consolidation]:
    """``(name, spec)``: an IngestionSource is ``namespace/name``; a bare spec is named by its target."""
    if isinstance(source, IngestionSource):
        if source.spec.consolidation is None:
            raise ValueError(f"IngestionSource {source.metadata.name} has no spec.consolidation")
        return f"{source.metadata.namespace}/{source.metadata.name}", source.spec.consolidation
    spec = source.consolidation if isinstance(source, IngestionSourceSpec) else source
    if spec is None:
        raise ValueError("the IngestionSource spec has no consolidation")
    return f"target/{spec.target.table}", spec


def plan_for(source: Source, warehouse: DuckDBWarehouse) -> ConsolidationPlan:
    """The checked plan of ``source`` against the warehouse's tables (raises ConsolidationError)."""
    with warehouse.connect() as con:
        return _plan(con, source)


def _plan(con: duckdb.DuckDBPyConnection, source: Source) -> ConsolidationPlan:
    name, spec = consolidation_of(source)
    ensure_meta(con)
    types = table_types(con, [spec.source.table, *(j.table for j in spec.joins), spec.target.table])
    return compile_plan(spec, name, types)


def new_cycle_id(now: datetime) -> str:
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%S}z-{secrets.token_hex(4)}"


def _clock(now: datetime) -> Callable[[], datetime]:
    started = time.monotonic()
    return lambda: now + timedelta(seconds=time.monotonic() - started)


@dataclass(frozen=True)
class _Extract:
    before: dict[str, Position | None]
    source: Window
    joins: list[Window]
    messages: list[OutgoingMessage]
    rejoined: int

    @property
    def upto(self) -> dict[str, Position | None]:
        return {w.stream.name: w.upto for w in [self.source, *self.joins]}

    @property
    def moves(self) -> dict[str, Position]:
        return {w.stream.name: w.upto for w in [self.source, *self.joins] if w.size and w.upto is not None}


def run_cycle(
    source: Source,
    workdir: Path,
    bus: MessageBus | None = None,
    now: datetime | None = None,
    *,
    faults: FaultHook | None = None,
    lock_wait_seconds: float = DEFAULT_WAIT_SECONDS,
    lock_ttl_seconds: float = DEFAULT_TTL_SECONDS,
    ack_deadline_seconds: int = DEFAULT_ACK_DEADLINE_SECONDS,
    pull_timeout_seconds: float = DEFAULT_PULL_TIMEOUT_SECONDS,
    beam_args: Sequence[str] = (),
    buckets: int | None = None,
    dataflow: DataflowRun | None = None,
    job_timeout_seconds: float | None = None,
) -> CycleResult:
    """Run one cycle of ``source`` on the warehouse of ``workdir``; raises ConsolidationError on bad
    input (missing table, unknown column), returns status Skipped when another cycle holds the lock.

    ``faults`` is called at each fault point (default: ``$DATAOPS_FAULTPOINT``). With
    ``spec.consolidation.runner: dataflow`` the pipeline is a Dataflow job, reached with ``dataflow``
    (the pod's settings) and cancelled after ``job_timeout_seconds`` (default: the spec's); a job that
    does not succeed raises :class:`~beam.consolidation.dataflow.DataflowCycleError`."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    name, spec = consolidation_of(source)
    cycle = _Cycle(
        source=source,
        workdir=Path(workdir),
        warehouse=open_warehouse(workdir),
        bus=bus if bus is not None else open_bus(Path(workdir)),  # closed below when opened here
        fault=faults if faults is not None else faults_from_env(),
        clock=_clock(now),
        now=now,
        result=CycleResult(
            cycle_id=new_cycle_id(now), source=name, target=spec.target.table, started_at=now.isoformat()
        ),
        pull_timeout=pull_timeout_seconds,
        ack_deadline=ack_deadline_seconds,
        beam_args=list(beam_args),
        buckets=buckets,
        dataflow=dataflow or DataflowRun(DataflowSettings()),
        job_timeout=float(job_timeout_seconds or spec.job_timeout_seconds),
    )
    cycle.lock = WarehouseLock(
        cycle.warehouse,
        lock_name(name),
        cycle.result.cycle_id,
        cycle.clock,
        ttl_seconds=lock_ttl_seconds,
        wait_seconds=lock_wait_seconds,
    )
    try:
        return cycle.run()
    finally:
        if bus is None:
            cycle.bus.close()


@dataclass
class _Cycle:
    source: Source
    workdir: Path
    warehouse: DuckDBWarehouse
    bus: MessageBus
    fault: FaultHook
    clock: Callable[[], datetime]
    now: datetime
    result: CycleResult
    pull_timeout: float
    ack_deadline: int
    beam_args: list[str]
    buckets: int | None
    dataflow: DataflowRun
    job_timeout: float
    lock: WarehouseLock = field(init=False)
    started: float = field(default_factory=time.monotonic)

    def run(self) -> CycleResult:
        r = self.result
        try:
            plan, found = self.prepare()
        except LockHeld as exc:
            r.status, r.message = "Skipped", str(exc)
            return self.done()
        released = False
        try:
            self.bus.ensure(plan.topic, plan.subscription, self.ack_deadline)
            r.watermark_before = watermarks_json(found.before)
            r.extracted, r.rejoined = found.source.size, found.rejoined
            r.backlog = found.source.full or any(w.full for w in found.joins)
            self.fault("after_extract")

            r.messages_published = publish(self.bus, plan.topic, found.messages)
            r.published = ids_in(found.messages)
            self.fault("after_publish")

            received = pull_messages(
                self.bus, plan.subscription, r.cycle_id, own_parts(found.messages), self.pull_timeout
            )
            try:
                sorted_ = sort_deliveries(plan, received, found.before, found.upto)
                r.received, r.duplicates = len(received), sorted_.duplicates
                r.already_merged, r.deferred = len(sorted_.merged), len(sorted_.later) + len(sorted_.foreign)
                parts = self.stage(plan, found, sorted_.ids)
                with self.warehouse.connect() as con:
                    self.lock.refresh(con)
                    if parts is not None:
                        r.staged = load_staging(con, plan, parts)
                    self.fault("after_stage")
                    self.commit(con, plan, found, staged=parts is not None)
                    self.fault("after_merge")
                    acks = sorted_.ack_ids()
                    self.bus.ack(plan.subscription, acks)
                    self.bus.nack(plan.subscription, sorted_.nack_ids())
                    r.acked = len(acks)
                    self.lock.release(con)
                    released = True
            except Exception:
                self.bus.nack(plan.subscription, [m.ack_id for m in received])
                raise
        finally:
            if not released:
                self.lock.release()
        r.message = _message(plan, r)
        return self.done()

    def done(self) -> CycleResult:
        self.result.duration_seconds = round(time.monotonic() - self.started, 3)
        log.info(
            "consolidation %s cycle %s: %s", self.result.source, self.result.cycle_id, self.result.message
        )
        return self.result

    def prepare(self) -> tuple[ConsolidationPlan, _Extract]:
        """Take the lock (on the same connection as the extract when it is free at once), check the
        spec against the tables, extract."""
        with self.warehouse.connect() as con:
            if self.lock.try_acquire(con) is None:
                return self._checked_extract(con)
        self.lock.acquire()
        with self.warehouse.connect() as con:
            return self._checked_extract(con)

    def _checked_extract(self, con: duckdb.DuckDBPyConnection) -> tuple[ConsolidationPlan, _Extract]:
        try:
            plan = _plan(con, self.source)
            return plan, extract(con, plan, self.result.cycle_id)
        except BaseException:
            self.lock.release(con)
            raise

    def stage(self, plan: ConsolidationPlan, found: _Extract, ids: list[str]) -> str | None:
        """The Beam pipeline over ``ids``; the glob of its parquet parts (``None``: nothing to stage)."""
        if not ids:
            return None
        if consolidation_of(self.source)[1].runner == "dataflow":
            return self.stage_on_dataflow(plan, found, ids)
        # Beam takes seconds to import: a cycle with nothing to stage (or a bad spec) answers without it.
        from beam.consolidation.pipeline import run_pipeline
        from beam.pipelines.chunks import DEFAULT_BUCKETS, pipeline_options

        staging = str(self.workdir / "consolidation" / safe_name(plan.source_name) / "staging")
        upto = found.upto[plan.source.name]
        options = pipeline_options(self.beam_args)
        buckets = self.buckets or DEFAULT_BUCKETS
        staged = run_pipeline(plan, self.warehouse.path, ids, upto, staging, options, buckets=buckets)
        return str(staged["parts"])

    def stage_on_dataflow(self, plan: ConsolidationPlan, found: _Extract, ids: list[str]) -> str:
        """The pipeline as the window's Dataflow job (launched, or re-attached when a retried cycle of
        the same window finds it running); the glob of the parts it wrote."""
        before, upto = watermarks_json(found.before), watermarks_json(found.upto)
        window = window_key(before, upto, ids)
        root = self.workdir / "consolidation" / safe_name(plan.source_name) / "dataflow"
        folder = window_folder(root, window)
        parameters = launch_parameters(
            source_document(self.source),
            self.workdir,
            write_ids(folder, ids),
            folder,
            found.upto[plan.source.name],
            self.buckets,
        )

        def launched(job: LaunchedJob) -> None:
            self.result.dataflow_job = job.to_json()
            self.fault("after_launch")

        def heartbeat() -> None:  # a missed refresh is not fatal: the lock lasts lock_ttl_seconds
            try:
                with self.warehouse.connect() as con:
                    self.lock.refresh(con)
            except duckdb.Error as exc:
                log.warning("consolidation %s: the lock was not refreshed: %s", plan.source_name, exc)

        job = run_job(
            self.dataflow,
            plan.source_name,
            self.result.cycle_id,
            window,
            parameters,
            timeout_seconds=self.job_timeout,
            on_launch=launched,
            heartbeat=heartbeat,
        )
        self.result.dataflow_job = job.to_json()
        return str(folder / STAGING_PARTS / "part-*.parquet")

    def commit(
        self, con: duckdb.DuckDBPyConnection, plan: ConsolidationPlan, found: _Extract, staged: bool
    ) -> None:
        """MERGE, watermarks and the cycle's record in one transaction (when there is anything to do)."""
        r = self.result
        after = dict(found.before) | found.moves
        r.watermark_after = watermarks_json(after)
        if not staged and not found.moves:
            return
        record = CycleRecord(
            cycle_id=r.cycle_id,
            started_at=self.now,
            committed_at=self.clock(),
            extracted=r.extracted,
            rejoined=r.rejoined,
            staged=r.staged,
            watermark_before=found.before,
            watermark_after=after,
        )
        tx = TransactionPlan(
            cycle_id=r.cycle_id,
            owner=self.lock.owner,
            before=found.before,
            after=found.moves,
            record=record,
            staged=staged,
            now=self.clock(),
        )
        counts = merge_staging_into_target(con, plan, tx)
        r.status = "Merged"
        r.inserted, r.updated, r.unchanged = counts.inserted, counts.updated, counts.unchanged


def source_document(source: Source) -> str:
    """The IngestionSource as JSON, as a Dataflow job of the cycle reads it back."""
    if isinstance(source, IngestionSource):
        return json.dumps(source.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)
    _, spec = consolidation_of(source)
    doc = {
        "apiVersion": API_VERSION,
        "kind": "IngestionSource",
        "metadata": {"name": "consolidation"},
        "spec": {"consolidation": spec.model_dump(mode="json", by_alias=True, exclude_none=True)},
    }
    return json.dumps(doc, sort_keys=True)


def extract(con: duckdb.DuckDBPyConnection, plan: ConsolidationPlan, cycle_id: str) -> _Extract:
    """Watermarks, windows and the operations to re-merge, read in one transaction (one snapshot)."""
    con.execute("BEGIN TRANSACTION")
    try:
        before = read_watermarks(con, plan)
        source = next_window(con, plan.source, before[plan.source.name], plan.batch_size)
        messages = source_messages(plan, cycle_id, source.positions)
        windows = []
        rejoined: set[str] = set()
        merged = before[plan.source.name]
        for join in plan.joins:
            if join.stream is None:
                continue
            window = next_window(con, join.stream, before[join.stream.name], plan.batch_size)
            windows.append(window)
            if window.size and merged is not None and window.upto is not None:
                rows = fetch_arrow(con, rejoin_sql(plan, join, window.since, window.upto, merged))
                found = rejoin_messages(
                    plan, cycle_id, join.stream.name, rows, len(join.stream.key), len(messages)
                )
                messages += found
                rejoined |= set(rows.column(ID_TEXT).to_pylist())
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return _Extract(before=before, source=source, joins=windows, messages=messages, rejoined=len(rejoined))


def _message(plan: ConsolidationPlan, r: CycleResult) -> str:
    if r.status == "Idle":
        return f"nothing new in {plan.source.table} after its watermark" + (
            f"; {r.already_merged} redelivered message(s) were already merged" if r.already_merged else ""
        )
    text = (
        f"{r.extracted} new row(s) of {plan.source.table}, {r.rejoined} re-merged for late joined rows:"
        f" {r.inserted} inserted, {r.updated} updated into {plan.target}"
    )
    if r.backlog:
        text += "; more rows wait (batchSize reached): the next cycle continues"
    return text
