"""The seed's success/error topics: after validation, one message per validated file.

``spec.validate.notify.successTopic`` (else ``$DATAOPS_TOPIC_VALIDATION_SUCCESS``, which the Helm chart
sets from ``gcp.topics``) gets a message for each file of a run whose validation passed,
``errorTopic`` (else ``$DATAOPS_TOPIC_VALIDATION_ERROR``) one for each file of a run whose validation failed (a run loads all its files or none,
so the run's outcome decides the topic; the counts are the file's own). Each message carries the
summary twice: as attributes (``run``, ``namespace``, ``file``, ``generation``, ``outcome``,
``rowsIn``, ``rowsOut``, ``rowsRejected``, ``reason``), for subscription filters and alert policies,
and as a JSON body with the same fields plus the message and the file's first rejected rows.

The bus is the one ``DATAOPS_BUS`` names (:func:`beam.bus.open_bus`): Pub/Sub in the cluster, where the
topics come from Terraform and are never created here; the embedded queue locally, where a topic is
created on first use with a subscription of the same name to read it from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from beam.adapters import adapters_for
from beam.bus import DEFAULT_ACK_DEADLINE_SECONDS, EmbeddedQueue, MessageBus, OutgoingMessage, open_bus
from beam.stages.context import StageContext

SUCCESS = "success"
ERROR = "error"
ATTRIBUTE_LIMIT = 1024
"""Pub/Sub's limit on an attribute value, in bytes."""
SHOWN_REJECTS = 5


@dataclass
class FileSummary:
    """What validation found in one file."""

    file: str
    generation: int | None = None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)  # the first few: row, column, rule, message


def _cut(text: str) -> str:
    data = text.encode("utf-8")
    return (
        text
        if len(data) <= ATTRIBUTE_LIMIT
        else data[: ATTRIBUTE_LIMIT - 3].decode("utf-8", "ignore") + "..."
    )


def build_messages(
    ctx: StageContext, outcome: str, files: Sequence[FileSummary], reason: str, message: str
) -> list[OutgoingMessage]:
    """One message per file. Pure."""
    out = []
    for f in files:
        summary: dict[str, Any] = {
            "run": ctx.name,
            "namespace": ctx.run.metadata.namespace,
            "file": f.file,
            "generation": "" if f.generation is None else str(f.generation),
            "outcome": outcome,
            "rowsIn": f.rows_in,
            "rowsOut": f.rows_out,
            "rowsRejected": f.rows_rejected,
            "reason": reason,
        }
        attributes = {k: _cut(str(v)) for k, v in summary.items()}
        body = summary | {
            "message": message,
            "table": ctx.run.spec.load.table,
            "startedAt": ctx.started_at,
            "rejects": f.rejects[:SHOWN_REJECTS],
        }
        out.append(OutgoingMessage(json.dumps(body, default=str).encode("utf-8"), attributes))
    return out


def topic_for(ctx: StageContext, outcome: str, env: Mapping[str, str]) -> str | None:
    """``spec.validate.notify``'s topic for the outcome, else the environment's (Helm's gcp.topics)."""
    chosen = adapters_for(ctx.run.spec, str(ctx.workdir), env)
    return chosen.success_topic if outcome == SUCCESS else chosen.error_topic


def publish_outcome(
    ctx: StageContext,
    outcome: str,
    files: Sequence[FileSummary],
    reason: str,
    message: str,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Publish the run's per-file messages on its success or error topic; the topic, or None when the
    spec names none. Raises :class:`~beam.bus.BusError` (``BusRefused`` for a missing topic or role)."""
    env = os.environ if env is None else env
    topic = topic_for(ctx, outcome, env)
    if topic is None or not files:
        return None
    bus: MessageBus = open_bus(ctx.workdir, env=env)
    try:
        if isinstance(bus, EmbeddedQueue):  # nothing provisions the local queue: the topic is made here
            bus.ensure(topic, topic, DEFAULT_ACK_DEADLINE_SECONDS)
        bus.publish(topic, build_messages(ctx, outcome, files, reason, message))
    finally:
        bus.close()
    return topic
