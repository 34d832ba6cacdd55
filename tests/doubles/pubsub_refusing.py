"""A loopback Pub/Sub server that refuses: the real gRPC API (``google.pubsub.v1.Publisher`` and
``Subscriber``), every call answered ``PERMISSION_DENIED`` with the text Pub/Sub sends an identity that
lacks the role (``User not authorized to perform this action.``).

The emulator of the Google Cloud CLI cannot refuse anyone; this server can. The real
``google-cloud-pubsub`` client talks to it unchanged through ``PUBSUB_EMULATOR_HOST``. Requests are
taken as raw bytes and decoded with the client library's own message types, so a test can see which
resource each call named (:attr:`RefusingPubSub.calls`) and that nothing was accepted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from google.pubsub_v1 import types

DENIED = "User not authorized to perform this action."

# Method -> (request type, the field that names the resource), as in google/pubsub/v1/pubsub.proto.
PUBLISHER: dict[str, tuple[Any, str]] = {
    "CreateTopic": (types.Topic, "name"),
    "GetTopic": (types.GetTopicRequest, "topic"),
    "Publish": (types.PublishRequest, "topic"),
    "DeleteTopic": (types.DeleteTopicRequest, "topic"),
}
SUBSCRIBER: dict[str, tuple[Any, str]] = {
    "CreateSubscription": (types.Subscription, "name"),
    "GetSubscription": (types.GetSubscriptionRequest, "subscription"),
    "Pull": (types.PullRequest, "subscription"),
    "Acknowledge": (types.AcknowledgeRequest, "subscription"),
    "ModifyAckDeadline": (types.ModifyAckDeadlineRequest, "subscription"),
}


class RefusingPubSub:
    """``host:port`` of a gRPC server where every Publisher and Subscriber call is refused."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (method, resource named), in order
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", self._handlers(PUBLISHER)),
                grpc.method_handlers_generic_handler(
                    "google.pubsub.v1.Subscriber", self._handlers(SUBSCRIBER)
                ),
            )
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = f"127.0.0.1:{port}"

    def _handlers(self, methods: dict[str, tuple[Any, str]]) -> dict[str, grpc.RpcMethodHandler]:
        # No (de)serializers: the handler gets the request's bytes and would answer bytes.
        return {
            name: grpc.unary_unary_rpc_method_handler(self._refuse(name, kind, field))
            for name, (kind, field) in methods.items()
        }

    def _refuse(self, method: str, kind: Any, field: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
            named = str(getattr(kind.deserialize(request), field))
            with self._lock:
                self.calls.append((method, named))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, DENIED)
            raise AssertionError("unreachable: abort raises")

        return handler

    def methods(self) -> list[str]:
        with self._lock:
            return [m for m, _ in self.calls]

    def start(self) -> RefusingPubSub:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(timeout=10)


@contextmanager
def refusing_pubsub() -> Iterator[RefusingPubSub]:
    server = RefusingPubSub().start()
    try:
        yield server
    finally:
        server.stop()
