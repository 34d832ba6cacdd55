"""fake-gcs-server answers the real google-cloud-storage client, and notifies Pub/Sub of new objects."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.emulators import GcsServer

pytestmark = pytest.mark.integration


def test_an_uploaded_object_is_listed_and_announced(gcs_server: GcsServer) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1, storage

    subscriber = pubsub_v1.SubscriberClient()
    sub = subscriber.subscription_path(gcs_server.project, f"probe-{uuid.uuid4().hex[:8]}")
    topic = subscriber.topic_path(gcs_server.project, gcs_server.notification_topic)
    subscriber.create_subscription(request={"name": sub, "topic": topic})

    client = storage.Client(
        project=gcs_server.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    bucket = client.create_bucket(f"landing-{uuid.uuid4().hex[:8]}")
    bucket.blob("in/2026/items.csv").upload_from_string("id\n1\n")

    listed = [(b.name, b.generation) for b in client.list_blobs(bucket.name, prefix="in/")]
    assert [name for name, _ in listed] == ["in/2026/items.csv"]
    assert listed[0][1]

    response = subscriber.pull(request={"subscription": sub, "max_messages": 10}, timeout=30)
    events = [m.message for m in response.received_messages]
    assert events, "no OBJECT_FINALIZE notification arrived"
    attributes = events[0].attributes
    assert attributes["eventType"] == "OBJECT_FINALIZE"
    assert attributes["bucketId"] == bucket.name
    assert attributes["objectId"] == "in/2026/items.csv"
    assert json.loads(events[0].data)["name"] == "in/2026/items.csv"
