"""Google's JSON error shape, as the loopback doubles answer it.

``{"error": {"code", "message", "status", ...}}``: the HTTP code, a message, the canonical status name,
and what the service adds: ``details`` (``google.rpc.ErrorInfo`` with a reason, Dataflow and the Data
Lineage and Dataplex APIs) or ``errors`` (``reason``/``message``/``domain``, BigQuery's legacy list).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}


def canonical_status(code: int) -> str:
    """The status name Google gives an HTTP code when the service names no other."""
    return STATUS.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")


def error_body(code: int, status: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


def google_error(
    code: int, status: str, message: str, reason: str = "", domain: str = "", **metadata: str
) -> web.Response:
    """An error answer; with ``reason``, one ``ErrorInfo`` detail of ``domain`` carrying ``metadata``."""
    details = []
    if reason:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": domain,
                "metadata": metadata,
            }
        )
    return web.json_response(error_body(code, status, message, details=details), status=code)
