"""The embedded queue: Pub/Sub's at-least-once contract in one SQLite file of the workdir.

``<workdir>/bus/queue.sqlite3`` holds topics, subscriptions and every message not yet acknowledged.
Publishing stores one copy per subscription of the topic (as Pub/Sub fans out); pulling leases
messages until ``now + ack deadline`` under a fresh ack id; a message whose lease runs out is
delivered again; acknowledging deletes it. Every operation is one SQLite transaction, so processes
may share the file, and a process killed at any point leaves it consistent.

The clock is injectable (seconds since the epoch) so tests can let a deadline pass without sleeping.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from beam.bus.port import BusError, OutgoingMessage, ReceivedMessage

QUEUE_FILE = Path("bus") / "queue.sqlite3"
BUSY_TIMEOUT_SECONDS = 60.0
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS subscriptions (name TEXT PRIMARY KEY, topic TEXT NOT NULL,"
    " ack_deadline REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " subscription TEXT NOT NULL, message_id TEXT NOT NULL, data BLOB NOT NULL, attributes TEXT NOT NULL,"
    " published_at REAL NOT NULL, visible_at REAL NOT NULL, ack_id TEXT, delivery_attempt INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS messages_deliverable ON messages (subscription, visible_at, seq)",
    "CREATE INDEX IF NOT EXISTS messages_ack ON messages (ack_id)",
)


class EmbeddedQueue:
    """A :class:`~beam.bus.port.MessageBus` kept in ``<workdir>/bus/queue.sqlite3``."""

    def __init__(self, workdir: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(workdir) / QUEUE_FILE
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con: sqlite3.Connection | None = None
        self._guard = threading.Lock()
        with self._transaction() as con:
            for statement in _SCHEMA:
                con.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the queue's connection (opened once; other processes wait)."""
        with self._guard:
            if self._con is None:
                self._con = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
                )
                self._con.execute("PRAGMA journal_mode=WAL")
                self._con.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing
            con = self._con
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def ensure(self, topic: str, subscription: str, ack_deadline_seconds: int) -> None:
        with self._transaction() as con:
            con.execute("INSERT OR IGNORE INTO topics VALUES (?)", [topic])
            found = con.execute("SELECT topic FROM subscriptions WHERE name = ?", [subscription]).fetchone()
            if found is None:
                con.execute(
                    "INSERT INTO subscriptions VALUES (?, ?, ?)",
                    [subscription, topic, float(ack_deadline_seconds)],
                )
            elif found[0] != topic:
                raise BusError(f"subscription {subscription!r} belongs to topic {found[0]!r}, not {topic!r}")

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        ids = [uuid.uuid4().hex for _ in messages]
        now = self.clock()
        with self._transaction() as con:
            if con.execute("SELECT 1 FROM topics WHERE name = ?", [topic]).fetchone() is None:
                raise BusError(f"topic {topic!r} does not exist in {self.path}")
            subscriptions = [
                r[0] for r in con.execute("SELECT name FROM subscriptions WHERE topic = ?", [topic])
            ]
            rows = [
                (sub, mid, m.data, json.dumps(dict(m.attributes), sort_keys=True), now, 0.0, None, 0)
                for sub in subscriptions
                for mid, m in zip(ids, messages, strict=True)
            ]
            con.executemany(
                "INSERT INTO messages (subscription, message_id, data, attributes, published_at, visible_at,"
                " ack_id, delivery_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return ids

    def pull(self, subscription: str, max_messages: int, timeout: float = 0.0) -> list[ReceivedMessage]:
        """Deliverable messages at once (``timeout`` is accepted for the port's sake; nothing waits)."""
        now = self.clock()
        token = secrets.token_hex(6)
        with self._transaction() as con:
            deadline = self._deadline(con, subscription)
            rows = con.execute(
                "UPDATE messages SET visible_at = ?, delivery_attempt = delivery_attempt + 1,"
                " ack_id = CAST(seq AS TEXT) || '-' || ? WHERE seq IN (SELECT seq FROM messages"
                " WHERE subscription = ? AND visible_at <= ? ORDER BY seq LIMIT ?)"
                " RETURNING seq, ack_id, message_id, data, attributes, delivery_attempt",
                [now + deadline, token, subscription, now, int(max_messages)],
            ).fetchall()
        rows.sort(key=lambda r: r[0])
        return [
            ReceivedMessage(
                ack_id=r[1],
                message_id=r[2],
                data=bytes(r[3]),
                attributes=json.loads(r[4]),
                delivery_attempt=r[5],
            )
            for r in rows
        ]

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        with self._transaction() as con:
            con.executemany(
                "DELETE FROM messages WHERE subscription = ? AND ack_id = ?",
                [(subscription, a) for a in ack_ids],
            )

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        with self._transaction() as con:
            con.executemany(
                "UPDATE messages SET visible_at = 0, ack_id = NULL WHERE subscription = ? AND ack_id = ?",
                [(subscription, a) for a in ack_ids],
            )

    def close(self) -> None:
        with self._guard:
            if self._con is not None:
                self._con.close()
                self._con = None

    # ---- for people and tests ------------------------------------------------------------------

    def backlog(self, subscription: str) -> int:
        """Messages not yet acknowledged (leased or not)."""
        with self._transaction() as con:
            self._deadline(con, subscription)
            return int(
                con.execute(
                    "SELECT count(*) FROM messages WHERE subscription = ?", [subscription]
                ).fetchone()[0]
            )

    def _deadline(self, con: sqlite3.Connection, subscription: str) -> float:
        found = con.execute(
            "SELECT ack_deadline FROM subscriptions WHERE name = ?", [subscription]
        ).fetchone()
        if found is None:
            raise BusError(f"subscription {subscription!r} does not exist in {self.path}")
        return float(found[0])
