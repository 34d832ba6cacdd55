"""Consolidation's fixtures; the Pub/Sub emulator itself is in ``tests/emulators.py``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from beam.bus import MessageBus
from tests.emulators import PROJECT


@pytest.fixture
def pubsub_bus(pubsub_emulator: str) -> Iterator[MessageBus]:
    from beam.bus.pubsub import PubSubBus

    bus = PubSubBus(PROJECT)
    yield bus
    bus.close()


@pytest.fixture
def names() -> tuple[str, str]:
    """A fresh topic and subscription name (the emulator is shared by the session)."""
    suffix = uuid.uuid4().hex[:10]
    return f"topic-{suffix}", f"sub-{suffix}"
