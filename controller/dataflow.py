"""The one module that talks to Dataflow: launch a stage as a flex template, poll it, cancel it.

A thin async client of the Dataflow REST API v1b3 (``https://dataflow.googleapis.com``):

- ``projects.locations.flexTemplates.launch`` starts a stage's job from the stage template;
- ``projects.locations.jobs.get`` polls its ``currentState``;
- ``projects.locations.jobs.update`` with ``requestedState: JOB_STATE_CANCELLED`` cancels it;
- ``projects.locations.jobs.messages.list`` (``JOB_MESSAGE_ERROR``) says why a job failed;
- ``projects.locations.jobs.getMetrics`` reads the pipeline's user counters (rows read and written);
- ``projects.locations.jobs.list`` by name finds the active job of a name again.

Job names are deterministic (:func:`job_name`), and Dataflow refuses a second *active* job of a name
(409 ``ALREADY_EXISTS``): a launch repeated after a controller restart re-attaches to the running job
instead of starting another one.

Credentials: Application Default Credentials (on GKE, Workload Identity through the metadata server),
or none at all against a local endpoint (tests). 429 and quota errors are retried with exponential
backoff; a 403 names the role that is missing and on what.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from controller.settings import DataflowSettings

log = logging.getLogger("dataops.dataflow")

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)

# Job states (Job.currentState), grouped as the controller reads them.
DONE = "JOB_STATE_DONE"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
TERMINAL_STATES = frozenset({DONE, FAILED, CANCELLED, "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"})

_NAME_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]+")
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
CONTROLLER_IDENTITY = "The controller's service account"


class DataflowError(Exception):
    """A Dataflow request failed; ``temporary`` says whether trying again later may help."""

    def __init__(self, message: str, status: int = 0, reason: str = "", temporary: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.temporary = temporary


class PermissionDenied(DataflowError):
    """403: the controller's identity lacks a role; the message names it and the resource."""


class AlreadyExists(DataflowError):
    """409: an active job of this name exists."""


class JobNotFound(DataflowError):
    """404: no job of this id in the project and region."""


@dataclass(frozen=True)
class DataflowJob:
    """The fields of a Dataflow ``Job`` resource the controller reads."""

    id: str
    name: str
    state: str
    labels: dict[str, str]
    resource: dict[str, Any]

    @classmethod
    def from_resource(cls, job: dict[str, Any]) -> DataflowJob:
        return cls(
            id=str(job.get("id", "")),
            name=str(job.get("name", "")),
            state=str(job.get("currentState") or "JOB_STATE_UNKNOWN"),
            labels=dict(job.get("labels") or {}),
            resource=job,
        )

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: limit - 9].rstrip('-_')}-{digest}"


