"""The messages of a cycle: operation ids in batches, and how each message received is handled.

A message's data is a JSON array of operation ids (up to :data:`IDS_PER_MESSAGE`, in stream order; a
bare id, as the seed published, is read as one). Its attributes say which IngestionSource and cycle
published it (``source``, ``cycle``, ``part``), from which stream (the source table, or a joined table
whose late rows re-merge operations) and the position of its last id in that stream (``cursor``,
``key0``...). A received message is then:

- ``merged``: its last position is at or before the committed watermark: acknowledged, nothing merged;
- ``include``: within this cycle's windows (or without a position): its ids are merged now, and it is
  acknowledged after the merge commits;
- ``later``: beyond this cycle's windows (a cycle with a smaller batch left it): given back;
- ``foreign``: another source's message on this subscription: given back.

Ids are deduplicated across messages (the business key decides, never the message id).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from beam.bus.port import MessageBus, OutgoingMessage, ReceivedMessage
from beam.consolidation.duck import execute
from beam.consolidation.plan import ConsolidationPlan
from beam.consolidation.sql import CURSOR_TEXT, ID_TEXT, classify_sql, key_text
from beam.consolidation.watermark import Watermarks

ATTR_SOURCE = "source"
ATTR_CYCLE = "cycle"
ATTR_PART = "part"
ATTR_STREAM = "stream"
ATTR_CURSOR = "cursor"
ATTR_KEY = "key"
"""``key0``, ``key1``...: the tie-break values of the last position, as text."""

IDS_PER_MESSAGE = 1000
PULL_BATCH = 1000
DRAIN_PULL_SECONDS = 1.0
EMPTY_PULL_PAUSE_SECONDS = 0.05
MAX_STALE_FACTOR = 10
"""A cycle reads at most this many times its own messages' count of other cycles' messages."""


class IdsNotReturned(Exception):
    """Ids this cycle published did not come back from the subscription in time (nothing was merged)."""


def _messages(
    plan: ConsolidationPlan,
    cycle_id: str,
    stream: str,
    ids: Sequence[Any],
    positions: pa.Table,
    keys: int,
    first_part: int,
) -> list[OutgoingMessage]:
    """``ids`` (in the order of ``positions``) in batches; each batch tagged with its last position."""
    out = []
    for n, start in enumerate(range(0, len(ids), IDS_PER_MESSAGE)):
        stop = min(start + IDS_PER_MESSAGE, len(ids))
        last = positions.slice(stop - 1, 1).to_pylist()[0]
        attributes = {
            ATTR_SOURCE: plan.source_name,
            ATTR_CYCLE: cycle_id,
            ATTR_PART: str(first_part + n),
            ATTR_STREAM: stream,
            ATTR_CURSOR: str(last[CURSOR_TEXT]),
        } | {f"{ATTR_KEY}{k}": str(last[key_text(k)]) for k in range(keys)}
        data = json.dumps([str(i) for i in ids[start:stop]]).encode("utf-8")
        out.append(OutgoingMessage(data, attributes))
    return out


def source_messages(plan: ConsolidationPlan, cycle_id: str, positions: pa.Table) -> list[OutgoingMessage]:
    """The extracted source ids, in ``(cursor, id)`` order."""
    ids = positions.column(key_text(0)).to_pylist()
    return _messages(plan, cycle_id, plan.source.name, ids, positions, 1, 0)


def rejoin_messages(
    plan: ConsolidationPlan, cycle_id: str, stream: str, rows: pa.Table, key_count: int, first_part: int
) -> list[OutgoingMessage]:
    """Operations to re-merge, in the order of the joined rows that moved (``rows`` is sorted so)."""
    return _messages(plan, cycle_id, stream, rows.column(ID_TEXT).to_pylist(), rows, key_count, first_part)


def publish(bus: MessageBus, topic: str, messages: Sequence[OutgoingMessage]) -> int:
    """All of them, in one call (the Pub/Sub client batches requests itself)."""
    if messages:
        bus.publish(topic, messages)
    return len(messages)


def ids_in(messages: Iterable[OutgoingMessage]) -> int:
    return sum(len(json.loads(m.data)) for m in messages)


def own_parts(messages: Iterable[OutgoingMessage]) -> set[str]:
    return {m.attributes[ATTR_PART] for m in messages}


def pull_messages(
    bus: MessageBus, subscription: str, cycle_id: str, expected: set[str], timeout: float
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
                missing.discard(m.attributes.get(ATTR_PART, ""))
        if not missing and (not batch or len(received) >= cap):
            return received
        if time.monotonic() >= deadline:
            if not missing:
                return received
            bus.nack(subscription, [m.ack_id for m in received])
            raise IdsNotReturned(
                f"{len(missing)} of the {len(expected)} messages this cycle published to {subscription} did"
                f" not come back within {timeout:.0f}s; nothing was merged and the next cycle takes them again"
            )
        if not batch:
            time.sleep(EMPTY_PULL_PAUSE_SECONDS)


@dataclass(slots=True)
class Delivery:
    message: ReceivedMessage
    ids: tuple[str, ...]
    source: str | None
    cycle: str | None
    stream: str | None
    cursor: str | None
    key: tuple[str, ...]


def decode(message: ReceivedMessage) -> Delivery:
    attrs = message.attributes
    key: list[str] = []
    while (part := attrs.get(f"{ATTR_KEY}{len(key)}")) is not None:
        key.append(part)
    text = message.data.decode("utf-8", "replace").strip()
    try:
        found = json.loads(text)
        ids = tuple(str(i) for i in found) if isinstance(found, list) else (text,)
    except ValueError:
        ids = (text,)
    return Delivery(
        message=message,
        ids=ids,
        source=attrs.get(ATTR_SOURCE),
        cycle=attrs.get(ATTR_CYCLE),
        stream=attrs.get(ATTR_STREAM),
        cursor=attrs.get(ATTR_CURSOR),
        key=tuple(key),
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
        return list(dict.fromkeys(i for d in self.include for i in d.ids))

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
    seen: set[tuple[Any, ...]] = set()
    for d in deliveries:
        content = (d.stream, d.cursor, d.key, d.ids)
        out.duplicates += content in seen
        seen.add(content)
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
    width = max(len(s.key) for s in plan.streams)
    known = {s.name: len(s.key) for s in plan.streams}
    columns: dict[str, list[Any]] = {
        n: [] for n in ["idx", "stream", CURSOR_TEXT, *map(key_text, range(width))]
    }
    for i, d in enumerate(deliveries):
        if d.cursor is None or known.get(d.stream or "") != len(d.key):
            continue  # no position this cycle can read
        columns["idx"].append(i)
        columns["stream"].append(d.stream)
        columns[CURSOR_TEXT].append(d.cursor)
        for k in range(width):
            columns[key_text(k)].append(d.key[k] if k < len(d.key) else None)
    if not columns["idx"]:
        return {}
    table = pa.table(
        {n: pa.array(c, type=pa.int64() if n == "idx" else pa.string()) for n, c in columns.items()}
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
