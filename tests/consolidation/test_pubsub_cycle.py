"""Consolidation cycles over the real Pub/Sub emulator: duplicates and redeliveries change nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from beam.bus import MessageBus
from tests.consolidation.helpers import DuplicatingBus, World, spec_doc

pytestmark = pytest.mark.integration

PUBSUB_MIN_DEADLINE = 10


@pytest.fixture
def world(tmp_path: Path, names: tuple[str, str]) -> World:
    topic, sub = names
    world = World(tmp_path / "work", spec_doc(batch_size=50, topic=topic, subscription=sub))
    world.insert_transactions(["T00001", "T00002"])
    world.insert_operations(4, tx_ids=["T00001", "T00002", "T00003", None])
    world.insert_operations(2, tie=True, tx_ids=["T00001"])
    return world


def subscription_is_empty(bus: MessageBus, subscription: str, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if bus.pull(subscription, 100, 1.0):
            return False
    return True


def test_cycle_over_the_emulator_merges_and_acknowledges_everything(
    world: World, pubsub_bus: MessageBus
) -> None:
    first = world.cycle(pubsub_bus)
    world.insert_transactions(["T00003"])
    second = world.cycle(pubsub_bus)

    assert (first.published, first.received, first.inserted) == (6, 1, 6)
    assert (second.rejoined, second.updated) == (1, 1)
    assert world.target_rows() == world.reference()
    assert subscription_is_empty(pubsub_bus, world.doc["spec"]["consolidation"]["subscription"])


def test_duplicate_delivery_over_the_emulator_merges_once(world: World, pubsub_bus: MessageBus) -> None:
    result = world.cycle(DuplicatingBus(pubsub_bus))

    assert (result.received, result.duplicates, result.inserted, result.staged) == (2, 1, 6, 6)
    assert world.target_rows() == world.reference()


def test_cycle_slower_than_the_ack_deadline_merges_redelivered_ids_once(
    world: World, pubsub_bus: MessageBus
) -> None:
    sub = world.doc["spec"]["consolidation"]["subscription"]
    redelivered: list[str] = []

    def slow_stage(point: str) -> None:
        if point != "after_stage":
            return
        deadline = time.monotonic() + 6 * PUBSUB_MIN_DEADLINE
        while len(set(redelivered)) < 6 and time.monotonic() < deadline:  # the deadline passes meanwhile
            got = pubsub_bus.pull(sub, 100, 2.0)
            redelivered.extend(i for m in got for i in json.loads(m.data))
            pubsub_bus.nack(sub, [m.ack_id for m in got])

    first = world.cycle(pubsub_bus, faults=slow_stage, ack_deadline_seconds=PUBSUB_MIN_DEADLINE)
    later = [world.cycle(pubsub_bus) for _ in range(2)]

    assert sorted(set(redelivered)) == ["1", "2", "3", "4", "5", "6"]
    assert first.inserted == 6
    assert [r.merged for r in later] == [0, 0]
    assert world.inserted_total() == 6
    assert world.target_rows() == world.reference()
    assert subscription_is_empty(pubsub_bus, sub)
