"""A small Kubernetes REST client for the test control plane: paths in, JSON out, API errors typed.

It speaks the API directly (with `requests`) so that tests and the node agent say exactly which request
they make; the operator under test uses its own client. Credentials are a client certificate or a bearer
token, always verified against the cluster's CA.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

Json = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error Status (`code`, `reason`, `message` as it sent them)."""

    def __init__(self, method: str, path: str, code: int, status: Json) -> None:
        self.code = code
        self.reason = str(status.get("reason", ""))
        self.message = str(status.get("message", status))
        self.status = status
        super().__init__(f"{method} {path}: {code} {self.reason}: {self.message}")


class WatchExpired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


@dataclass(frozen=True)
class Credentials:
    """How a client proves who it is: a client certificate pair, or a bearer token."""

    cert: tuple[Path, Path] | None = None
    token: str | None = None


class KubeApi:
    def __init__(self, server: str, ca_file: Path, credentials: Credentials, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.ca_file = ca_file
        self.credentials = credentials
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy, no REQUESTS_CA_BUNDLE: this CA only
        self._session.verify = str(ca_file)
        if credentials.cert is not None:
            self._session.cert = (str(credentials.cert[0]), str(credentials.cert[1]))
        if credentials.token is not None:
            self._session.headers["Authorization"] = f"Bearer {credentials.token}"

    def with_token(self, token: str) -> KubeApi:
        """The same server, as whoever `token` belongs to (e.g. a ServiceAccount)."""
        return KubeApi(self.server, self.ca_file, Credentials(token=token), self.timeout)

    def close(self) -> None:
        self._session.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Json | None = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        response = self._session.request(
            method,
            self.server + path,
            params=params,
            timeout=self.timeout,
            data=None if body is None else json.dumps(body),
            headers={"Content-Type": content_type} if body is not None else None,
        )
        return _checked(method, path, response)

    def text(self, path: str) -> str:
        """A plain-text endpoint (``/metrics``, ``/livez?verbose``)."""
        response = self._session.get(self.server + path, timeout=self.timeout)
        response.raise_for_status()
        return response.text

    def get(self, path: str, **params: Any) -> Json:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: Json, **params: Any) -> Json:
        return self.request("POST", path, body=body, params=params or None)

    def replace(self, path: str, body: Json) -> Json:
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, patch: Json) -> Json:
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def delete(
        self,
        path: str,
        *,
        propagation: str | None = None,
        grace_period: int | None = None,
        uid: str | None = None,
    ) -> Json:
        options: Json = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation is not None:
            options["propagationPolicy"] = propagation
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        return self.request("DELETE", path, body=options)

    def exists(self, path: str) -> bool:
        try:
            self.get(path)
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    def watch(
        self, path: str, resource_version: str, timeout_seconds: int = 60, **params: Any
    ) -> tuple[requests.Response, Iterator[Json]]:
        """A watch from `resource_version`: the response (close it to stop) and its events, in order.

        Raises WatchExpired when the server says the version is gone (list again then)."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            **params,
        }
        response = self._session.get(
            self.server + path, params=query, stream=True, timeout=(self.timeout, timeout_seconds + 30)
        )
        if response.status_code != 200:
            _checked("WATCH", path, response)

        def events() -> Iterator[Json]:
            for line in response.iter_lines():
                if not line:
                    continue
                event: Json = json.loads(line)
                if event.get("type") == "ERROR":
                    if event["object"].get("code") == 410:
                        raise WatchExpired(path)
                    raise ApiError("WATCH", path, int(event["object"].get("code", 500)), event["object"])
                yield event

        return response, events()


def _checked(method: str, path: str, response: requests.Response) -> Json:
    try:
        data: Json = response.json() if response.content else {}
    except ValueError:
        data = {"message": response.text}
    if response.status_code >= 400:
        raise ApiError(method, path, response.status_code, data)
    return data
