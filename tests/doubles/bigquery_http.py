"""The BigQuery double's HTTP side: REST v2 routes, resumable and multipart uploads, dropped answers."""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import socket
import uuid
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.doubles.bigquery_types import ApiError, result_rows

if TYPE_CHECKING:
    from tests.doubles.bigquery_api import BigQueryDouble

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


def make_handler(double: BigQueryDouble) -> type[BaseHTTPRequestHandler]:
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
            except (
                Exception
            ) as exc:  # a bug in the double: a 500 the client does not retry, so tests fail fast
                status, answer, headers = 500, ApiError(500, "doubleBug", repr(exc)).body(), {}
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
                "rows": result_rows(rows, schema, int64),
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
