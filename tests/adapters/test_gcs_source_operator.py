"""The controller itself (kopf, on kmock's Kubernetes API) watching a gs:// prefix of fake-gcs-server,
its notifications on the Pub/Sub emulator: a dropped file becomes exactly one PipelineRun."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kopf.testing import KopfRunner

from tests.emulators import GcsServer

pytestmark = pytest.mark.integration

RUNS = "/apis/dataops.io/v1alpha1/namespaces/default/pipelineruns"
SOURCES = "/apis/dataops.io/v1alpha1/namespaces/default/ingestionsources"


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_server: GcsServer
) -> AsyncIterator[kmock.KubernetesEmulator]:
    for res, kind in [
        ("dataops.io/v1alpha1/pipelineruns", "PipelineRun"),
        ("dataops.io/v1alpha1/ingestionsources", "IngestionSource"),
        ("batch/v1/jobs", "Job"),
        ("batch/v1/cronjobs", "CronJob"),
        ("v1/pods", "Pod"),
        ("v1/events", "Event"),
        ("v1/namespaces", "Namespace"),
        ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition"),
    ]:
        kmock.resources[res] = {
            "kind": kind,
            "namespaced": kind not in ("Namespace", "CustomResourceDefinition"),
            "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u", "namespace": "default"}}],
        "users": [{"name": "u", "user": {"token": "test"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("DATAOPS_WORKER_IMAGE", "worker:test")
    monkeypatch.setenv("DATAOPS_PUBSUB_PROJECT", gcs_server.project)
    monkeypatch.setenv("DATAOPS_NOTIFICATION_POLL_SECONDS", "1")
    yield kmock


async def wait_for(probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.2)


async def runs(k: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    resp = await k.get(RUNS)
    data = await resp.json() if resp.status == 200 else {}
    return [r for r in data.get("items", []) if r.get("metadata")]


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
    with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "controller.handlers"]) as runner:

        async def listed() -> bool:
            resp = await cluster.get(f"{SOURCES}/drops")
            body = await resp.json()
            return bool(((body.get("status") or {}).get("files") or {}).get("lastListed"))

        await wait_for(listed)
        blob = bucket.blob("in/items.csv")
        blob.upload_from_string("id\n1\n")

        async def one_run() -> list[dict[str, Any]]:
            return await runs(cluster)

        found = await wait_for(one_run)
    assert runner.exception is None
    assert [r["spec"]["source"]["uri"] for r in found] == [
        f"gs://{bucket.name}/in/items.csv#{blob.generation}"
    ]
    assert len(await runs(cluster)) == 1
