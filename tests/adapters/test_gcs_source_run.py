"""`dataops run` on a gs:// source in fake-gcs-server, telling the validation topics on the Pub/Sub emulator."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, query, run_cli, write_spec
from tests.emulators import GcsServer

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

GOOD = "sku,qty\nA1,3\nB2,5\nC3,7\n"
BAD = "sku,qty\nA1,3\nB2,five\nC3,7\n"


@pytest.fixture
def topics(gcs_server: GcsServer) -> Iterator[dict[str, str]]:
    """A success and an error topic, each with a subscription to read it; the run publishes through
    Pub/Sub (``DATAOPS_BUS=pubsub``) for the test."""
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    names = {}
    for role in ("success", "error"):
        topic = f"validation-{role}-{uuid.uuid4().hex[:6]}"
        publisher.create_topic(request={"name": publisher.topic_path(gcs_server.project, topic)})
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(gcs_server.project, topic),
                "topic": publisher.topic_path(gcs_server.project, topic),
            }
        )
        names[role] = topic
    saved = os.environ.get("DATAOPS_BUS")
    os.environ["DATAOPS_BUS"] = "pubsub"
    try:
        yield names
    finally:
        if saved is None:
            os.environ.pop("DATAOPS_BUS", None)
        else:
            os.environ["DATAOPS_BUS"] = saved


def upload(gcs_server: GcsServer, name: str, text: str) -> tuple[str, int]:
    from google.cloud import storage

    bucket = storage.Client(project=gcs_server.project).create_bucket(f"landing-{uuid.uuid4().hex[:8]}")
    blob = bucket.blob(name)
    blob.upload_from_string(text)
    return f"gs://{bucket.name}/{name}", int(blob.generation)


def pull(project: str, subscription: str) -> list[Any]:
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, subscription)
    response = subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=30)
    if response.received_messages:
        subscriber.acknowledge(
            request={"subscription": path, "ack_ids": [m.ack_id for m in response.received_messages]}
        )
    return [m.message for m in response.received_messages]


def spec(uri: str, topics: dict[str, str]) -> dict[str, Any]:
    return {
        "source": {
            "uri": uri,
            "columns": [{"name": "sku", "required": True}, {"name": "qty", "type": "INT64"}],
        },
        "validate": {"notify": {"successTopic": topics["success"], "errorTopic": topics["error"]}},
        "load": {"table": "landing.items"},
    }


def test_a_gs_source_runs_and_its_success_is_published(
    gcs_server: GcsServer, topics: dict[str, str], tmp_path: Path, workdir: Path
) -> None:
    uri, generation = upload(gcs_server, "in/items.csv", GOOD)

    result = run_cli(
        "run", str(write_spec(tmp_path, spec(uri, topics))), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 0, result.stdout + result.stderr
    assert result.summary["phase"] == "Succeeded"
    assert query(workdir, "SELECT sku, qty FROM landing.items ORDER BY sku") == [
        ("A1", 3),
        ("B2", 5),
        ("C3", 7),
    ]
    messages = pull(gcs_server.project, topics["success"])
    assert len(messages) == 1
    assert dict(messages[0].attributes) == {
        "run": "run",
        "namespace": "default",
        "file": uri,
        "generation": str(generation),
        "outcome": "success",
        "rowsIn": "3",
        "rowsOut": "3",
        "rowsRejected": "0",
        "reason": "Validated",
    }
    body = json.loads(messages[0].data)
    assert (body["file"], body["rowsOut"], body["table"]) == (uri, 3, "landing.items")
    assert pull(gcs_server.project, topics["error"]) == []


def test_a_bad_gs_file_publishes_its_error_naming_the_row(
    gcs_server: GcsServer, topics: dict[str, str], tmp_path: Path, workdir: Path
) -> None:
    uri, _ = upload(gcs_server, "in/items.csv", BAD)

    result = run_cli(
        "run", str(write_spec(tmp_path, spec(uri, topics))), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 1
    assert "items.csv row 2 column qty: type:INT64" in result.summary["message"]
    messages = pull(gcs_server.project, topics["error"])
    assert len(messages) == 1
    attributes = messages[0].attributes
    assert (attributes["file"], attributes["outcome"], attributes["rowsRejected"]) == (uri, "error", "1")
    assert attributes["reason"] == "RowsRejected"
    body = json.loads(messages[0].data)
    assert body["rejects"] == [
        {"row": 2, "column": "qty", "rule": "type:INT64", "message": "qty: 'five' is not a valid INT64"}
    ]
    assert query(workdir, "SELECT file, row_number FROM landing.items_rejects") == [(uri, 2)]
    assert pull(gcs_server.project, topics["success"]) == []


def test_a_missing_topic_fails_validation_naming_the_topic_and_the_role(
    gcs_server: GcsServer, topics: dict[str, str], tmp_path: Path, workdir: Path
) -> None:
    uri, _ = upload(gcs_server, "in/items.csv", GOOD)
    missing = dict(topics, success="no-such-topic")

    result = run_cli(
        "run", str(write_spec(tmp_path, spec(uri, missing))), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 1
    message = result.summary["stages"][0]["message"]
    assert f"projects/{gcs_server.project}/topics/no-such-topic does not exist" in message
    assert "roles/pubsub.publisher" in message
    assert "Traceback" not in result.stdout + result.stderr


def test_a_missing_gs_object_fails_naming_its_uri(
    gcs_server: GcsServer, topics: dict[str, str], tmp_path: Path, workdir: Path
) -> None:
    uri, _ = upload(gcs_server, "in/items.csv", GOOD)
    gone = uri.replace("items.csv", "gone.csv")

    result = run_cli(
        "run", str(write_spec(tmp_path, spec(gone, topics))), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 1
    assert f"{gone}: no such object" in result.summary["message"]
    messages = pull(gcs_server.project, topics["error"])
    assert [m.attributes["file"] for m in messages] == [gone]


def test_a_local_run_refuses_a_bucket_workdir_saying_where_it_belongs(tmp_path: Path) -> None:
    spec_file = write_spec(tmp_path, spec("gs://landing/in/items.csv", {"success": "ok", "error": "bad"}))

    result = run_cli("run", str(spec_file), "--workdir", "gs://staging/work")

    assert result.code == 2
    assert "gs://bucket/prefix workdirs are for stage pods" in " ".join(result.stderr.split())
    assert not (ROOT / "gs:").exists()
