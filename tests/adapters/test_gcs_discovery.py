"""IngestionSource discovery of a gs:// prefix: fake-gcs-server's OBJECT_FINALIZE notifications on the
Pub/Sub emulator first, the listing as the fallback; PipelineRuns created through kmock's Kubernetes API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kmock
import pytest

from controller.ingestion import discover_files, parse_source_spec
from controller.kube import Kube
from controller.settings import Settings
from controller.spec import IngestionSourceSpec
from tests.emulators import GcsServer

pytestmark = pytest.mark.integration

TEMPLATE = {"source": {"columns": [{"name": "id", "type": "INT64"}]}, "load": {"table": "raw.items"}}


@pytest.fixture
async def kube(cluster: kmock.KubernetesEmulator) -> AsyncIterator[Kube]:
    client = Kube.from_environment()
    yield client
    await client.close()


class Landing:
    """A bucket of fake-gcs-server, a subscription of its own on the server's notification topic, and
    the IngestionSource watching ``gs://BUCKET/in/``."""

    def __init__(self, server: GcsServer, subscribe: bool = True) -> None:
        from google.cloud import pubsub_v1, storage

        self.server = server
        self.bucket = storage.Client(project=server.project).create_bucket(f"landing-{uuid.uuid4().hex[:8]}")
        self.subscription = f"drops-{uuid.uuid4().hex[:8]}"
        self.subscriber = pubsub_v1.SubscriberClient()
        if subscribe:
            self.subscribe()
        self.settings = Settings(pubsub_project=server.project)
        self.body: dict[str, Any] = {
            "apiVersion": "dataops.io/v1alpha1",
            "kind": "IngestionSource",
            "metadata": {"name": "drops", "namespace": "default", "uid": "s1"},
            "spec": {
                "files": {
                    "prefix": f"gs://{self.bucket.name}/in/",
                    "pattern": "*.csv",
                    "notifications": {"subscription": self.subscription},
                    "template": TEMPLATE,
                    "maxConcurrentRuns": 10,
                    "pollSeconds": 60,
                }
            },
        }
        spec = parse_source_spec(self.body)
        assert isinstance(spec, IngestionSourceSpec), spec
        self.spec = spec

    def subscribe(self) -> None:
        self.subscriber.create_subscription(
            request={
                "name": self.subscriber.subscription_path(self.server.project, self.subscription),
                "topic": self.subscriber.topic_path(self.server.project, self.server.notification_topic),
            }
        )

    def lose_notification(self, name: str) -> None:
        """Take the object's notification off the subscription (acknowledged unseen, as if lost)."""
        path = self.subscriber.subscription_path(self.server.project, self.subscription)
        for _ in range(30):
            got = self.subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=10)
            ids = [m.ack_id for m in got.received_messages]
            if ids:
                self.subscriber.acknowledge(request={"subscription": path, "ack_ids": ids})
            if any(m.message.attributes.get("objectId") == name for m in got.received_messages):
                return
        raise AssertionError(f"the notification of {name} never arrived")

    def drop(self, name: str, text: str = "id\n1\n") -> int:
        blob = self.bucket.blob(name)
        blob.upload_from_string(text)
        return int(blob.generation)

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket.name}/{name}"

    async def discover(self, kube: Kube, listing: bool) -> dict[str, Any]:
        """One poll; ``listing``: whether it is a resync (the listing is due) or notifications only."""
        now = datetime.now(UTC)
        files = dict((self.body.get("status") or {}).get("files") or {})
        if listing:
            files.pop("lastListed", None)
        else:
            files["lastListed"] = now.isoformat()
        self.body["status"] = {"files": files}
        status = await discover_files(self.body, self.spec, kube, now, self.settings)
        self.body["status"] = {"files": status}
        return status


async def source_runs(kube: Kube) -> list[dict[str, Any]]:
    return await kube.list("PipelineRun", "default", {"dataops.io/ingestion-source": "drops"})


async def poll_until(step: Callable[[], Awaitable[Any]], done: Callable[[], Awaitable[bool]]) -> None:
    """Notification polls until ``done`` (each poll waits up to the pull timeout for messages)."""
    for _ in range(30):
        await step()
        if await done():
            return
    raise AssertionError("no notification arrived within 30 polls")


