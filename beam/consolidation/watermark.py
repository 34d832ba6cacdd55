"""The watermark store: one ``(cursor, key...)`` position per stream, kept in the warehouse itself.

A row of ``_dataops.consolidation_watermarks`` per (IngestionSource, stream): the source table's
stream, and one per joined table with a cursor. A watermark only ever moves inside the transaction
that merges everything up to it (:mod:`beam.consolidation.merge`), so "at or before the watermark"
means "merged": that is what lets a cycle prove a redelivered message needs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from beam.consolidation.duck import execute, fetch_arrow
from beam.consolidation.plan import ConsolidationPlan, Position, Stream
from beam.consolidation.sql import CURSOR_TEXT, key_text, watermarks_sql, window_sql

Watermarks = Mapping[str, Position | None]
"""``stream name -> position`` (``None``: nothing merged yet)."""


def read_watermarks(con: duckdb.DuckDBPyConnection, plan: ConsolidationPlan) -> dict[str, Position | None]:
    """The committed watermark of each of the plan's streams."""
    stored = {row[0]: Position.from_text(row[1], row[2]) for row in execute(con, watermarks_sql(plan))}
    return {s.name: stored.get(s.name) for s in plan.streams}


@dataclass(frozen=True)
class Window:
    """The positions a cycle takes from a stream: after its watermark, in order, at most a batch."""

    stream: Stream
    since: Position | None
    positions: pa.Table  # cursor_text, key<i>_text
    full: bool  # as many as the batch allows: more may wait (a backlog)

    @property
    def size(self) -> int:
        return int(self.positions.num_rows)

    @property
    def upto(self) -> Position | None:
        """The last position taken, or the watermark when none was."""
        if self.size == 0:
            return self.since
        last = self.positions.slice(self.size - 1, 1).to_pylist()[0]
        return Position(
            cursor=str(last[CURSOR_TEXT]),
            key=tuple(str(last[key_text(i)]) for i in range(len(self.stream.key))),
        )


def next_window(con: duckdb.DuckDBPyConnection, stream: Stream, since: Position | None, limit: int) -> Window:
    positions = fetch_arrow(con, window_sql(stream, since, limit))
    return Window(stream=stream, since=since, positions=positions, full=positions.num_rows >= limit)


def watermarks_json(marks: Watermarks) -> dict[str, dict[str, object] | None]:
    return {name: (p.to_json() if p else None) for name, p in marks.items()}
