"""The Pub/Sub adapter (``google-cloud-pubsub``): the only module that talks to Pub/Sub.

With ``PUBSUB_EMULATOR_HOST`` set, the client library talks to that emulator (no credentials); the
project is ``PUBSUB_PROJECT_ID``, else ``GOOGLE_CLOUD_PROJECT``. Pulls are synchronous (the
consolidation pulls a known set of ids, then acknowledges them after its merge commits).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud import pubsub_v1

from beam.bus.port import BusError, BusRefused, OutgoingMessage, ReceivedMessage

log = logging.getLogger("dataops.bus")

EMULATOR_PROJECT = "dataops-local"
ACK_CHUNK = 1000
"""Ack ids per acknowledge request (a request stays far below Pub/Sub's 512 KiB limit)."""
MAX_PULL = 1000
"""Messages asked for in one pull (Pub/Sub returns at most 1,000)."""
PUBLISH_TIMEOUT_SECONDS = 120.0
_RETRY = Retry(initial=0.1, maximum=5.0, multiplier=2.0, timeout=60.0)


def project_from_env(env: Mapping[str, str]) -> str:
    """The Pub/Sub project: ``PUBSUB_PROJECT_ID``, ``GOOGLE_CLOUD_PROJECT``, or a fixed one on the emulator."""
    for name in ("PUBSUB_PROJECT_ID", "GOOGLE_CLOUD_PROJECT"):
        if env.get(name):
            return env[name]
    if env.get("PUBSUB_EMULATOR_HOST"):
        return EMULATOR_PROJECT
    raise BusRefused("no Pub/Sub project: set GOOGLE_CLOUD_PROJECT (or PUBSUB_PROJECT_ID)")


class PubSubBus:
    """A :class:`~beam.bus.port.MessageBus` on Google Cloud Pub/Sub (or its emulator)."""

    def __init__(self, project: str, *, create_missing: bool = True, batch_messages: int = 1000) -> None:
        self.project = project
        self.create_missing = create_missing
        self.publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=batch_messages, max_bytes=9 * 1024 * 1024, max_latency=0.05
            )
        )
        self.subscriber = pubsub_v1.SubscriberClient()

    def _topic(self, topic: str) -> str:
        return str(self.publisher.topic_path(self.project, topic))

    def _subscription(self, subscription: str) -> str:
        return str(self.subscriber.subscription_path(self.project, subscription))

    def ensure(self, topic: str, subscription: str, ack_deadline_seconds: int) -> None:
        """Create what is missing. Production topics come from Terraform: a service account allowed to
        publish and pull but not to create is fine (a missing topic then fails the publish, by name)."""
        if not self.create_missing:
            return
        with contextlib.suppress(gexc.AlreadyExists, gexc.PermissionDenied):
            self.publisher.create_topic(request={"name": self._topic(topic)}, retry=_RETRY)
        with contextlib.suppress(gexc.AlreadyExists, gexc.PermissionDenied):
            self.subscriber.create_subscription(
                request={
                    "name": self._subscription(subscription),
                    "topic": self._topic(topic),
                    "ack_deadline_seconds": int(ack_deadline_seconds),
                },
                retry=_RETRY,
            )

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        path = self._topic(topic)
        futures = [self.publisher.publish(path, m.data, **dict(m.attributes)) for m in messages]
        try:
            return [str(f.result(timeout=PUBLISH_TIMEOUT_SECONDS)) for f in futures]
        except gexc.NotFound as exc:
            raise BusRefused(
                f"Pub/Sub topic {path} does not exist: create it (terraform/gke does) or fix its name,"
                f" and grant roles/pubsub.publisher on it to the service account that publishes; {exc.message}"
            ) from None
        except gexc.PermissionDenied as exc:
            raise BusRefused(
                f"permission denied publishing to Pub/Sub topic {path}: grant roles/pubsub.publisher on"
                f" that topic to the service account the stage runs as; {exc.message}"
            ) from None
        except (gexc.ResourceExhausted, gexc.RetryError, gexc.DeadlineExceeded) as exc:
            raise BusError(
                f"publishing to Pub/Sub topic {path} still failed after retries with backoff (quota?): {exc}"
            ) from None

    def pull(self, subscription: str, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        try:
            response = self.subscriber.pull(
                request={
                    "subscription": self._subscription(subscription),
                    "max_messages": min(int(max_messages), MAX_PULL),
                },
                timeout=max(timeout, 1.0),
                retry=None,
            )
        except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
            return []
        except gexc.NotFound as exc:
            raise BusRefused(
                f"Pub/Sub subscription {self._subscription(subscription)} does not exist: create it"
                " (terraform/gke does) or fix its name, and grant roles/pubsub.subscriber on it to the"
                f" service account that pulls; {exc.message}"
            ) from None
        except gexc.PermissionDenied as exc:
            raise BusRefused(
                f"permission denied pulling from Pub/Sub subscription {self._subscription(subscription)}:"
                f" grant roles/pubsub.subscriber on it to the service account; {exc.message}"
            ) from None
        return [_received(r) for r in response.received_messages]

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        path = self._subscription(subscription)
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = list(ack_ids[start : start + ACK_CHUNK])
            try:
                self.subscriber.acknowledge(request={"subscription": path, "ack_ids": chunk}, retry=_RETRY)
            except (
                gexc.InvalidArgument
            ) as exc:  # expired ack ids: the messages come back and are proved merged
                log.warning("acknowledge %s: %s", subscription, exc.message)

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        path = self._subscription(subscription)
        for start in range(0, len(ack_ids), ACK_CHUNK):
            chunk = list(ack_ids[start : start + ACK_CHUNK])
            try:
                self.subscriber.modify_ack_deadline(
                    request={"subscription": path, "ack_ids": chunk, "ack_deadline_seconds": 0}, retry=_RETRY
                )
            except gexc.InvalidArgument as exc:
                log.warning("modify_ack_deadline %s: %s", subscription, exc.message)

    def close(self) -> None:
        self.publisher.stop()
        self.subscriber.close()


def _received(r: Any) -> ReceivedMessage:
    return ReceivedMessage(
        ack_id=r.ack_id,
        message_id=r.message.message_id,
        data=bytes(r.message.data),
        attributes=dict(r.message.attributes),
        delivery_attempt=int(r.delivery_attempt or 1),
    )