async def test_a_dropped_object_runs_once_though_notification_and_listing_both_see_it(
    gcs_server: GcsServer, kube: Kube
) -> None:
    landing = Landing(gcs_server)
    generation = landing.drop("in/2026/items.csv")

    async def one_run() -> bool:
        return len(await source_runs(kube)) == 1

    await poll_until(lambda: landing.discover(kube, listing=False), one_run)
    status = await landing.discover(kube, listing=True)
    await landing.discover(kube, listing=False)

    runs = await source_runs(kube)
    assert len(runs) == 1
    assert runs[0]["spec"]["source"]["uri"] == f"{landing.uri('in/2026/items.csv')}#{generation}"
    assert runs[0]["metadata"]["annotations"]["dataops.io/object-generation"] == str(generation)
    assert status["runsCreated"] == 1
    assert status["watermark"] == {"generation": str(generation), "uri": landing.uri("in/2026/items.csv")}


async def test_an_object_whose_notification_was_lost_is_found_by_listing(
    gcs_server: GcsServer, kube: Kube
) -> None:
    landing = Landing(gcs_server)
    landing.drop("in/items.csv")
    landing.lose_notification("in/items.csv")

    await landing.discover(kube, listing=False)
    assert await source_runs(kube) == []

    await landing.discover(kube, listing=True)
    runs = await source_runs(kube)
    assert [r["metadata"]["annotations"]["dataops.io/object-uri"] for r in runs] == [
        landing.uri("in/items.csv")
    ]


async def test_a_second_generation_of_an_object_is_a_new_run(gcs_server: GcsServer, kube: Kube) -> None:
    landing = Landing(gcs_server)
    first = landing.drop("in/items.csv", "id\n1\n")
    await landing.discover(kube, listing=True)
    second = landing.drop("in/items.csv", "id\n2\n")

    async def two_runs() -> bool:
        return len(await source_runs(kube)) == 2

    await poll_until(lambda: landing.discover(kube, listing=False), two_runs)
    await landing.discover(kube, listing=True)

    runs = await source_runs(kube)
    assert sorted(r["spec"]["source"]["uri"] for r in runs) == sorted(
        [f"{landing.uri('in/items.csv')}#{first}", f"{landing.uri('in/items.csv')}#{second}"]
    )
    assert len({r["metadata"]["name"] for r in runs}) == 2


async def test_objects_outside_the_prefix_or_pattern_make_no_run(gcs_server: GcsServer, kube: Kube) -> None:
    landing = Landing(gcs_server)
    landing.drop("in/notes.txt")
    landing.drop("elsewhere/items.csv")
    landing.drop("in/last.csv")

    async def one_run() -> bool:
        return len(await source_runs(kube)) == 1

    await poll_until(lambda: landing.discover(kube, listing=False), one_run)
    await landing.discover(kube, listing=True)

    runs = await source_runs(kube)
    assert [r["metadata"]["annotations"]["dataops.io/object-uri"] for r in runs] == [
        landing.uri("in/last.csv")
    ]


async def test_a_missing_subscription_is_named_and_the_listing_still_runs_new_files(
    gcs_server: GcsServer, kube: Kube
) -> None:
    landing = Landing(gcs_server, subscribe=False)
    landing.drop("in/items.csv")

    status = await landing.discover(kube, listing=True)

    assert f"subscriptions/{landing.subscription} does not exist" in status["notificationProblem"]
    assert len(await source_runs(kube)) == 1


async def test_a_notification_left_for_lack_of_room_comes_back_and_is_run_later(
    gcs_server: GcsServer, kube: Kube
) -> None:
    landing = Landing(gcs_server)
    landing.body["spec"]["files"]["maxConcurrentRuns"] = 1
    spec = parse_source_spec(landing.body)
    assert isinstance(spec, IngestionSourceSpec)
    landing.spec = spec
    landing.drop("in/a.csv")
    landing.drop("in/b.csv")

    async def one_run() -> bool:
        return len(await source_runs(kube)) == 1

    async def two_runs() -> bool:
        return len(await source_runs(kube)) == 2

    await poll_until(lambda: landing.discover(kube, listing=False), one_run)
    first = (await source_runs(kube))[0]["metadata"]["name"]
    await kube.patch_status("PipelineRun", first, "default", {"phase": "Succeeded"})
    await poll_until(lambda: landing.discover(kube, listing=False), two_runs)

    uris = sorted(r["metadata"]["annotations"]["dataops.io/object-uri"] for r in await source_runs(kube))
    assert uris == [landing.uri("in/a.csv"), landing.uri("in/b.csv")]
