"""The message-bus port: Pub/Sub in production and with its emulator, an embedded queue locally.

``open_bus`` opens the adapter :func:`beam.adapters.bus_kind` names: ``DATAOPS_BUS=pubsub`` (Pub/Sub, or
the emulator named by ``PUBSUB_EMULATOR_HOST``) or ``embedded`` (the default: a queue kept in the workdir).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from beam.adapters import bus_kind
from beam.bus.embedded import EmbeddedQueue
from beam.bus.port import (
    DEFAULT_ACK_DEADLINE_SECONDS,
    BusError,
    BusRefused,
    MessageBus,
    OutgoingMessage,
    ReceivedMessage,
)

BUS_KINDS = ("embedded", "pubsub")


def open_bus(workdir: Path, kind: str | None = None, env: Mapping[str, str] | None = None) -> MessageBus:
    """The bus named by ``kind`` (else ``$DATAOPS_BUS``, else ``embedded``)."""
    env = os.environ if env is None else env
    chosen = bus_kind(env, kind)
    if chosen == "embedded":
        return EmbeddedQueue(workdir)
    if chosen == "pubsub":
        from beam.bus.pubsub import PubSubBus, project_from_env

        return PubSubBus(project_from_env(env))
    raise BusRefused(f"unknown bus {chosen!r}: use one of {', '.join(BUS_KINDS)} (DATAOPS_BUS or --bus)")


__all__ = [
    "BUS_KINDS",
    "DEFAULT_ACK_DEADLINE_SECONDS",
    "BusError",
    "BusRefused",
    "EmbeddedQueue",
    "MessageBus",
    "OutgoingMessage",
    "ReceivedMessage",
    "open_bus",
]
