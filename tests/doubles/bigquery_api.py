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

import email.parser
import email.policy
import json
import re
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.doubles.bigquery_engine import ApiError, Engine, Outcome, encode, ms

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
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
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
        except Exception as exc:  # a bug in the double: the job fails as with BigQuery's internal error
            error = ApiError(500, "internalError", f"{type(exc).__name__}: {exc}").proto()
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
                "rows": _rows(rows[start:end], outcome.schema, int64),
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


def _rows(rows: list[list[Any]], schema: list[dict[str, Any]], int64: bool) -> list[dict[str, Any]]:
    types = [f["type"] for f in schema]
    return [{"f": [{"v": encode(v, t, int64)} for v, t in zip(row, types, strict=True)]} for row in rows]


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


ROUTES = [
    ("POST", r"/projects/(?P<p>[^/]+)/datasets", "dataset_insert"),
    ("GET", r"/projects/(?P<p>[^/]+)/datasets", "dataset_list"),
    ("GET", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)", "dataset_get"),
    ("DELETE", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)", "dataset_delete"),
    ("POST", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables", "table_insert"),
    ("GET", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables", "table_list"),
    ("GET", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", "table_get"),
    ("PATCH", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", "table_patch"),
    ("PUT", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", "table_patch"),
    ("DELETE", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", "table_delete"),
    ("GET", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)/data", "table_data"),
    ("POST", r"/projects/(?P<p>[^/]+)/datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)/insertAll", "insert_all"),
    ("POST", r"/projects/(?P<p>[^/]+)/jobs", "job_insert"),
    ("GET", r"/projects/(?P<p>[^/]+)/jobs/(?P<j>[^/]+)", "job_get"),
    ("POST", r"/projects/(?P<p>[^/]+)/jobs/(?P<j>[^/]+)/cancel", "job_cancel"),
    ("GET", r"/projects/(?P<p>[^/]+)/queries/(?P<j>[^/]+)", "query_results"),
    ("POST", r"/projects/(?P<p>[^/]+)/queries", "query"),
]


class _Dropped(Exception):
    """The answer is lost: the connection closes without one."""


def _handler(double: BigQueryDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            double.requests.append((method, url.path))
            try:
                status, answer, headers = self._route(method, url.path, query, body)
            except _Dropped:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            except ApiError as exc:
                status, answer, headers = exc.code, exc.body(), {}
            except Exception as exc:  # a bug in the double: answered as BigQuery's internal error
                status, answer, headers = 500, ApiError(500, "internalError", repr(exc)).body(), {}
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(
            self, method: str, path: str, query: dict[str, str], body: bytes
        ) -> tuple[int, Any, dict[str, str]]:
            if path.startswith("/upload/bigquery/v2/"):
                return self._upload(method, path[len("/upload/bigquery/v2") :], query, body)
            if path.startswith("/bigquery/v2/"):
                path = path[len("/bigquery/v2") :]
            for verb, pattern, name in ROUTES:
                match = re.fullmatch(pattern, path)
                if verb == method and match:
                    args = match.groupdict()
                    payload = json.loads(body) if body else {}
                    return getattr(self, name)(args, query, payload)
            raise ApiError(
                404, "notFound", f"Not found: {method} {path} is not served by the BigQuery double"
            )

        # datasets and tables
        def dataset_insert(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            return 200, double.engine.create_dataset(body), {}

        def dataset_list(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            rows = double.engine.sql(
                "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = current_database() AND schema_name NOT IN ('main', 'information_schema', 'pg_catalog') ORDER BY 1"
            )
            return (
                200,
                {
                    "kind": "bigquery#datasetList",
                    "datasets": [double.engine.dataset_resource(r[0]) for r in rows],
                },
                {},
            )

        def dataset_get(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double._check_permission(a["d"], "bigquery.datasets.get")
            return 200, double.engine.dataset_resource(a["d"]), {}

        def dataset_delete(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double.engine.delete_dataset(a["d"], q.get("deleteContents", "false").lower() == "true")
            return 204, None, {}

        def table_insert(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            return 200, double.engine.create_table(a["d"], body), {}

        def table_list(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double.engine.require_dataset(a["d"])
            tables = [double.engine.table_resource(a["d"], t) for t in double.engine.list_tables(a["d"])]
            return 200, {"kind": "bigquery#tableList", "tables": tables, "totalItems": len(tables)}, {}

        def table_get(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double._check_permission(f"{a['d']}.{a['t']}", "bigquery.tables.get")
            return 200, double.engine.table_resource(a["d"], a["t"]), {}

        def table_patch(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            return 200, double.engine.patch_table(a["d"], a["t"], body), {}

        def table_delete(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double.engine.delete_table(a["d"], a["t"])
            return 204, None, {}

        def table_data(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double._check_permission(f"{a['d']}.{a['t']}", "bigquery.tables.getData")
            start = int(q.get("startIndex") or q.get("pageToken") or 0)
            limit = int(q["maxResults"]) if "maxResults" in q else None
            schema, rows, total = double.engine.list_rows(a["d"], a["t"], start, limit)
            int64 = q.get("formatOptions.useInt64Timestamp", "false").lower() == "true"
            answer: dict[str, Any] = {
                "kind": "bigquery#tableDataList",
                "totalRows": str(total),
                "rows": _rows(rows, schema, int64),
            }
            if start + len(rows) < total:
                answer["pageToken"] = str(start + len(rows))
            return 200, answer, {}

        def insert_all(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            double._check_permission(f"{a['d']}.{a['t']}", "bigquery.tables.updateData")
            double.engine.stream_rows(a["d"], a["t"], [r["json"] for r in body.get("rows", [])])
            return 200, {"kind": "bigquery#tableDataInsertAllResponse"}, {}

        # jobs
        def job_insert(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            job = double.insert_job(a["p"], body)
            self._maybe_drop()
            return 200, job, {}

        def _maybe_drop(self) -> None:
            with double._lock:
                if double.faults.lost_inserts > 0:
                    double.faults.lost_inserts -= 1
                    raise _Dropped()

        def job_get(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            return 200, double.get_job(a["p"], a["j"]), {}

        def job_cancel(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            return 200, {"kind": "bigquery#jobCancelResponse", "job": double.get_job(a["p"], a["j"])}, {}

        def query_results(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            return 200, double.query_results(a["p"], a["j"], q), {}

        def query(self, a: dict[str, str], q: dict[str, str], body: dict[str, Any]) -> Any:
            config = {
                k: body[k] for k in ("query", "useLegacySql", "queryParameters", "parameterMode") if k in body
            }
            resource = {
                "jobReference": {"location": body.get("location")},
                "configuration": {"query": config, "labels": body.get("labels", {})},
            }
            job = double.insert_job(a["p"], resource)
            error = job["status"].get("errorResult")
            if error:
                raise ApiError(
                    403 if error["reason"] == "accessDenied" else 400, error["reason"], error["message"]
                )
            answer = double.query_results(a["p"], job["jobReference"]["jobId"], {})
            answer["kind"] = "bigquery#queryResponse"
            return 200, answer, {}

        # uploads for load jobs
        def _upload(
            self, method: str, path: str, q: dict[str, str], body: bytes
        ) -> tuple[int, Any, dict[str, str]]:
            match = re.fullmatch(r"/projects/(?P<p>[^/]+)/jobs", path)
            if not match:
                raise ApiError(404, "notFound", f"Not found: upload {path}")
            project = match.group("p")
            kind = q.get("uploadType")
            if kind == "multipart" and method == "POST":
                resource, data = _multipart(self.headers.get("Content-Type", ""), body)
                job = double.insert_job(project, resource, data)
                self._maybe_drop()
                return 200, job, {}
            if kind == "resumable" and method == "POST" and "upload_id" not in q:
                upload_id = uuid.uuid4().hex
                double.uploads[upload_id] = {
                    "resource": json.loads(body),
                    "data": bytearray(),
                    "project": project,
                }
                location = f"{double.endpoint}/upload/bigquery/v2/projects/{project}/jobs?uploadType=resumable&upload_id={upload_id}"
                return 200, None, {"Location": location}
            if kind == "resumable" and method == "PUT":
                session = double.uploads[q["upload_id"]]
                session["data"] += body
                total = re.search(r"/(\d+|\*)$", self.headers.get("Content-Range", ""))
                if total and total.group(1) != "*" and len(session["data"]) >= int(total.group(1)):
                    job = double.insert_job(session["project"], session["resource"], bytes(session["data"]))
                    self._maybe_drop()
                    return 200, job, {}
                return 308, None, {"Range": f"bytes=0-{len(session['data']) - 1}"}
            raise ApiError(400, "invalid", f"upload type {kind} with {method} is not served by the double")

    return Handler


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    parts = list(message.iter_parts())  # type: ignore[attr-defined]
    resource = json.loads(parts[0].get_payload(decode=True))
    return resource, parts[1].get_payload(decode=True)


@pytest.fixture
def bigquery_double(tmp_path: Path) -> Iterator[BigQueryDouble]:
    """A fresh BigQuery double per test, on its own DuckDB file (GCS: ``STORAGE_EMULATOR_HOST``)."""
    double = BigQueryDouble(tmp_path / "bigquery.duckdb").start()
    try:
        yield double
    finally:
        double.stop()
