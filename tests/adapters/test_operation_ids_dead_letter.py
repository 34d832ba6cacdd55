"""The consolidation's operation-id topic on the Pub/Sub emulator, with the dead-letter policy Terraform
gives its subscription: a message that no consumer settles is dead-lettered, and nothing is lost."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam.bus import MessageBus
from tests.consolidation.helpers import World, crash_at, spec_doc
from tests.emulators import PROJECT

pytestmark = pytest.mark.integration

MAX_DELIVERY_ATTEMPTS = 5  # Pub/Sub's smallest


@pytest.fixture
def pubsub(pubsub_emulator: str) -> Iterator[tuple[Any, Any]]:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    yield publisher, subscriber
    subscriber.close()


@pytest.fixture
def bus(pubsub_emulator: str) -> Iterator[MessageBus]:
    from beam.bus.pubsub import PubSubBus

    adapter = PubSubBus(PROJECT)
    yield adapter
    adapter.close()


def provision(publisher: Any, subscriber: Any, topic: str, subscription: str) -> str:
    """As terraform/gke does: the topic, its dead-letter topic, a subscription on each."""
    dead = f"{topic}-dead-letter"
    for name in (topic, dead):
        publisher.create_topic(request={"name": publisher.topic_path(PROJECT, name)})
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(PROJECT, subscription),
            "topic": publisher.topic_path(PROJECT, topic),
            "ack_deadline_seconds": 10,
            "dead_letter_policy": {
                "dead_letter_topic": publisher.topic_path(PROJECT, dead),
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
        }
    )
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(PROJECT, dead),
            "topic": publisher.topic_path(PROJECT, dead),
        }
    )
    return dead


def give_back_until_dead_lettered(bus: MessageBus, subscription: str, dead: str) -> list[str]:
    """A consumer that fails on every message: pull and nack, until the dead-letter subscription has them."""
    for _ in range(100):
        got = bus.pull(subscription, 100, 2.0)
        if got:
            bus.nack(subscription, [m.ack_id for m in got])
        dead_lettered = bus.pull(dead, 100, 1.0)
        if dead_lettered:
            bus.ack(dead, [m.ack_id for m in dead_lettered])
            return [i for m in dead_lettered for i in json.loads(m.data)]
    raise AssertionError("no message reached the dead-letter subscription")


def test_a_dead_lettered_operation_id_message_loses_no_row(
    tmp_path: Path, pubsub: tuple[Any, Any], bus: MessageBus
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"operation-ids-{suffix}", f"operation-ids-sub-{suffix}"
    dead = provision(*pubsub, topic, subscription)
    world = World(tmp_path / "work", spec_doc(batch_size=50, topic=topic, subscription=subscription))
    world.insert_transactions(["T00001", "T00002"])
    world.insert_operations(4, tx_ids=["T00001", "T00002", None, None])
    with pytest.raises(BaseException, match="after_publish"):
        world.cycle(bus, faults=crash_at("after_publish"))  # published, then killed: nothing merged

    dead_ids = give_back_until_dead_lettered(bus, subscription, dead)
    result = world.cycle(bus)

    assert sorted(dead_ids) == ["1", "2", "3", "4"]
    assert (result.published, result.inserted) == (4, 4)  # re-extracted after the watermark
    assert world.target_rows() == world.reference()
