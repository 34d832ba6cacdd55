"""The message-bus contract, on the embedded queue and on the real Pub/Sub emulator: at least once,
redelivered after the ack deadline or a nack, gone once acknowledged, a stale ack id ignored."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from beam.bus import BusError, EmbeddedQueue, MessageBus, OutgoingMessage, ReceivedMessage, open_bus
from tests.consolidation.helpers import FakeClock

pytestmark = pytest.mark.integration

PUBSUB_MIN_DEADLINE = 10


@pytest.fixture(params=["embedded", "pubsub"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> MessageBus:
    if request.param == "embedded":
        return EmbeddedQueue(tmp_path)
    found: MessageBus = request.getfixturevalue("pubsub_bus")
    return found


def pull_until(
    bus: MessageBus, subscription: str, count: int, timeout: float = 30.0
) -> list[ReceivedMessage]:
    """Pull until ``count`` messages came (Pub/Sub may answer with fewer than are there)."""
    got: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += bus.pull(subscription, 100, 2.0)
    return got


def nothing_within(bus: MessageBus, subscription: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if bus.pull(subscription, 100, 1.0):
            return False
    return True


def test_published_messages_come_back_with_data_and_attributes(
    bus: MessageBus, names: tuple[str, str]
) -> None:
    topic, sub = names
    bus.ensure(topic, sub, 30)

    ids = bus.publish(topic, [OutgoingMessage(b"42", {"cycle": "c1", "stream": "source:a.b"})])
    got = pull_until(bus, sub, 1)

    assert [(m.data, dict(m.attributes), m.message_id) for m in got] == [
        (b"42", {"cycle": "c1", "stream": "source:a.b"}, ids[0])
    ]


def test_acknowledged_messages_are_not_delivered_again(bus: MessageBus, names: tuple[str, str]) -> None:
    topic, sub = names
    bus.ensure(topic, sub, 30)
    bus.publish(topic, [OutgoingMessage(str(i).encode()) for i in range(5)])

    got = pull_until(bus, sub, 5)
    bus.ack(sub, [m.ack_id for m in got])

    assert sorted(m.data for m in got) == [b"0", b"1", b"2", b"3", b"4"]
    assert nothing_within(bus, sub, 2.0)


def test_nacked_message_is_delivered_again_with_a_new_ack_id(bus: MessageBus, names: tuple[str, str]) -> None:
    topic, sub = names
    bus.ensure(topic, sub, 30)
    bus.publish(topic, [OutgoingMessage(b"7")])
    first = pull_until(bus, sub, 1)

    bus.nack(sub, [first[0].ack_id])
    again = pull_until(bus, sub, 1)

    assert [m.data for m in again] == [b"7"]
    assert again[0].message_id == first[0].message_id
    assert again[0].ack_id != first[0].ack_id


def test_unacked_message_comes_back_after_the_ack_deadline_on_the_embedded_queue(tmp_path: Path) -> None:
    clock = FakeClock()
    queue = EmbeddedQueue(tmp_path, clock=clock)
    queue.ensure("t", "s", 60)
    queue.publish("t", [OutgoingMessage(b"1")])
    first = queue.pull("s", 10)

    before_deadline = queue.pull("s", 10)
    clock.advance(61)
    after_deadline = queue.pull("s", 10)
    queue.ack("s", [first[0].ack_id])  # stale: the message was delivered again meanwhile

    assert (len(first), before_deadline, [m.data for m in after_deadline]) == (1, [], [b"1"])
    assert after_deadline[0].delivery_attempt == 2
    assert queue.backlog("s") == 1


def test_unacked_message_comes_back_after_the_ack_deadline_on_the_emulator(
    pubsub_bus: MessageBus, names: tuple[str, str]
) -> None:
    topic, sub = names
    pubsub_bus.ensure(topic, sub, PUBSUB_MIN_DEADLINE)
    pubsub_bus.publish(topic, [OutgoingMessage(b"1")])
    first = pull_until(pubsub_bus, sub, 1)

    again = pull_until(pubsub_bus, sub, 1, timeout=4 * PUBSUB_MIN_DEADLINE)

    assert [m.data for m in again] == [b"1"]
    assert again[0].message_id == first[0].message_id


def test_every_subscription_of_a_topic_gets_every_message(bus: MessageBus, names: tuple[str, str]) -> None:
    topic, sub = names
    bus.ensure(topic, sub, 30)
    bus.ensure(topic, sub + "-audit", 30)

    bus.publish(topic, [OutgoingMessage(b"x")])

    assert [m.data for m in pull_until(bus, sub, 1)] == [b"x"]
    assert [m.data for m in pull_until(bus, sub + "-audit", 1)] == [b"x"]


def test_embedded_queue_keeps_unacked_messages_in_the_workdir(tmp_path: Path) -> None:
    EmbeddedQueue(tmp_path).ensure("t", "s", 60)
    EmbeddedQueue(tmp_path).publish("t", [OutgoingMessage(b"kept")])

    again = EmbeddedQueue(tmp_path).pull("s", 10)

    assert [m.data for m in again] == [b"kept"]
    assert (tmp_path / "bus" / "queue.sqlite3").is_file()


def test_publishing_to_a_missing_topic_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="topic 'nowhere' does not exist"):
        EmbeddedQueue(tmp_path).publish("nowhere", [OutgoingMessage(b"1")])


@pytest.mark.parametrize(
    ("env", "kind"),
    [({}, "EmbeddedQueue"), ({"DATAOPS_BUS": "embedded"}, "EmbeddedQueue")],
)
def test_open_bus_defaults_to_the_embedded_queue(tmp_path: Path, env: dict[str, str], kind: str) -> None:
    assert type(open_bus(tmp_path, env=env)).__name__ == kind


def test_open_bus_names_pubsub_when_asked(pubsub_emulator: str, tmp_path: Path) -> None:
    found = open_bus(tmp_path, env={"DATAOPS_BUS": "pubsub", "PUBSUB_EMULATOR_HOST": pubsub_emulator})

    assert type(found).__name__ == "PubSubBus"
    found.close()


def test_open_bus_refuses_an_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="unknown bus 'kafka'"):
        open_bus(tmp_path, env={"DATAOPS_BUS": "kafka"})
