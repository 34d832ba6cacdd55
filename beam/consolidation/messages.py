"""The messages of a cycle: one per operation id, its position in attributes, and how each is handled.

A message's data is the operation id (as in the seed). Its attributes say which IngestionSource and
cycle published it, from which stream (the source table, or a joined table whose late row re-merges
the operation) and at which position of that stream. A received message is then:

- ``merged``: its position is at or before the committed watermark: acknowledged, nothing merged;
- ``include``: its position is within this cycle's windows (or it carries none): merged now,
  acknowledged after the merge commits;
- ``later``: beyond this cycle's windows (a cycle with a smaller batch left it): given back;
- ``foreign``: another source's message on this subscription: given back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from beam.bus.port import MessageBus, OutgoingMessage, ReceivedMessage
from beam.consolidation.duck import execute
from beam.consolidation.plan import ConsolidationPlan, Position
from beam.consolidation.sql import CURSOR_TEXT, ID_TEXT, classify_sql, key_text
from beam.consolidation.watermark import Watermarks

ATTR_SOURCE = "source"
ATTR_CYCLE = "cycle"
ATTR_STREAM = "stream"
ATTR_CURSOR = "cursor"
ATTR_KEY = "key"

PUBLISH_BATCH = 1000
PULL_BATCH = 1000
DRAIN_PULL_SECONDS = 1.0
EMPTY_PULL_PAUSE_SECONDS = 0.05
MAX_STALE_FACTOR = 10
"""A cycle reads at most this many times its own messages' count of other cycles' messages."""


class IdsNotReturned(Exception):
    """Ids this cycle published did not come back from the subscription in time (nothing was merged)."""


def _message(
    plan: ConsolidationPlan, cycle_id: str, stream: str, op_id: str, position: Position
) -> OutgoingMessage:
    return OutgoingMessage(
        data=op_id.encode("utf-8"),
        attributes={
            ATTR_SOURCE: plan.source_name,
            ATTR_CYCLE: cycle_id,
            ATTR_STREAM: stream,
            ATTR_CURSOR: position.cursor,
            ATTR_KEY: json.dumps(list(position.key)),
        },
    )


def source_messages(plan: ConsolidationPlan, cycle_id: str, positions: pa.Table) -> list[OutgoingMessage]:
    """One message per extracted source row: the id, at its ``(cursor, id)``."""
    cursors = positions.column(CURSOR_TEXT).to_pylist()
    ids = positions.column(key_text(0)).to_pylist()
    return [
        _message(plan, cycle_id, plan.source.name, str(i), Position(str(c), (str(i),)))
        for c, i in zip(cursors, ids, strict=True)
    ]


def rejoin_messages(
    plan: ConsolidationPlan, cycle_id: str, stream: str, rows: pa.Table, key_count: int
) -> list[OutgoingMessage]:
    """One message per operation to re-merge: its id, at the position of the joined row that moved."""
    out = []
    for row in rows.to_pylist():
        position = Position(str(row[CURSOR_TEXT]), tuple(str(row[key_text(i)]) for i in range(key_count)))
        out.append(_message(plan, cycle_id, stream, str(row[ID_TEXT]), position))
    return out


def publish(bus: MessageBus, topic: str, messages: Sequence[OutgoingMessage]) -> int:
    for start in range(0, len(messages), PUBLISH_BATCH):
        bus.publish(topic, messages[start : start + PUBLISH_BATCH])
    return len(messages)


def own_keys(messages: Iterable[OutgoingMessage]) -> set[tuple[str, str]]:
    return {(m.attributes[ATTR_STREAM], m.data.decode("utf-8")) for m in messages}


def pull_messages(
    bus: MessageBus, subscription: str, cycle_id: str, expected: set[tuple[str, str]], timeout: float
) -> list[ReceivedMessage]:
    """Pull until every message this cycle published came back, then until the subscription answers
    empty (other cycles' leftovers), within ``timeout`` seconds."""
    received: list[ReceivedMessage] = []
    missing = set(expected)
    deadline = time.monotonic() + timeout
    cap = max(len(expected), PULL_BATCH) * MAX_STALE_FACTOR
    while True:
        left = deadline - time.monotonic()
        wait = DRAIN_PULL_SECONDS if not missing else max(min(left, 5.0), 0.1)
        batch = bus.pull(subscription, PULL_BATCH, wait)
        received += batch
        for m in batch:
            if m.attributes.get(ATTR_CYCLE) == cycle_id:
                missing.discard((m.attributes.get(ATTR_STREAM, ""), m.data.decode("utf-8", "replace")))
        if not missing and (not batch or len(received) >= cap):
            return received
        if time.monotonic() >= deadline:
            if not missing:
                return received
            bus.nack(subscription, [m.ack_id for m in received])
            raise IdsNotReturned(
                f"{len(missing)} of the {len(expected)} ids this cycle published to {subscription} did not"
                f" come back within {timeout:.0f}s; nothing was merged and the next cycle takes them again"
            )
        if not batch:
            time.sleep(EMPTY_PULL_PAUSE_SECONDS)


@dataclass(frozen=True)
class Delivery:
    message: ReceivedMessage
    op_id: str
    source: str | None
    cycle: str | None
    stream: str | None
    position: Position | None


def decode(message: ReceivedMessage) -> Delivery:
    attrs = message.attributes
    position = None
    if ATTR_CURSOR in attrs and ATTR_KEY in attrs:
        try:
            position = Position.from_text(attrs[ATTR_CURSOR], attrs[ATTR_KEY])
        except (ValueError, TypeError):
            position = None
    return Delivery(
        message=message,
        op_id=message.data.decode("utf-8", "replace").strip(),
        source=attrs.get(ATTR_SOURCE),
        cycle=attrs.get(ATTR_CYCLE),
        stream=attrs.get(ATTR_STREAM),
        position=position,
    )


@dataclass
class Sorted:
    include: list[Delivery] = field(default_factory=list)
    merged: list[Delivery] = field(default_factory=list)
    later: list[Delivery] = field(default_factory=list)
    foreign: list[Delivery] = field(default_factory=list)
    duplicates: int = 0

    @property
    def ids(self) -> list[str]:
        """The operation ids to merge now: once each, whatever the number of messages carrying them."""
        return list(dict.fromkeys(d.op_id for d in self.include))

    def ack_ids(self) -> list[str]:
        return [d.message.ack_id for d in [*self.include, *self.merged]]

    def nack_ids(self) -> list[str]:
        return [d.message.ack_id for d in [*self.later, *self.foreign]]


def sort_deliveries(
    plan: ConsolidationPlan, messages: Sequence[ReceivedMessage], committed: Watermarks, upto: Watermarks
) -> Sorted:
    """Sort received messages by what their positions say against the committed watermarks and this
    cycle's windows (typed comparisons, in SQL)."""
    deliveries = [decode(m) for m in messages]
    out = Sorted()
    seen: set[tuple[str | None, str, Position | None]] = set()
    for d in deliveries:
        key = (d.stream, d.op_id, d.position)
        out.duplicates += key in seen
        seen.add(key)
    verdicts = _classify(plan, deliveries, committed, upto)
    for i, d in enumerate(deliveries):
        if d.source is not None and d.source != plan.source_name:
            out.foreign.append(d)
            continue
        merged, due = verdicts.get(i, (None, None))
        if merged:
            out.merged.append(d)
        elif due is False:
            out.later.append(d)
        else:  # due, or a position this cycle cannot read: merging it is safe
            out.include.append(d)
    return out


def _classify(
    plan: ConsolidationPlan, deliveries: Sequence[Delivery], committed: Watermarks, upto: Watermarks
) -> dict[int, tuple[bool | None, bool | None]]:
    width = max((len(s.key) for s in plan.streams), default=1)
    rows = [
        (i, d.stream, d.position.cursor, *[_nth(d.position.key, k) for k in range(width)])
        for i, d in enumerate(deliveries)
        if d.position is not None and plan.stream(d.stream or "") is not None
    ]
    if not rows:
        return {}
    names = ["idx", "stream", CURSOR_TEXT, *[key_text(k) for k in range(width)]]
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {
            n: pa.array(list(c), type=pa.int64() if n == "idx" else pa.string())
            for n, c in zip(names, columns, strict=True)
        }
    )
    out: dict[int, tuple[bool | None, bool | None]] = {}
    with _memory().cursor() as con:
        con.register("messages", table)
        for stream in plan.streams:
            sql = classify_sql(stream, "messages", committed.get(stream.name), upto.get(stream.name))
            for idx, merged, due in execute(con, sql):
                out[int(idx)] = (merged, due)
    return out


_MEMORY: list[duckdb.DuckDBPyConnection] = []


def _memory() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process (opening one costs ~0.1 s); callers take a cursor of it."""
    if not _MEMORY:
        _MEMORY.append(duckdb.connect())
    return _MEMORY[0]


def _nth(values: Sequence[str], n: int) -> str | None:
    return values[n] if n < len(values) else None
