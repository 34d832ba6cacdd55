"""What a user sees when Pub/Sub refuses: a missing topic or subscription (on the real emulator), and a
missing role (on a loopback server speaking the Pub/Sub gRPC API that answers PERMISSION_DENIED, since
the emulator lets everyone in). Each names the resource and the role to grant, without a traceback, and
leaves nothing half-written."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from beam.bus import BusRefused, OutgoingMessage
from beam.bus.pubsub import PubSubBus
from tests.conftest import run_cli, table_names, write_spec
from tests.consolidation.helpers import World, run_module, spec_doc
from tests.doubles.pubsub_refusing import DENIED, RefusingPubSub, refusing_pubsub
from tests.emulators import PROJECT

pytestmark = pytest.mark.integration

REFUSED_PROJECT = "locked-project"


@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[RefusingPubSub]:
    """The refusing server; the Pub/Sub client of this process and of children points at it."""
    with refusing_pubsub() as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        monkeypatch.setenv("PUBSUB_PROJECT_ID", REFUSED_PROJECT)
        yield server


@pytest.fixture
def emulator_bus(pubsub_emulator: str) -> Iterator[PubSubBus]:
    """A bus that creates nothing, as a production service account allowed to publish and pull only."""
    bus = PubSubBus(PROJECT, create_missing=False)
    yield bus
    bus.close()


def test_publishing_to_a_missing_topic_on_the_emulator_names_the_topic_and_the_role(
    emulator_bus: PubSubBus,
) -> None:
    topic = f"gone-{uuid.uuid4().hex[:8]}"

    with pytest.raises(BusRefused) as refused:
        emulator_bus.publish(topic, [OutgoingMessage(b"1")])

    message = str(refused.value)
    assert f"Pub/Sub topic projects/{PROJECT}/topics/{topic} does not exist" in message
    assert "roles/pubsub.publisher" in message


def test_pulling_from_a_missing_subscription_on_the_emulator_names_the_subscription_and_the_role(
    emulator_bus: PubSubBus,
) -> None:
    subscription = f"gone-{uuid.uuid4().hex[:8]}"

    with pytest.raises(BusRefused) as refused:
        emulator_bus.pull(subscription, 10, 2.0)

    message = str(refused.value)
    assert f"Pub/Sub subscription projects/{PROJECT}/subscriptions/{subscription} does not exist" in message
    assert "roles/pubsub.subscriber" in message


def test_a_refused_publish_names_the_publisher_role_and_the_topic(refusing: RefusingPubSub) -> None:
    bus = PubSubBus(REFUSED_PROJECT)
    try:
        with pytest.raises(BusRefused) as refused:
            bus.publish("operation-ids", [OutgoingMessage(b"1", {"cycle": "c1"})])
    finally:
        bus.close()

    message = str(refused.value)
    topic = f"projects/{REFUSED_PROJECT}/topics/operation-ids"
    assert f"permission denied publishing to Pub/Sub topic {topic}" in message
    assert "grant roles/pubsub.publisher on that topic" in message
    assert DENIED in message
    assert refusing.calls == [("Publish", topic)]


def test_a_refused_pull_names_the_subscriber_role_and_the_subscription(refusing: RefusingPubSub) -> None:
    bus = PubSubBus(REFUSED_PROJECT)
    try:
        with pytest.raises(BusRefused) as refused:
            bus.pull("operation-ids-sub", 10, 2.0)
    finally:
        bus.close()

    message = str(refused.value)
    subscription = f"projects/{REFUSED_PROJECT}/subscriptions/operation-ids-sub"
    assert f"permission denied pulling from Pub/Sub subscription {subscription}" in message
    assert "grant roles/pubsub.subscriber on it" in message
    assert refusing.calls == [("Pull", subscription)]


def test_a_cycle_refused_by_pubsub_fails_naming_the_role_and_merges_nothing(
    refusing: RefusingPubSub, tmp_path: Path
) -> None:
    world = World(tmp_path / "work", spec_doc(topic="ops-ids", subscription="ops-ids-sub"))
    world.insert_transactions(["T00001"])
    world.insert_operations(3, tx_ids=["T00001"])

    proc = run_module(
        [str(world.spec_file()), "--workdir", str(world.workdir), "--output", "json", "--lock-wait", "0"],
        {"DATAOPS_BUS": "pubsub"},
    )

    summary = json.loads(proc.stdout)
    topic = f"projects/{REFUSED_PROJECT}/topics/ops-ids"
    assert proc.returncode == 1
    assert (summary["status"], summary["reason"]) == ("Failed", "BusRefused")
    assert f"permission denied publishing to Pub/Sub topic {topic}" in summary["message"]
    assert "roles/pubsub.publisher" in summary["message"]
    assert "Traceback" not in proc.stderr
    assert refusing.methods() == ["CreateTopic", "CreateSubscription", "Publish"]
    assert world.target_rows() == []
    assert world.query("SELECT count(*) FROM _dataops.consolidation_watermarks")[0][0] == 0
    assert world.query("SELECT count(*) FROM _dataops.consolidation_cycles")[0][0] == 0
    assert world.query("SELECT count(*) FROM _dataops.locks")[0][0] == 0


def test_a_refused_validation_message_fails_the_run_before_anything_is_loaded(
    refusing: RefusingPubSub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workdir: Path
) -> None:
    monkeypatch.setenv("DATAOPS_BUS", "pubsub")
    csv = tmp_path / "items.csv"
    csv.write_text("sku,qty\nA1,3\nB2,5\n", encoding="utf-8")
    spec = {
        "source": {"uri": str(csv), "columns": [{"name": "sku"}, {"name": "qty", "type": "INT64"}]},
        "validate": {"notify": {"successTopic": "validation-success", "errorTopic": "validation-error"}},
        "load": {"table": "landing.items"},
    }

    result = run_cli("run", str(write_spec(tmp_path, spec)), "--workdir", str(workdir), "--output", "json")

    message = result.summary["stages"][0]["message"]
    assert result.code == 1
    assert result.summary["phase"] == "Failed"
    assert "permission denied publishing to Pub/Sub topic" in message
    assert f"projects/{REFUSED_PROJECT}/topics/validation-success" in message
    assert "roles/pubsub.publisher" in message
    assert "Traceback" not in result.stdout + result.stderr
    assert "landing.items" not in table_names(workdir)
