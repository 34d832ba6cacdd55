"""A small consolidation world for tests: operations and transactions tables, their spec, a reference.

``World`` owns a workdir: it creates ``ops.operations`` (the source) and ``ops.transactions`` (joined on
``tx_id``, cursor ``changed_at``), inserts and updates rows the way the consolidation expects rows to
arrive (a new row sorts after every row before it in ``(cursor, id)``; an update moves its row's
cursor past every other), and computes in plain Python what ``cons.operations`` must hold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from beam.bus import EmbeddedQueue, MessageBus, OutgoingMessage, ReceivedMessage
from beam.consolidation import CycleResult, run_cycle
from beam.consolidation.faults import FaultHook
from beam.consolidation.plan import ConsolidationPlan, Position, compile_plan
from beam.consolidation.spec_file import parse_ingestion_source
from beam.consolidation.sql import CycleRecord, TransactionPlan
from beam.warehouse import DuckDBWarehouse, open_warehouse
from controller.spec import Consolidation, IngestionSource

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 8, 0, 0)
SOURCE_COLUMNS = ("op_id", "tx_id", "amount", "status", "updated_at")
JOIN_COLUMNS = ("fee", "channel")
TARGET = "cons.operations"
ACK_DEADLINE = 60


class SimulatedCrash(BaseException):
    """Raised at a fault point: unwinds like a killed process (no nack, nothing caught)."""


def crash_at(point: str) -> FaultHook:
    def hook(reached: str) -> None:
        if reached == point:
            raise SimulatedCrash(point)

    return hook


class FakeClock:
    """Seconds since the epoch for the embedded queue; ``advance`` lets ack deadlines pass at once."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def spec_doc(
    name: str = "ops",
    batch_size: int = 100,
    join_type: str = "left",
    join_cursor: bool = True,
    topic: str = "ops-ids",
    subscription: str = "ops-ids-sub",
) -> dict[str, Any]:
    join: dict[str, Any] = {
        "table": "ops.transactions",
        "on": ["tx_id"],
        "type": join_type,
        "columns": list(JOIN_COLUMNS),
    }
    if join_cursor:
        join["cursor"] = "changed_at"
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": name, "namespace": "tests"},
        "spec": {
            "consolidation": {
                "schedule": "*/5 * * * *",
                "source": {"table": "ops.operations", "id": "op_id", "cursor": "updated_at"},
                "joins": [join],
                "target": {"table": TARGET, "key": ["op_id"]},
                "topic": topic,
                "subscription": subscription,
                "batchSize": batch_size,
            }
        },
    }


def source_of(doc: dict[str, Any]) -> IngestionSource:
    return parse_ingestion_source(yaml.safe_dump(doc), "test")


