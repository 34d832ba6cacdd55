"""The message-bus port: what the consolidation needs from Pub/Sub, and nothing more.

Delivery is at least once on every adapter: a pulled message is leased for the subscription's ack
deadline; unless it is acknowledged in time it is delivered again (with a new ack id). Consumers
therefore deduplicate on the business content of a message, never on its message id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_ACK_DEADLINE_SECONDS = 60
"""Ack deadline of the subscriptions the adapters create (Pub/Sub allows 10 to 600 seconds)."""


class BusError(Exception):
    """The bus refused an operation (missing topic, bad configuration, unreachable server)."""


class BusRefused(BusError):
    """A refusal that retrying will not cure: a missing topic or subscription, a missing permission.
    The message names the resource and, for a permission, the role to grant."""


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    data: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    ack_id: str
    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    delivery_attempt: int = 1


class MessageBus(Protocol):
    """Topics with subscriptions; at-least-once delivery with ack deadlines."""

    def ensure(self, topic: str, subscription: str, ack_deadline_seconds: int) -> None:
        """Create the topic and its subscription if they do not exist yet."""

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish every message (batched by the adapter); their message ids, once all are stored."""

    def pull(self, subscription: str, max_messages: int, timeout: float) -> list[ReceivedMessage]:
        """Up to ``max_messages`` deliverable messages, leased for the ack deadline; maybe none."""

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Acknowledge: the messages are not delivered again (a stale ack id is ignored)."""

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Give the leases back: the messages may be delivered again at once."""

    def close(self) -> None:
        """Release clients and connections."""
