"""The one module that talks to the Kubernetes API for the controller's own requests (kopf has its own).

Thin: create-if-absent, get, list by label, delete, merge patches of an object and of its status.
Errors are mapped to :class:`KubeError` with the HTTP status, so callers decide what is temporary.

It speaks JSON over aiohttp (the HTTP client kopf uses too) with a fixed pool of kept-alive
connections: the controller makes several requests per run, and a general-purpose client with typed
models cost it about three times the CPU per request. The kubeconfig, in-cluster service accounts and
the credential plugins are read by lightkube's config loader, so every way a user authenticates works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx2 as httpx
from lightkube.config.client_adapter import user_auth, verify_cluster
from lightkube.config.kubeconfig import KubeConfig

from controller.crd import GROUP, VERSION

# One request's limit: a connection that went silent fails within this, and the run's timer retries it
# on a fresh connection.
REQUEST_TIMEOUT_SECONDS = 20.0
# Connections to the API server, all kept alive: more requests than this wait for a free one. A pool
# that keeps fewer alive than it opens makes a TLS handshake for most requests under load.
CONNECTIONS = 32
FIELD_MANAGER = "dataops-operator"
PAGE = 500  # objects per page of a listing


@dataclass(frozen=True)
class Kind:
    api: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str


KINDS: dict[str, Kind] = {
    "Job": Kind("/apis/batch/v1", "jobs"),
    "CronJob": Kind("/apis/batch/v1", "cronjobs"),
    "Pod": Kind("/api/v1", "pods"),
    "PipelineRun": Kind(f"/apis/{GROUP}/{VERSION}", "pipelineruns"),
    "IngestionSource": Kind(f"/apis/{GROUP}/{VERSION}", "ingestionsources"),
}


class KubeError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        return self.status in (408, 409, 429) or self.status >= 500


class Credentials:
    """The Authorization header a kubeconfig's user calls for, refreshed when the server answers 401.

    lightkube's auth flows do the reading: a static token, a token file that the kubelet rotates, or a
    credential plugin (``exec``) such as GKE's. Client certificates live in the TLS context instead.
    """

    def __init__(self, auth: httpx.Auth | None, server: str) -> None:
        self.auth, self.server = auth, server
        self.header: str | None = None
        self._lock = asyncio.Lock()

    async def get(self, stale: str | None = None) -> str | None:
        """The header; with ``stale`` (the one a 401 answered), a fresh one."""
        if self.auth is None:
            return None
        async with self._lock:
            if self.header is not None and self.header != stale:
                return self.header
            request = httpx.Request("GET", self.server)
            flow: AsyncGenerator[httpx.Request, httpx.Response] = self.auth.async_auth_flow(request)
            request = await flow.__anext__()
            if stale is not None and request.headers.get("Authorization") == stale:
                # The flow's own refresh: it reads the file or runs the plugin again on a 401.
                with contextlib.suppress(StopAsyncIteration):
                    request = await flow.asend(httpx.Response(401, request=request))
            await flow.aclose()
            self.header = request.headers.get("Authorization")
            return self.header


class Kube:
    """An async client for the objects a run owns."""

    def __init__(self, server: str, ssl_context: Any, credentials: Credentials) -> None:
        self.server = server.rstrip("/")
        self.credentials = credentials
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
        path = os.environ.get("KUBECONFIG")
        config = (KubeConfig.from_file(path) if path else KubeConfig.from_env()).get()
        if config is None or config.user is None:
            raise KubeError(500, "the kubeconfig names no context with a user")
        context = verify_cluster(config.cluster, config.user, config.abs_file)
        return cls(config.cluster.server, context, Credentials(user_auth(config.user), config.cluster.server))

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (aiohttp binds a session to it).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
                json_serialize=json.dumps,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        stale: str | None = None
        for _ in range(2):  # once more with fresh credentials after a 401
            header = await self.credentials.get(stale)
            headers = {"Accept": "application/json"}
            if header:
                headers["Authorization"] = header
            if data is not None:
                headers["Content-Type"] = content_type
            try:
                async with self._client().request(
                    method, self.server + path, params=params, data=data, headers=headers
                ) as response:
                    text = await response.text()
                    if response.status == 401 and header and stale is None:
                        stale = header
                        continue
                    if response.status >= 400:
                        raise _error(response.status, text, response.headers.get("Retry-After"))
                    return json.loads(text) if text else {}
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise KubeError(503, f"{method} {path}: {type(exc).__name__}: {exc}") from None
        raise KubeError(401, f"{method} {path}: the API server refused the credentials")

    async def create_if_absent(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the object; if it already exists (a replayed event), return the existing one."""
        meta = manifest["metadata"]
        namespace = meta.get("namespace") or "default"
        try:
            made = await self._request(
                "POST",
                _path(manifest["kind"], namespace),
                body=manifest,
                params={"fieldManager": FIELD_MANAGER},
            )
            return made, True
        except KubeError as exc:
            if exc.status != 409:
                raise
        return await self.get(manifest["kind"], meta["name"], namespace) or manifest, False

    async def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return await self._request("GET", _path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None, labels: dict[str, Any]) -> list[dict[str, Any]]:
        """Every object of a kind in a namespace (all namespaces if None) with these labels, page by page."""
        params = {"limit": str(PAGE)}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in labels.items())
        items: list[dict[str, Any]] = []
        while True:
            page = await self._request("GET", _path(kind, namespace), params=params)
            items.extend(page.get("items") or [])
            more = (page.get("metadata") or {}).get("continue")
            if not more:
                return items
            params = {**params, "continue": more}

    async def delete(self, kind: str, name: str, namespace: str | None) -> bool:
        """Delete with background propagation (its pods go too); False if it was already gone."""
        try:
            await self._request(
                "DELETE", _path(kind, namespace, name), params={"propagationPolicy": "Background"}
            )
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    async def patch_status(
        self,
        kind: str,
        name: str,
        namespace: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the status; with ``resource_version``, only onto that version (else 409 Conflict)."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._patch(_path(kind, namespace, name) + "/status", body)

    async def patch(self, kind: str, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the object (a ``metadata.resourceVersion`` in the body makes it conditional)."""
        return await self._patch(_path(kind, namespace, name), body)

    async def _patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request(
            "PATCH",
            path,
            body=body,
            params={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )


def _path(kind: str, namespace: str | None, name: str | None = None) -> str:
    spec = KINDS[kind]
    path = spec.api
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{spec.plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    return path


def _error(status: int, text: str, retry_after: str | None) -> KubeError:
    """The API server's Status as a KubeError; a body that is no Status (a 429 from API Priority and
    Fairness is plain text) keeps its first line, and Retry-After comes from the header or the details."""
    retry = float(retry_after) if retry_after and retry_after.isdigit() else None
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("kind") != "Status":
        first = text.strip().splitlines()[0] if text.strip() else f"HTTP {status}"
        return KubeError(status, first, retry)
    details = doc.get("details") or {}
    if details.get("retryAfterSeconds"):
        retry = float(details["retryAfterSeconds"])
    return KubeError(int(doc.get("code") or status), str(doc.get("message") or f"HTTP {status}"), retry)


__all__ = ["KINDS", "Kube", "KubeError"]
