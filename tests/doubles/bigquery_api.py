"""A BigQuery double: a loopback HTTP server speaking the subset of BigQuery REST v2 the project uses.

The real ``google-cloud-bigquery`` client runs against it unchanged::

    bigquery.Client(project=..., credentials=AnonymousCredentials(),
                    client_options={"api_endpoint": double.endpoint})

Served: ``datasets`` insert/get/list/delete, ``tables`` insert/get/patch/list/delete and ``tabledata.list``,
``jobs.insert`` (query and load jobs; loads from ``gs://`` read through the GCS JSON API at
``STORAGE_EMULATOR_HOST``, or uploaded multipart or resumable on ``/upload/bigquery/v2``), ``jobs.get``,
``jobs.cancel``, ``jobs.getQueryResults`` and ``jobs.query``. Jobs run at insert and are DONE in the
insert's answer; they keep their configuration (labels included) and statistics (bytes processed and
billed). Errors are BigQuery's: ``{"error": {"code", "message", "errors": [{"reason", ...}], "status"}}``,
409 ``duplicate`` for a job id seen before.

:class:`Faults` injects what production meets: a query failing with the serialization conflict, a job
failing with any reason, the answer to a ``jobs.insert`` lost after the job ran, a permission denied on a
resource, a quota or rate limit.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.bigquery_engine import Engine
from tests.doubles.bigquery_http import make_handler
from tests.doubles.bigquery_types import ApiError, Outcome, ms, result_rows

PROJECT = "dataops-test"
SERIALIZE = "Could not serialize access to table {table} due to concurrent update"
PERMISSION_MESSAGE = "Access Denied: {kind} {resource}: Permission {permission} denied on {lower} {resource} (or it may not exist)."
QUOTA_MESSAGES = {
    "quotaExceeded": "Quota exceeded: Your project exceeded quota for imports per project. For more information,"
    " see https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
    "rateLimitExceeded": "Exceeded rate limits: too many api requests per user per method for this user_method."
    " For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
}


@dataclass
class _JobFault:
    pattern: re.Pattern[str]
    times: int
    reason: str
    message: str


@dataclass
class Faults:
    """What goes wrong next. Each rule counts down and then stops applying."""

    job_failures: list[_JobFault] = field(default_factory=list)
    lost_inserts: int = 0
    insert_errors: list[tuple[int, str, str]] = field(default_factory=list)
    denied: dict[str, str] = field(
        default_factory=dict
    )  # resource ("dataset.table", "project") -> permission

    def serialization_conflict(self, pattern: str, times: int = 1, table: str | None = None) -> None:
        """The next ``times`` query jobs whose text matches ``pattern`` fail as a MERGE that lost a race."""
        name = table or "{table}"
        self.job_failures.append(
            _JobFault(re.compile(pattern, re.I | re.S), times, "invalidQuery", SERIALIZE.format(table=name))
        )

    def fail_jobs(self, pattern: str, reason: str, message: str, times: int = 1) -> None:
        """The next ``times`` jobs whose query text or destination matches ``pattern`` fail with ``reason``."""
        self.job_failures.append(_JobFault(re.compile(pattern, re.I | re.S), times, reason, message))

    def lose_insert_responses(self, times: int = 1) -> None:
        """The next ``times`` jobs.insert calls run their job, then drop the connection unanswered."""
        self.lost_inserts += times

    def quota(self, reason: str = "quotaExceeded", times: int = 1) -> None:
        """The next ``times`` jobs.insert calls are refused with 403 ``reason`` (no job is created)."""
        self.insert_errors += [(403, reason, QUOTA_MESSAGES[reason])] * times

    def deny(self, resource: str, permission: str) -> None:
        """``resource`` (``dataset.table``, ``dataset`` or ``project``) refuses ``permission``."""
        self.denied[resource] = permission

    def take_job_failure(self, text: str) -> _JobFault | None:
        for fault in self.job_failures:
            if fault.times > 0 and fault.pattern.search(text):
                fault.times -= 1
                return fault
        return None


class BigQueryDouble:
    """The server, its engine and its faults. ``endpoint`` is the ``api_endpoint`` of a client."""

    def __init__(self, path: Path, project: str = PROJECT, gcs_endpoint: str | None = None) -> None:
        self.engine = Engine(path, project, gcs_endpoint=gcs_endpoint)
        self.project = project
        self.faults = Faults()
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.results: dict[tuple[str, str], Outcome] = {}
        self.requests: list[tuple[str, str]] = []
        self.uploads: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="bigquery-double", daemon=True)

    def start(self) -> BigQueryDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.engine.close()

    def client(self, location: str | None = None) -> Any:
        """A real ``google.cloud.bigquery.Client`` pointed at this double, with anonymous credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            location=location,
            client_options={"api_endpoint": self.endpoint},
        )

    def job_list(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Jobs in the order they were inserted (optionally only ``LOAD`` or ``QUERY`` ones)."""
        with self._lock:
            jobs = list(self.jobs.values())
        return [j for j in jobs if kind is None or j["configuration"]["jobType"] == kind]

    # ---- jobs ---------------------------------------------------------------------------------------

    def insert_job(
        self, project: str, resource: dict[str, Any], upload: bytes | None = None
    ) -> dict[str, Any]:
        ref = dict(resource.get("jobReference") or {})
        job_id = ref.get("jobId") or f"job_{uuid.uuid4().hex}"
        location = ref.get("location") or self.engine.location
        config = dict(resource.get("configuration") or {})
        with self._lock:
            if (project, job_id) in self.jobs:
                raise ApiError(409, "duplicate", f"Already Exists: Job {project}:{location}.{job_id}")
            if self.faults.denied.get("project") == "bigquery.jobs.create":
                raise ApiError(
                    403,
                    "accessDenied",
                    f"Access Denied: Project {project}: User does not have bigquery.jobs.create permission in"
                    f" project {project}.",
                )
            if self.faults.insert_errors:
                code, reason, message = self.faults.insert_errors.pop(0)
                raise ApiError(code, reason, message)
            kind = "LOAD" if "load" in config else "QUERY" if "query" in config else "UNKNOWN"
            config["jobType"] = kind
            created = ms()
            job: dict[str, Any] = {
                "kind": "bigquery#job",
                "etag": uuid.uuid4().hex,
                "id": f"{project}:{location}.{job_id}",
                "selfLink": f"{self.endpoint}/bigquery/v2/projects/{project}/jobs/{job_id}?location={location}",
                "user_email": "anonymous@dataops-test.iam.gserviceaccount.com",
                "jobReference": {"projectId": project, "jobId": job_id, "location": location},
                "configuration": config,
                "status": {"state": "RUNNING"},
                "statistics": {"creationTime": created, "startTime": created},
            }
            self.jobs[(project, job_id)] = job
        outcome = Outcome()
        try:
            outcome = self._run(config, kind, upload)
        except ApiError as exc:
            job["status"] = {"state": "DONE", "errorResult": exc.proto(), "errors": [exc.proto()]}
        except Exception as exc:  # a bug in the double: the job fails (reason doubleBug), nothing hangs
            error = ApiError(500, "doubleBug", f"{type(exc).__name__}: {exc}").proto()
            job["status"] = {"state": "DONE", "errorResult": error, "errors": [error]}
        else:
            job["status"] = {"state": "DONE"}
        self.results[(project, job_id)] = outcome
        job["statistics"] |= _statistics(kind, outcome)
        return job

    def _run(self, config: dict[str, Any], kind: str, upload: bytes | None) -> Outcome:
        if kind == "LOAD":
            dest = config["load"]["destinationTable"]
            target = f"{dest['datasetId']}.{dest['tableId']}"
            self._check_permission(target, "bigquery.tables.updateData")
            self._job_fault(target, target)
            return self.engine.run_load(config["load"], upload)
        if kind == "QUERY":
            text = config["query"].get("query", "")
            for dataset, table in sorted(_names(text)):
                self._check_permission(f"{dataset}.{table}", None)
            self._job_fault(text, _merge_target(text))
            return self.engine.run_query(config["query"])
        raise ApiError(400, "invalid", "The BigQuery double runs query and load jobs only")

    def _job_fault(self, text: str, table: str) -> None:
        fault = self.faults.take_job_failure(text)
        if fault is not None:
            code = 400 if fault.reason in ("invalidQuery", "invalid") else 500
            raise ApiError(code, fault.reason, fault.message.replace("{table}", f"{self.project}:{table}"))

    def _check_permission(self, resource: str, permission: str | None) -> None:
        dataset = resource.split(".")[0]
        for key, kind in ((resource, "Table"), (dataset, "Dataset")):
            denied = self.faults.denied.get(key)
            if denied and (permission is None or denied == permission):
                name = f"{self.project}:{key}"
                raise ApiError(
                    403,
                    "accessDenied",
                    PERMISSION_MESSAGE.format(
                        kind=kind, resource=name, permission=denied, lower=kind.lower()
                    ),
                )

    def get_job(self, project: str, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self.jobs.get((project, job_id))
        if job is None:
            raise ApiError(404, "notFound", f"Not found: Job {project}:{self.engine.location}.{job_id}")
        return job

    def query_results(self, project: str, job_id: str, params: dict[str, str]) -> dict[str, Any]:
        job = self.get_job(project, job_id)
        error = job["status"].get("errorResult")
        if error:
            code = {"notFound": 404, "accessDenied": 403, "duplicate": 409}.get(error["reason"], 400)
            raise ApiError(code, error["reason"], error["message"])
        outcome = self.results[(project, job_id)]
        body: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job["jobReference"],
            "jobComplete": True,
            "cacheHit": False,
            "totalBytesProcessed": str(outcome.bytes_processed),
        }
        if outcome.dml_rows is not None:
            body["numDmlAffectedRows"] = str(outcome.dml_rows)
        if outcome.schema is not None:
            start = int(params.get("startIndex") or params.get("pageToken") or 0)
            size = params.get("maxResults")
            rows = outcome.rows or []
            end = len(rows) if size is None else start + int(size)
            int64 = params.get("formatOptions.useInt64Timestamp", "false").lower() == "true"
            body |= {
                "schema": {"fields": outcome.schema},
                "totalRows": str(len(rows)),
                "rows": result_rows(rows[start:end], outcome.schema, int64),
            }
            if end < len(rows):
                body["pageToken"] = str(end)
        return body


def _statistics(kind: str, outcome: Outcome) -> dict[str, Any]:
    ended = ms()
    stats: dict[str, Any] = {"endTime": ended}
    if kind == "QUERY":
        stats["totalBytesProcessed"] = str(outcome.bytes_processed)
        stats["query"] = {
            "totalBytesProcessed": str(outcome.bytes_processed),
            "totalBytesBilled": str(outcome.bytes_billed),
            "billingTier": 1,
            "cacheHit": False,
            "statementType": outcome.statement_type or "SCRIPT",
        }
        if outcome.dml_rows is not None:
            stats["query"]["numDmlAffectedRows"] = str(outcome.dml_rows)
    elif kind == "LOAD":
        stats["load"] = outcome.load
    return stats


def _names(text: str) -> set[tuple[str, str]]:
    """``dataset.table`` names in a query's text (backquoted or bare), for permission checks."""
    found = set()
    for match in re.finditer(r"`?([A-Za-z_][\w-]*)`?\.`?([A-Za-z_]\w*)`?(?:\.`?([A-Za-z_]\w*)`?)?", text):
        parts = [p for p in match.groups() if p]
        if len(parts) >= 2:
            found.add((parts[-2], parts[-1]))
    return found


def _merge_target(text: str) -> str:
    match = re.search(r"\bMERGE\s+(?:INTO\s+)?`?([\w-]+)`?\.`?(\w+)`?", text, re.I)
    return f"{match.group(1)}.{match.group(2)}" if match else "unknown.unknown"


@pytest.fixture
def bigquery_double(tmp_path: Path) -> Iterator[BigQueryDouble]:
    """A fresh BigQuery double per test, on its own DuckDB file (GCS: ``STORAGE_EMULATOR_HOST``)."""
    double = BigQueryDouble(tmp_path / "bigquery.duckdb").start()
    try:
        yield double
    finally:
        double.stop()