@dataclass
class World:
    workdir: Path
    doc: dict[str, Any]
    clock: FakeClock = field(default_factory=FakeClock)
    next_op: int = 1
    next_tx: int = 1
    op_cursor: datetime = T0
    tx_cursor: datetime = T0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bus = EmbeddedQueue(self.workdir, clock=self.clock)
        with self.warehouse.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS ops")
            con.execute(
                "CREATE TABLE IF NOT EXISTS ops.operations (op_id BIGINT, tx_id VARCHAR, amount BIGINT,"
                " status VARCHAR, updated_at TIMESTAMP)"
            )
            con.execute(
                "CREATE TABLE IF NOT EXISTS ops.transactions (tx_id VARCHAR, fee BIGINT, channel VARCHAR,"
                " changed_at TIMESTAMP)"
            )

    @property
    def warehouse(self) -> DuckDBWarehouse:
        return open_warehouse(self.workdir)

    @property
    def source(self) -> IngestionSource:
        return source_of(self.doc)

    def spec_file(self) -> Path:
        path = self.workdir.parent / f"{self.doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(self.doc, sort_keys=False), encoding="utf-8")
        return path

    # ---- arrivals ----------------------------------------------------------------------------------

    def new_tx_id(self) -> str:
        tx = f"T{self.next_tx:05d}"
        self.next_tx += 1
        return tx

    def insert_operations(
        self, count: int, tie: bool = False, tx_ids: Sequence[str | None] = ()
    ) -> list[int]:
        """``count`` new operations at one cursor: the latest one (a tie) or a second later."""
        if not tie:
            self.op_cursor += timedelta(seconds=1)
        ids = list(range(self.next_op, self.next_op + count))
        self.next_op += count
        txs = list(tx_ids) + [None] * (count - len(tx_ids))
        rows = [(i, tx, i * 10, "new", self.op_cursor) for i, tx in zip(ids, txs, strict=True)]
        with self.warehouse.connect() as con:
            con.executemany("INSERT INTO ops.operations VALUES (?, ?, ?, ?, ?)", rows)
        return ids

    def update_operation(self, op_id: int, status: str) -> None:
        """In place: new values, and a cursor past every other row's."""
        self.op_cursor += timedelta(seconds=1)
        with self.warehouse.connect() as con:
            con.execute(
                "UPDATE ops.operations SET status = ?, amount = amount + 1, updated_at = ? WHERE op_id = ?",
                [status, self.op_cursor, op_id],
            )

    def insert_transactions(self, tx_ids: Sequence[str], tie: bool = False) -> None:
        """New transaction rows; a tie on the cursor only for ids above every existing one."""
        if not tie:
            self.tx_cursor += timedelta(seconds=1)
        rows = [(tx, int(tx[1:]) * 3, f"ch{int(tx[1:]) % 3}", self.tx_cursor) for tx in tx_ids]
        with self.warehouse.connect() as con:
            con.executemany("INSERT INTO ops.transactions VALUES (?, ?, ?, ?)", rows)

    def update_transaction(self, tx_id: str) -> None:
        self.tx_cursor += timedelta(seconds=1)
        with self.warehouse.connect() as con:
            con.execute(
                "UPDATE ops.transactions SET fee = fee + 1, channel = 'changed', changed_at = ? WHERE tx_id = ?",
                [self.tx_cursor, tx_id],
            )

    def missing_tx_ids(self) -> list[str]:
        with self.warehouse.connect(read_only=True) as con:
            rows = con.execute(
                "SELECT DISTINCT o.tx_id FROM ops.operations o WHERE o.tx_id IS NOT NULL AND o.tx_id NOT IN"
                " (SELECT tx_id FROM ops.transactions) ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def tx_ids(self) -> list[str]:
        with self.warehouse.connect(read_only=True) as con:
            return [r[0] for r in con.execute("SELECT tx_id FROM ops.transactions ORDER BY 1").fetchall()]

    # ---- cycles ------------------------------------------------------------------------------------

    def cycle(self, bus: MessageBus | None = None, **kwargs: Any) -> CycleResult:
        return run_cycle(self.source, self.workdir, bus or self.bus, **kwargs)

    def drain(self, max_cycles: int = 30, **kwargs: Any) -> list[CycleResult]:
        """Cycles (ack deadlines passed first) until one has nothing to do and no backlog."""
        results = []
        for _ in range(max_cycles):
            self.clock.advance(ACK_DEADLINE + 1)
            result = self.cycle(**kwargs)
            results.append(result)
            if result.status == "Idle" and not result.backlog:
                return results
        raise AssertionError(f"not drained after {max_cycles} cycles: {[r.to_json() for r in results[-3:]]}")

    # ---- what the target must be -------------------------------------------------------------------

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.warehouse.connect(read_only=True) as con:
            return con.execute(sql).fetchall()

    def target_rows(self) -> list[tuple[Any, ...]]:
        found = self.query(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'cons' AND table_name = 'operations'"
        )
        if not found[0][0]:
            return []
        cols = ", ".join((*SOURCE_COLUMNS, *JOIN_COLUMNS))
        return sorted(self.query(f"SELECT {cols} FROM {TARGET}"))

    def reference(self) -> list[tuple[Any, ...]]:
        """Every operation joined with its transaction (inner: only those that have one), in Python."""
        ops = self.query(f"SELECT {', '.join(SOURCE_COLUMNS)} FROM ops.operations")
        txs = {r[0]: r[1:] for r in self.query("SELECT tx_id, fee, channel FROM ops.transactions")}
        inner = self.doc["spec"]["consolidation"]["joins"][0]["type"] == "inner"
        out = []
        for op in ops:
            joined = txs.get(op[1]) if op[1] is not None else None
            if joined is None and inner:
                continue
            out.append((*op, *(joined or (None, None))))
        return sorted(out)

    def inserted_total(self) -> int:
        return int(self.query("SELECT coalesce(sum(inserted), 0) FROM _dataops.consolidation_cycles")[0][0])


class DuplicatingBus:
    """Publishes every message twice (two message ids, one payload), as a retrying publisher may."""

    def __init__(self, inner: MessageBus) -> None:
        self.inner = inner

    def ensure(self, topic: str, subscription: str, ack_deadline_seconds: int) -> None:
        self.inner.ensure(topic, subscription, ack_deadline_seconds)

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        return self.inner.publish(topic, [*messages, *messages])

    def pull(self, subscription: str, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        return self.inner.pull(subscription, max_messages, timeout)

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        self.inner.ack(subscription, ack_ids)

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        self.inner.nack(subscription, ack_ids)

    def close(self) -> None:
        self.inner.close()


def run_module(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m beam.consolidation ARGS`` in a child process, on the embedded queue."""
    child_env = dict(os.environ, PYTHONPATH=str(ROOT), DATAOPS_BUS="embedded")
    child_env.pop("DATAOPS_FAULTPOINT", None)
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "beam.consolidation", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=child_env,
        timeout=timeout,
        check=False,
    )


# ---- plans without a warehouse (unit tests of the SQL) ---------------------------------------------

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OPS = {"op_id": "INT64", "tx_id": "STRING", "amount": "INT64", "status": "STRING", "updated_at": "DATETIME"}
TXS = {"tx_id": "STRING", "fee": "INT64", "channel": "STRING", "changed_at": "DATETIME"}


def consolidation(**changes: Any) -> Consolidation:
    doc: dict[str, Any] = {
        "schedule": "*/20 * * * *",
        "source": {"table": "ops.operations", "id": "op_id", "cursor": "updated_at"},
        "joins": [
            {
                "table": "ops.transactions",
                "on": ["tx_id"],
                "type": "left",
                "columns": ["fee", "channel"],
                "cursor": "changed_at",
            }
        ],
        "target": {"table": "cons.operations", "key": ["op_id"]},
        "batchSize": 100,
    }
    doc.update(changes)
    return Consolidation.model_validate(doc)


def plan(spec: Consolidation | None = None, **tables: dict[str, str] | None) -> ConsolidationPlan:
    found: dict[str, dict[str, str] | None] = {
        "ops.operations": OPS,
        "ops.transactions": TXS,
        "cons.operations": None,
    }
    found.update({k.replace("__", "."): v for k, v in tables.items()})
    return compile_plan(spec or consolidation(), "tests/ops", found)


def transaction(p: ConsolidationPlan, staged: bool = True) -> TransactionPlan:
    before = {"source:ops.operations": Position("2026-03-02 08:00:00", ("7",)), "join:ops.transactions": None}
    moves = {
        "source:ops.operations": Position("2026-03-02 08:10:00", ("12",)),
        "join:ops.transactions": Position("2026-03-02 08:11:00", ("T9",)),
    }
    record = CycleRecord("c-1", NOW, NOW, 5, 1, 6, before, dict(before) | moves)
    return TransactionPlan("c-1", "c-1", before, moves, record, staged, NOW)
