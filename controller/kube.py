"""The one module that talks to the Kubernetes API for the controller's own requests (kopf has its own).

Thin: create-if-absent, get, list by label, delete, status patch. Errors are mapped to
:class:`KubeError` with the HTTP status, so callers decide what is temporary.
"""

from __future__ import annotations

import os
from typing import Any

import httpx2 as httpx
from lightkube import ApiError, AsyncClient
from lightkube.config.kubeconfig import KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from controller.crd import GROUP, VERSION

PipelineRunResource = create_namespaced_resource(GROUP, VERSION, "PipelineRun", "pipelineruns")
IngestionSourceResource = create_namespaced_resource(GROUP, VERSION, "IngestionSource", "ingestionsources")

# Generic (dict) resources throughout: no typed decoding of every object, nothing lost on the way.
_KINDS: dict[str, Any] = {
    "Job": create_namespaced_resource("batch", "v1", "Job", "jobs"),
    "CronJob": create_namespaced_resource("batch", "v1", "CronJob", "cronjobs"),
    "Pod": create_namespaced_resource("", "v1", "Pod", "pods"),
    "PipelineRun": PipelineRunResource,
    "IngestionSource": IngestionSourceResource,
}


# One request's limit: a connection that went silent fails within this, and the run's timer retries it
# on a fresh connection.
REQUEST_TIMEOUT_SECONDS = 20.0


class KubeError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        return self.status in (408, 409, 429) or self.status >= 500


# What a request can raise: the API server's Status (ApiError), an HTTP error whose body is no Status (a
# 429 from API Priority and Fairness is plain text), or the connection failing or timing out.
_FAILURES = (ApiError, httpx.HTTPStatusError, httpx.TransportError)


def _error(exc: Exception) -> KubeError:
    if isinstance(exc, httpx.TransportError):
        return KubeError(503, f"{type(exc).__name__}: {exc}")
    if not isinstance(exc, ApiError):
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", 500) if response is not None else 500
        header = response.headers.get("Retry-After") if response is not None else None
        retry = float(header) if header and header.isdigit() else None
        return KubeError(int(code), str(exc).splitlines()[0], retry)
    status = exc.status.code or 500
    retry = None
    details = getattr(exc.status, "details", None)
    if details is not None and getattr(details, "retryAfterSeconds", None):
        retry = float(details.retryAfterSeconds)
    return KubeError(int(status), exc.status.message or str(exc), retry)


class Kube:
    """An async client for the objects a run owns."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
        path = os.environ.get("KUBECONFIG")
        config = KubeConfig.from_file(path) if path else KubeConfig.from_env()
        return cls(
            AsyncClient(
                config=config,
                field_manager="dataops-operator",
                timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
            )
        )

    async def close(self) -> None:
        await self.client.close()

    async def create_if_absent(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create the object; if it already exists (a replayed event), return the existing one."""
        kind = _KINDS[manifest["kind"]]
        meta = manifest["metadata"]
        try:
            made = await self.client.create(  # type: ignore[call-overload]
                kind.from_dict(manifest), namespace=meta.get("namespace")
            )
            return _as_dict(made), True
        except Exception as exc:  # lightkube raises ApiError, or the HTTP error when the body is no Status
            if _error(exc).status != 409:
                raise _error(exc) from None
        return await self.get(manifest["kind"], meta["name"], meta.get("namespace")) or manifest, False

    async def get(self, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return _as_dict(await self.client.get(_KINDS[kind], name, namespace=namespace))
        except _FAILURES as exc:
            error = _error(exc)
            if error.status == 404:
                return None
            raise error from None

    async def list(self, kind: str, namespace: str | None, labels: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return [
                _as_dict(o)
                async for o in self.client.list(_KINDS[kind], namespace=namespace or "*", labels=labels)
            ]
        except _FAILURES as exc:
            raise _error(exc) from None

    async def delete(self, kind: str, name: str, namespace: str | None) -> bool:
        """Delete with background propagation (its pods go too); False if it was already gone."""
        try:
            await self.client.delete(_KINDS[kind], name, namespace=namespace, cascade=_background())
            return True
        except _FAILURES as exc:
            error = _error(exc)
            if error.status == 404:
                return False
            raise error from None

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
        try:
            obj = await self.client.patch(
                _KINDS[kind].Status, name, body, namespace=namespace, patch_type=PatchType.MERGE
            )
            return _as_dict(obj)
        except _FAILURES as exc:
            raise _error(exc) from None

    async def patch(self, kind: str, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return _as_dict(
                await self.client.patch(
                    _KINDS[kind], name, body, namespace=namespace, patch_type=PatchType.MERGE
                )
            )
        except _FAILURES as exc:
            raise _error(exc) from None


def _background() -> Any:
    from lightkube.types import CascadeType

    return CascadeType.BACKGROUND


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    return obj.to_dict()  # type: ignore[no-any-return]


__all__ = ["IngestionSourceResource", "Kube", "KubeError", "PipelineRunResource"]
