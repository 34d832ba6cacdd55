"""One JSON-over-HTTPS session to a Google API for the catalog writers: auth, retries, readable errors.

Credentials are Application Default Credentials (Workload Identity on GKE), or none against a local
endpoint (tests). 429 and 5xx are retried with exponential backoff (``google.api_core.retry``); a 403
names the role that is missing and on what.
"""

from __future__ import annotations

from typing import Any

import requests
from google.api_core import retry as api_retry

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
TRANSIENT = frozenset({429, 500, 502, 503, 504})


class CatalogError(Exception):
    """A catalog request failed; the message says what, where and (for 403) which role is missing."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class TransientCatalogError(CatalogError):
    """429 or 5xx: worth trying again."""


def _google_error(response: requests.Response) -> tuple[str, str, dict[str, str]]:
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return response.text[:500], "", {}
    meta: dict[str, str] = {}
    for detail in error.get("details") or []:
        if str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
            meta = {str(k): str(v) for k, v in (detail.get("metadata") or {}).items()}
    return str(error.get("message", "")), str(error.get("status", "")), meta


class GoogleRest:
    """Requests to one API endpoint; ``role`` is what a 403 says to grant."""

    def __init__(
        self,
        endpoint: str,
        role: str,
        anonymous: bool = False,
        session: requests.Session | None = None,
        retry_seconds: float = 120.0,
        initial_backoff: float = 1.0,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.role = role
        if session is not None:
            self.session = session
        elif anonymous:
            self.session = requests.Session()
        else:
            import google.auth
            from google.auth.transport.requests import AuthorizedSession

            credentials, _ = google.auth.default(scopes=SCOPES)
            self.session = AuthorizedSession(credentials)
        self._retry = api_retry.Retry(
            predicate=api_retry.if_exception_type(TransientCatalogError, requests.ConnectionError),
            initial=initial_backoff,
            maximum=30.0,
            multiplier=2.0,
            timeout=retry_seconds,
        )

    def call(
        self,
        method: str,
        path: str,
        what: str,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (),
    ) -> dict[str, Any] | None:
        """The response's JSON; None for a status listed in ``ok`` (e.g. 409 for an existing resource)."""
        result: dict[str, Any] | None = self._retry(self._once)(method, path, what, json, params, ok)
        return result

    def _once(
        self,
        method: str,
        path: str,
        what: str,
        json: dict[str, Any] | None,
        params: dict[str, Any] | None,
        ok: tuple[int, ...],
    ) -> dict[str, Any] | None:
        response = self.session.request(
            method, f"{self.endpoint}/{path}", json=json, params=params, timeout=60
        )
        if response.status_code < 400:
            body = response.json() if response.content else {}
            return body if isinstance(body, dict) else {}
        if response.status_code in ok:
            return None
        message, status, meta = _google_error(response)
        code = response.status_code
        if code in TRANSIENT:
            raise TransientCatalogError(f"could not {what} ({code} {status}): {message}", code, status)
        if code == 403:
            permission = f" ({meta['permission']})" if meta.get("permission") else ""
            raise CatalogError(
                f"could not {what}: permission denied{permission}. Grant the stage's service account "
                f"{self.role}. The API said: {message}",
                code,
                status,
            )
        raise CatalogError(f"could not {what} ({code} {status}): {message}", code, status)
