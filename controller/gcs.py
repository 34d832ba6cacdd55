"""GCS for the controller: list a ``gs://`` prefix, and pull the bucket's object notifications.

The only controller module that talks to GCS and Pub/Sub (the controller never imports the data
plane). Both calls are synchronous client calls; :mod:`controller.ingestion` runs them in a thread.

- Listing: ``google-cloud-storage``, honouring ``STORAGE_EMULATOR_HOST`` (fake-gcs-server in tests).
  It needs ``roles/storage.objectViewer`` on the bucket.
- Notifications: the bucket's Pub/Sub notification config (``gcloud storage buckets notifications
  create gs://BUCKET --topic=TOPIC --event-types=OBJECT_FINALIZE``) publishes one message per new object
  version with the attributes ``eventType``, ``bucketId``, ``objectId`` and ``objectGeneration``; each
  IngestionSource pulls them from a subscription of its own, honouring ``PUBSUB_EMULATOR_HOST``. It needs
  ``roles/pubsub.subscriber`` on that subscription. Messages for other buckets, prefixes or patterns are
  acknowledged and dropped (a subscription filter on ``attributes.bucketId`` saves the traffic).
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import SubscriberClient
from google.cloud.storage import Client as StorageClient

from controller.objects import ListingError, ObjectVersion

FINALIZE = "OBJECT_FINALIZE"
PULL_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Prefix:
    bucket: str
    name: str  # the object-name prefix ("" for the whole bucket)

    @classmethod
    def parse(cls, uri: str) -> Prefix:
        rest = uri.removeprefix("gs://")
        bucket, _, name = rest.partition("/")
        if not uri.startswith("gs://") or not bucket:
            raise ListingError(f"spec.files.prefix {uri!r}: expected gs://BUCKET/PREFIX")
        return cls(bucket, name)

    def matches(self, bucket: str, name: str, pattern: str) -> bool:
        """The object is under this prefix and its name below the prefix matches ``pattern``."""
        if bucket != self.bucket or not name.startswith(self.name) or name.endswith("/"):
            return False
        rel = name[len(self.name) :].lstrip("/")
        return fnmatch.fnmatch(rel, pattern) and not rel.rsplit("/", 1)[-1].startswith(".")

    def uri(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}"


@cache
def _storage() -> Any:
    return StorageClient(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)


@cache
def _subscriber() -> Any:
    return SubscriberClient()


def _explain(exc: Exception, what: str, role: str, resource: str) -> ListingError:
    if isinstance(exc, gexc.Forbidden | gexc.PermissionDenied | gexc.Unauthorized):
        return ListingError(
            f"{what}: permission denied: grant {role} on {resource} to the controller's service account"
        )
    if isinstance(exc, gexc.NotFound):
        return ListingError(f"{what}: {resource} does not exist")
    return ListingError(f"{what}: {exc}")


def list_gcs(prefix_uri: str, pattern: str) -> list[ObjectVersion]:
    """Every object version under the prefix whose name matches, oldest first."""
    prefix = Prefix.parse(prefix_uri)
    try:
        blobs = list(_storage().list_blobs(prefix.bucket, prefix=prefix.name or None))
    except gexc.GoogleAPIError as exc:
        raise _explain(
            exc, f"listing {prefix_uri}", "roles/storage.objectViewer", f"bucket {prefix.bucket!r}"
        ) from None
    found = [
        ObjectVersion(str(b.generation), prefix.uri(b.name))
        for b in blobs
        if prefix.matches(prefix.bucket, b.name, pattern)
    ]
    return sorted(found, key=ObjectVersion.key)


@dataclass
class Notified:
    """What one pull brought: new object versions (each with its ack id), and messages to just ack."""

    objects: dict[ObjectVersion, list[str]] = field(default_factory=dict)
    other_ack_ids: list[str] = field(default_factory=list)


def object_of(attributes: dict[str, str], data: bytes) -> tuple[str, str, str] | None:
    """(bucket, name, generation) of an OBJECT_FINALIZE notification; None for any other message."""
    if attributes.get("eventType") != FINALIZE:
        return None
    bucket, name, generation = (
        attributes.get("bucketId"),
        attributes.get("objectId"),
        attributes.get("objectGeneration"),
    )
    if not generation:
        try:
            generation = str(json.loads(data or b"{}").get("generation") or "")
        except ValueError:
            generation = ""
    if not (bucket and name and generation and generation.isdigit()):
        return None
    return bucket, name, generation


def subscription_path(project: str, subscription: str) -> str:
    return f"projects/{project}/subscriptions/{subscription}"


def pull_notifications(
    project: str, subscription: str, prefix_uri: str, pattern: str, max_messages: int
) -> Notified:
    """Pull once (waiting at most a couple of seconds); sort the messages into ours and others."""
    prefix = Prefix.parse(prefix_uri)
    path = subscription_path(project, subscription)
    what = f"pulling notifications for {prefix_uri}"
    try:
        response = _subscriber().pull(
            request={"subscription": path, "max_messages": max_messages},
            timeout=PULL_TIMEOUT_SECONDS,
            retry=None,
        )
    except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
        return Notified()
    except gexc.GoogleAPIError as exc:
        raise _explain(exc, what, "roles/pubsub.subscriber", f"subscription {path}") from None
    out = Notified()
    for received in response.received_messages:
        found = object_of(dict(received.message.attributes), bytes(received.message.data))
        if found is None or not prefix.matches(found[0], found[1], pattern):
            out.other_ack_ids.append(received.ack_id)
            continue
        version = ObjectVersion(found[2], prefix.uri(found[1]))
        out.objects.setdefault(version, []).append(received.ack_id)
    return out


def settle(project: str, subscription: str, ack_ids: list[str], nack_ids: list[str]) -> None:
    """Acknowledge what was handled; give back what is left for a later poll."""
    path = subscription_path(project, subscription)
    try:
        if ack_ids:
            _subscriber().acknowledge(request={"subscription": path, "ack_ids": ack_ids})
        if nack_ids:
            _subscriber().modify_ack_deadline(
                request={"subscription": path, "ack_ids": nack_ids, "ack_deadline_seconds": 0}
            )
    except gexc.InvalidArgument:  # expired ack ids: the messages come back, and their runs exist
        return
    except gexc.GoogleAPIError as exc:
        raise _explain(
            exc, "acknowledging notifications", "roles/pubsub.subscriber", f"subscription {path}"
        ) from None
