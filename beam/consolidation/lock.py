"""The warehouse lock: a row of ``_dataops.locks`` (owner, host, pid, expiry), taken in a transaction.

Two cycles of one source never run at once: the second waits up to ``wait_seconds`` and then gives
up with :class:`LockHeld` (the cycle exits cleanly, having done nothing). A lock is free when it has
no row, when its expiry has passed, or when its owner ran on this host and its process is gone (a
killed cycle does not make the next one wait for the expiry). The merge transaction checks that its
cycle still owns the lock (:func:`beam.consolidation.sql.lock_guard_sql`), so a cycle whose lock
expired and was taken over can never commit.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType

import duckdb

from beam.consolidation.duck import ensure_meta, execute
from beam.consolidation.sql import lock_holder_sql, lock_refresh_sql, lock_release_sql, lock_take_sql
from beam.warehouse.duckdb_warehouse import DuckDBWarehouse

DEFAULT_TTL_SECONDS = 900.0
DEFAULT_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class LockHolder:
    owner: str
    host: str
    pid: int
    acquired_at: str
    expires_at: str
    expired: bool


class LockHeld(Exception):
    """Another cycle holds the lock; nothing was done."""

    def __init__(self, name: str, holder: LockHolder | None, waited: float) -> None:
        self.name = name
        self.holder = holder
        who = (
            f"cycle {holder.owner} (host {holder.host}, pid {holder.pid}) since {holder.acquired_at},"
            f" until {holder.expires_at}"
            if holder
            else "another cycle"
        )
        super().__init__(
            f"{name} is locked by {who}; waited {waited:.1f}s. Nothing was done: the next cycle will"
            " catch up. A lock of a killed cycle on another host frees itself at its expiry."
        )


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WarehouseLock:
    """``with WarehouseLock(...)``: held inside the block, released after it (also after an error)."""

    def __init__(
        self,
        warehouse: DuckDBWarehouse,
        name: str,
        owner: str,
        clock: Callable[[], datetime],
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self.warehouse = warehouse
        self.name = name
        self.owner = owner
        self.clock = clock
        self.ttl = timedelta(seconds=ttl_seconds)
        self.wait_seconds = wait_seconds
        self.host = socket.gethostname()
        self.pid = os.getpid()

    def __enter__(self) -> WarehouseLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def holder(self) -> LockHolder | None:
        with self.warehouse.connect() as con:
            ensure_meta(con)
            return self._holder(con)

    def _holder(self, con: duckdb.DuckDBPyConnection) -> LockHolder | None:
        rows = execute(con, lock_holder_sql(self.name, self.clock()))
        if not rows:
            return None
        owner, host, pid, acquired, expires, expired = rows[0]
        return LockHolder(str(owner), str(host), int(pid), str(acquired), str(expires), bool(expired))

    def _stale(self, holder: LockHolder | None) -> str | None:
        """The owner of a lock whose process is gone (same host only: other hosts wait for the expiry)."""
        if holder is None or holder.expired or holder.owner == self.owner or holder.host != self.host:
            return None
        if holder.pid == self.pid:
            return None
        return None if process_alive(holder.pid) else holder.owner

    def try_acquire(self, con: duckdb.DuckDBPyConnection | None = None) -> LockHolder | None:
        """Take the lock if it is free, in one transaction (on ``con``, or a connection of its own);
        the holder that keeps it otherwise (``None``: taken)."""
        if con is None:
            with self.warehouse.connect() as own:
                return self.try_acquire(own)
        now = self.clock()
        ensure_meta(con)
        con.execute("BEGIN TRANSACTION")
        try:
            holder = self._holder(con)
            stale = self._stale(holder)
            execute(
                con, lock_take_sql(self.name, self.owner, self.host, self.pid, now, now + self.ttl, stale)
            )
            after = self._holder(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return None if after is not None and after.owner == self.owner else after

    def acquire(self) -> None:
        started = time.monotonic()
        while True:
            try:
                holder = self.try_acquire()
                if holder is None:
                    return
            except duckdb.TransactionException:  # another connection of this process wrote meanwhile
                holder = self._holder_or_none()
            waited = time.monotonic() - started
            if waited >= self.wait_seconds:
                raise LockHeld(self.name, holder, waited)
            time.sleep(min(POLL_SECONDS, max(self.wait_seconds - waited, 0.0)))

    def _holder_or_none(self) -> LockHolder | None:
        try:
            return self.holder()
        except duckdb.TransactionException:
            return None

    def refresh(self, con: duckdb.DuckDBPyConnection) -> None:
        """Push the expiry forward (a long cycle calls this between its steps)."""
        execute(con, lock_refresh_sql(self.name, self.owner, self.clock() + self.ttl))

    def release(self, con: duckdb.DuckDBPyConnection | None = None) -> None:
        if con is None:
            with self.warehouse.connect() as own:
                self.release(own)
            return
        ensure_meta(con)
        execute(con, lock_release_sql(self.name, self.owner))
