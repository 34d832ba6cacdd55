"""The controller itself (kopf, on kmock's Kubernetes API) watching a gs:// prefix of fake-gcs-server,
its notifications on the Pub/Sub emulator: a dropped file becomes exactly one PipelineRun."""

from __future__ import annotations

import uuid
from typing import Any

import kmock
import pytest

from tests.emulators import GcsServer
from tests.kmock_cluster import list_runs, operator, wait_for

pytestmark = pytest.mark.integration

SOURCES = "/apis/dataops.io/v1alpha1/namespaces/default/ingestionsources"


@pytest.fixture(autouse=True)
def notifications(monkeypatch: pytest.MonkeyPatch, gcs_server: GcsServer) -> None:
    """The controller reads the server's notification topic on the Pub/Sub emulator, polling each second."""
    monkeypatch.setenv("DATAOPS_PUBSUB_PROJECT", gcs_server.project)
    monkeypatch.setenv("DATAOPS_NOTIFICATION_POLL_SECONDS", "1")


async def test_the_operator_runs_a_dropped_object_once(
    cluster: kmock.KubernetesEmulator, gcs_server: GcsServer
) -> None:
    from google.cloud import pubsub_v1, storage

    bucket = storage.Client(project=gcs_server.project).create_bucket(f"landing-{uuid.uuid4().hex[:8]}")
    subscriber = pubsub_v1.SubscriberClient()
    subscription = f"drops-{uuid.uuid4().hex[:8]}"
    subscriber.create_subscription(
        request={
            "name": subscriber.subscription_path(gcs_server.project, subscription),
            "topic": subscriber.topic_path(gcs_server.project, gcs_server.notification_topic),
        }
    )
    source = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "drops", "namespace": "default", "uid": "s1", "resourceVersion": "1"},
        "spec": {
            "files": {
                "prefix": f"gs://{bucket.name}/in/",
                "notifications": {"subscription": subscription},
                "pollSeconds": 3600,  # only the first poll lists: later runs come from notifications
                "template": {
                    "source": {"columns": [{"name": "id", "type": "INT64"}]},
                    "load": {"table": "raw.t"},
                },
            }
        },
    }
    await cluster.post(SOURCES, json=source)
    async with operator() as runner:

        async def listed() -> bool:
            resp = await cluster.get(f"{SOURCES}/drops")
            body = await resp.json()
            return bool(((body.get("status") or {}).get("files") or {}).get("lastListed"))

        await wait_for(listed, timeout=90.0)
        blob = bucket.blob("in/items.csv")
        blob.upload_from_string("id\n1\n")

        async def one_run() -> list[dict[str, Any]]:
            return await list_runs(cluster)

        found = await wait_for(one_run, timeout=90.0)
    assert runner.exception is None
    assert [r["spec"]["source"]["uri"] for r in found] == [
        f"gs://{bucket.name}/in/items.csv#{blob.generation}"
    ]
    assert len(await list_runs(cluster)) == 1