def job_name(namespace: str, run: str, stage: str, attempt: int) -> str:
    """``<namespace>-<run>-<stage>-<attempt>``, valid for Dataflow (``[a-z]([-a-z0-9]*[a-z0-9])?``).

    The namespace is part of it: job names are unique per project and region, not per namespace.
    """
    base = _NAME_INVALID.sub("-", f"{namespace}-{run}".lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"dataops-{base}".rstrip("-")
    suffix = f"-{stage}-{attempt}"
    return _short(base, 1024 - len(suffix)) + suffix


def consolidation_job_name(source: str, window: str) -> str:
    """``dataops-consolidate-<namespace>-<name>-<window>`` of an IngestionSource (``namespace/name``).

    ``window`` names what the cycle merges (its watermarks and ids): a cycle retried after its pod died
    asks for the same name, and Dataflow's 409 for an active job of that name re-attaches it.
    """
    base = _NAME_INVALID.sub("-", f"dataops-consolidate-{source}".lower()).strip("-")
    suffix = f"-{_NAME_INVALID.sub('-', window.lower()).strip('-')}"
    return _short(base, 1024 - len(suffix)) + suffix


def consolidation_labels(settings: DataflowSettings, source: str, cycle: str, window: str) -> dict[str, str]:
    """The labels of a consolidation job: the installation's, then the source, its cycle and window."""
    namespace, _, name = source.rpartition("/")
    return {
        **{label_value(k): label_value(v) for k, v in settings.labels.items()},
        "managed-by": "dataops-operator",
        "dataops-namespace": label_value(namespace),
        "dataops-source": label_value(name),
        "dataops-cycle": label_value(cycle),
        "dataops-window": label_value(window),
    }


def label_value(text: str) -> str:
    """A GCP label value: lowercase letters, digits, ``_`` and ``-``, at most 63 characters."""
    return _short(_LABEL_INVALID.sub("-", text.lower()), 63)


def job_labels(
    settings: DataflowSettings, namespace: str, run: str, uid: str, stage: str, attempt: int
) -> dict[str, str]:
    return {
        **{label_value(k): label_value(v) for k, v in settings.labels.items()},
        "managed-by": "dataops-operator",
        "dataops-namespace": label_value(namespace),
        "dataops-run": label_value(run),
        "dataops-run-uid": label_value(uid),
        "dataops-stage": label_value(stage),
        "dataops-attempt": str(attempt),
    }


def _google_error(response: httpx.Response) -> tuple[str, str, dict[str, str]]:
    """(message, status, ErrorInfo metadata) of Google's JSON error shape."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return response.text[:500], "", {}
    metadata: dict[str, str] = {}
    for detail in error.get("details") or []:
        if str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo"):
            metadata = {str(k): str(v) for k, v in (detail.get("metadata") or {}).items()}
            metadata.setdefault("reason", str(detail.get("reason", "")))
    return str(error.get("message", "")), str(error.get("status", "")), metadata


def _permission_message(
    what: str, settings: DataflowSettings, detail: str, meta: dict[str, str], identity: str
) -> str:
    permission = meta.get("permission", "")
    needed = f" ({permission})" if permission else ""
    roles = f"roles/dataflow.developer on project {settings.project}{needed}"
    if settings.service_account:
        roles += (
            f", and roles/iam.serviceAccountUser on the worker service account {settings.service_account}"
        )
    return f"Dataflow refused to {what}: permission denied. {identity} needs {roles}. Dataflow said: {detail}"


def location_url(settings: DataflowSettings) -> str:
    """The REST collection of the project and region: ``.../v1b3/projects/P/locations/R``."""
    return f"{settings.endpoint.rstrip('/')}/v1b3/projects/{settings.project}/locations/{settings.region}"


def launch_request(
    settings: DataflowSettings, name: str, parameters: Mapping[str, str], labels: Mapping[str, str]
) -> dict[str, Any]:
    """The LaunchFlexTemplateRequest of one stage job: template, parameters and runtime environment."""
    s = settings
    environment: dict[str, Any] = {
        "additionalUserLabels": dict(labels),
        "ipConfiguration": "WORKER_IP_PUBLIC" if s.use_public_ips else "WORKER_IP_PRIVATE",
    }
    optional = {
        "serviceAccountEmail": s.service_account,
        "network": s.network,
        "subnetwork": s.subnetwork,
        "tempLocation": s.temp_location,
        "stagingLocation": s.staging_location,
    }
    environment.update({k: v for k, v in optional.items() if v})
    if s.max_workers:
        environment["maxWorkers"] = s.max_workers
    return {
        "launchParameter": {
            "jobName": name,
            "containerSpecGcsPath": s.template,
            "parameters": dict(parameters),
            "environment": environment,
        }
    }


TokenSource = Callable[[], Awaitable[str | None]]


def adc_token_source() -> TokenSource:
    """Bearer tokens from Application Default Credentials (Workload Identity on GKE), refreshed when due.

    The credentials are looked up at the first request, so a controller without any still starts.
    """
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    lock = asyncio.Lock()
    found: list[Any] = []

    async def token() -> str | None:
        async with lock:
            if not found:
                try:
                    credentials, _ = await asyncio.to_thread(google.auth.default, scopes=list(SCOPES))
                except google.auth.exceptions.DefaultCredentialsError as exc:
                    raise DataflowError(
                        f"no Google credentials for Dataflow: {exc} (on GKE, bind the controller's "
                        "Kubernetes service account to a Google service account with Workload Identity)"
                    ) from None
                found.append(credentials)
            credentials = found[0]
            if not credentials.valid:
                request = google.auth.transport.requests.Request()
                await asyncio.to_thread(credentials.refresh, request)
            return str(credentials.token)

    return token


async def _no_token() -> str | None:
    return None


class DataflowClient:
    """Launch, get, cancel, list and read the messages of Dataflow jobs in one project and region."""

    def __init__(
        self,
        settings: DataflowSettings,
        token: TokenSource | None = None,
        http: httpx.AsyncClient | None = None,
        attempts: int = 6,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
        identity: str = CONTROLLER_IDENTITY,
    ) -> None:
        self.settings = settings
        self.identity = identity  # who launches, as a 403 names it
        self._token = token or (_no_token if settings.anonymous else adc_token_source())
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(60.0))
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds

    async def close(self) -> None:
        await self._http.aclose()

    @property
    def _base(self) -> str:
        return location_url(self.settings)

    async def _request(
        self,
        method: str,
        path: str,
        what: str,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """One call, retried with backoff on 429 (quota, rate) and 5xx; errors mapped to ours."""
        delay = self.backoff_seconds
        for attempt in range(1, self.attempts + 1):
            headers = {}
            token = await self._token()
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = await self._http.request(
                    method, self._base + path, json=json, params=params, headers=headers
                )
            except httpx.HTTPError as exc:
                if attempt == self.attempts:
                    raise DataflowError(f"Dataflow unreachable to {what}: {exc}", temporary=True) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_seconds)
                continue
            if response.status_code < 400:
                body = response.json() if response.content else {}
                return body if isinstance(body, dict) else {}
            message, status, meta = _google_error(response)
            code = response.status_code
            if code in TRANSIENT_STATUS and attempt < self.attempts:
                wait = _retry_after(response) or delay
                log.info("Dataflow %s %s (%s), retry %d in %.1fs", what, code, status, attempt, wait)
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.max_backoff_seconds)
                continue
            raise self._error(what, code, status, message, meta)
        raise AssertionError("unreachable")

    def _error(self, what: str, code: int, status: str, message: str, meta: dict[str, str]) -> DataflowError:
        reason = meta.get("reason", "") or status
        if code == 403:
            return PermissionDenied(
                _permission_message(what, self.settings, message, meta, self.identity), code, reason
            )
        if code == 409:
            return AlreadyExists(message, code, reason)
        if code == 404:
            return JobNotFound(f"Dataflow could not {what}: {message}", code, reason)
        if code == 429:
            return DataflowError(
                f"Dataflow quota exhausted to {what} after {self.attempts} attempts: {message}",
                code,
                reason,
                temporary=True,
            )
        return DataflowError(
            f"Dataflow could not {what} ({code} {status}): {message}", code, reason, temporary=code >= 500
        )

    async def launch(
        self, name: str, parameters: Mapping[str, str], labels: Mapping[str, str]
    ) -> DataflowJob:
        """Launch a job from the stage template; if an active job of this name exists, that job.

        ``labels["dataops-run-uid"]`` must match on the existing job: a job of another run is refused.
        """
        try:
            body = await self._request(
                "POST",
                "/flexTemplates:launch",
                f"launch job {name}",
                json=launch_request(self.settings, name, parameters, labels),
            )
        except AlreadyExists as exc:
            existing = await self.find_active(name)
            if existing is None:
                raise DataflowError(
                    f"Dataflow says a job named {name} is active, but none is listed: {exc}", temporary=True
                ) from None
            uid = labels.get("dataops-run-uid")
            if uid and existing.labels.get("dataops-run-uid") not in (None, uid):
                raise DataflowError(
                    f"an active Dataflow job named {name} ({existing.id}) belongs to another run "
                    f"(uid {existing.labels.get('dataops-run-uid')}); cancel it or rename the run",
                    409,
                    "ALREADY_EXISTS",
                ) from None
            log.info("Dataflow job %s already active as %s: re-attached", name, existing.id)
            return existing
        return DataflowJob.from_resource(body.get("job") or {})

    async def get(self, job_id: str) -> DataflowJob:
        body = await self._request(
            "GET", f"/jobs/{job_id}", f"get job {job_id}", params={"view": "JOB_VIEW_SUMMARY"}
        )
        return DataflowJob.from_resource(body)

    async def find_active(self, name: str) -> DataflowJob | None:
        """The active job of this name, if any (``jobs.list`` with ``filter=ACTIVE`` and ``name``)."""
        params = {"filter": "ACTIVE", "name": name}
        while True:
            body = await self._request("GET", "/jobs", f"list jobs named {name}", params=params)
            for job in body.get("jobs") or []:
                if job.get("name") == name:
                    return DataflowJob.from_resource(job)
            token = body.get("nextPageToken")
            if not token:
                return None
            params = {**params, "pageToken": str(token)}

    async def cancel(self, job_id: str) -> DataflowJob | None:
        """Ask Dataflow to cancel a job; a job already finished or gone is left as it is."""
        try:
            body = await self._request(
                "PUT",
                f"/jobs/{job_id}",
                f"cancel job {job_id}",
                json={"requestedState": CANCELLED},
                params={"updateMask": "requestedState"},
            )
        except JobNotFound:
            return None
        except DataflowError as exc:
            if exc.status != 400:
                raise
            job = await self.get(job_id)  # a terminal job cannot be cancelled: nothing to do
            if not job.terminal:
                raise
            return job
        return DataflowJob.from_resource(body)

    async def counters(self, job_id: str, namespace: str = "dataops") -> dict[str, int]:
        """The job's committed user counters of one namespace (``jobs.getMetrics``), summed over steps."""
        body = await self._request("GET", f"/jobs/{job_id}/metrics", f"read the metrics of job {job_id}")
        found: dict[str, int] = {}
        for update in body.get("metrics") or []:
            name = update.get("name") or {}
            context = name.get("context") or {}
            if name.get("origin") != "user" or context.get("namespace") != namespace:
                continue
            if str(context.get("tentative", "")).lower() == "true":
                continue  # attempted values; the committed ones come beside them
            try:
                value = int(update.get("scalar", 0))
            except (TypeError, ValueError):
                continue
            found[str(name.get("name", ""))] = found.get(str(name.get("name", "")), 0) + value
        return found

    async def error_messages(self, job_id: str, limit: int = 5) -> list[str]:
        """The job's JOB_MESSAGE_ERROR texts, oldest first (at most ``limit``)."""
        body = await self._request(
            "GET",
            f"/jobs/{job_id}/messages",
            f"read the messages of job {job_id}",
            params={"minimumImportance": "JOB_MESSAGE_ERROR", "pageSize": "100"},
        )
        messages = [
            str(m.get("messageText", ""))
            for m in body.get("jobMessages") or []
            if m.get("messageImportance") == "JOB_MESSAGE_ERROR" and m.get("messageText")
        ]
        return messages[:limit]


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None
