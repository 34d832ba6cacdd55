"""A loopback Data Lineage API (v1) and Dataplex Catalog API (v1), on one server, as their references document.

Data Lineage (``datalineage.googleapis.com``):

- ``POST .../locations/{l}/processes`` (Process, with its ``name`` given), ``.../processes/{p}/runs``
  (Run), ``.../runs/{r}/lineageEvents`` (LineageEvent: ``links[].source/target.fullyQualifiedName``);
  409 ``ALREADY_EXISTS`` for a name that exists;
- ``POST .../locations/{l}:searchLinks`` (``source`` or ``target``) -> ``{"links": [...]}``.

Dataplex Catalog (``dataplex.googleapis.com``):

- ``POST .../locations/{l}/aspectTypes?aspectTypeId=`` -> a done Operation; 409 if it exists;
- ``PATCH .../entryGroups/@bigquery/entries/{entry}?updateMask=aspects&aspectKeys=`` -> the Entry
  (system entries of BigQuery tables exist as their tables do); 404 for an aspect type that does not
  exist, 400 for aspect data outside its type's template;
- ``GET`` of the same entry.

Errors in Google's JSON shape. Hooks: :meth:`CatalogDouble.deny` (403 on the next call),
:meth:`CatalogDouble.throttle` (429 on the next calls).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.doubles.google_errors import google_error
from tests.doubles.loopback import LoopbackServer


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class CatalogDouble:
    def __init__(self, project: str = "test-project", location: str = "europe-west1") -> None:
        self.project = project
        self.location = location
        self.processes: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, dict[str, Any]] = {}
        self.aspect_types: dict[str, dict[str, Any]] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._deny: list[str] = []
        self._throttle = 0
        self._server = LoopbackServer()
        self.url = ""

    def start(self) -> CatalogDouble:
        self.url = self._server.start(self._app)
        return self

    def stop(self) -> None:
        self._server.stop()

    def deny(self, permission: str) -> None:
        self._deny.append(permission)

    def throttle(self, times: int) -> None:
        self._throttle = times

    def links_to(self, target: str) -> list[dict[str, Any]]:
        return [
            {**link, "event": name}
            for name, event in self.events.items()
            for link in event["links"]
            if link["target"]["fullyQualifiedName"] == target
        ]

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        loc = "/v1/projects/{project}/locations/{location}"
        app.router.add_post(loc + "/processes", self._create_process)
        app.router.add_post(loc + "/processes/{process}/runs", self._create_run)
        app.router.add_post(loc + "/processes/{process}/runs/{run}/lineageEvents", self._create_event)
        app.router.add_post(loc + ":searchLinks", self._search_links)
        app.router.add_post(loc + "/aspectTypes", self._create_aspect_type)
        app.router.add_patch(loc + "/entryGroups/{group}/entries/{entry:.+}", self._patch_entry)
        app.router.add_get(loc + "/entryGroups/{group}/entries/{entry:.+}", self._get_entry)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        response = await self._answer(request, handler)
        self.requests.append((request.method, request.path, response.status))
        return response

    async def _answer(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if (
            request.match_info.get("project") != self.project
            or request.match_info.get("location") != self.location
        ):
            return google_error(404, "NOT_FOUND", f"unknown project or location in {request.path}")
        if self._throttle > 0:
            self._throttle -= 1
            return google_error(
                429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Write requests'."
            )
        if self._deny:
            permission = self._deny.pop(0)
            return google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied on resource '{request.path}' (or it may not exist).",
                "IAM_PERMISSION_DENIED",
                "dataflow.googleapis.com",
                permission=permission,
            )
        return await handler(request)

    def _parent(self, request: web.Request) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    async def _create(
        self, store: dict[str, dict[str, Any]], name: str, body: dict[str, Any]
    ) -> web.Response:
        if name in store:
            return google_error(409, "ALREADY_EXISTS", f"Resource '{name}' already exists")
        store[name] = {**body, "name": name}
        return web.json_response(store[name])

    async def _create_process(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("name") or f"{self._parent(request)}/processes/{len(self.processes) + 1}"
        if not name.startswith(f"{self._parent(request)}/processes/"):
            return google_error(
                400, "INVALID_ARGUMENT", f"process name {name} is not under {self._parent(request)}"
            )
        return await self._create(self.processes, name, body)

    async def _create_run(self, request: web.Request) -> web.Response:
        process = f"{self._parent(request)}/processes/{request.match_info['process']}"
        if process not in self.processes:
            return google_error(404, "NOT_FOUND", f"Process {process} not found")
        body = await request.json()
        if body.get("state") not in ("STARTED", "COMPLETED", "FAILED", "ABORTED") or not body.get(
            "startTime"
        ):
            return google_error(400, "INVALID_ARGUMENT", "run.state and run.startTime are required")
        return await self._create(self.runs, body.get("name") or f"{process}/runs/{len(self.runs) + 1}", body)

    async def _create_event(self, request: web.Request) -> web.Response:
        m = request.match_info
        run = f"{self._parent(request)}/processes/{m['process']}/runs/{m['run']}"
        if run not in self.runs:
            return google_error(404, "NOT_FOUND", f"Run {run} not found")
        body = await request.json()
        if not body.get("startTime"):
            return google_error(400, "INVALID_ARGUMENT", "lineageEvent.startTime is required")
        if len(body.get("links") or []) > 100:
            return google_error(400, "INVALID_ARGUMENT", "a lineage event has at most 100 links")
        return await self._create(
            self.events, body.get("name") or f"{run}/lineageEvents/{len(self.events) + 1}", body
        )

    async def _search_links(self, request: web.Request) -> web.Response:
        body = await request.json()
        side, ref = ("target", body["target"]) if body.get("target") else ("source", body.get("source") or {})
        links = [
            {
                "name": f"{name}#{i}",
                "source": link["source"],
                "target": link["target"],
                "startTime": event["startTime"],
            }
            for name, event in self.events.items()
            for i, link in enumerate(event["links"])
            if link[side]["fullyQualifiedName"] == ref.get("fullyQualifiedName")
        ]
        return web.json_response({"links": links})

    async def _create_aspect_type(self, request: web.Request) -> web.Response:
        type_id = request.query.get("aspectTypeId", "")
        name = f"{self._parent(request)}/aspectTypes/{type_id}"
        if name in self.aspect_types:
            return google_error(409, "ALREADY_EXISTS", f"AspectType {name} already exists")
        body = await request.json()
        if (body.get("metadataTemplate") or {}).get("type") != "record":
            return google_error(400, "INVALID_ARGUMENT", "metadataTemplate.type must be record")
        self.aspect_types[name] = {**body, "name": name, "createTime": _now()}
        operation = f"{self._parent(request)}/operations/operation-{len(self.aspect_types)}"
        return web.json_response({"name": operation, "done": True, "response": self.aspect_types[name]})

    def _entry_name(self, request: web.Request) -> str:
        m = request.match_info
        return f"{self._parent(request)}/entryGroups/{m['group']}/entries/{m['entry']}"

    async def _patch_entry(self, request: web.Request) -> web.Response:
        name = self._entry_name(request)
        if request.match_info["group"] != "@bigquery":
            return google_error(404, "NOT_FOUND", f"Entry {name} not found")
        if "aspects" not in request.query.get("updateMask", "").split(","):
            return google_error(400, "INVALID_ARGUMENT", "updateMask must contain aspects to update aspects")
        body = await request.json()
        entry = self.entries.setdefault(
            name,
            {
                "name": name,
                "entryType": "projects/dataplex-types/locations/global/entryTypes/bigquery-table",
                "aspects": {},
            },
        )
        for key, aspect in (body.get("aspects") or {}).items():
            project, location, type_id = key.split(".", 2)
            aspect_type = self.aspect_types.get(
                f"projects/{project}/locations/{location}/aspectTypes/{type_id}"
            )
            if aspect_type is None:
                return google_error(
                    404, "NOT_FOUND", f"AspectType {type_id} not found in {project}/{location}"
                )
            fields = {f["name"] for f in aspect_type["metadataTemplate"]["recordFields"]}
            unknown = sorted(set(aspect.get("data") or {}) - fields)
            if unknown:
                return google_error(
                    400, "INVALID_ARGUMENT", f"aspect {key}: fields not in the template: {unknown}"
                )
            entry["aspects"][key] = {
                "aspectType": aspect_type["name"],
                "data": aspect["data"],
                "updateTime": _now(),
            }
        entry["updateTime"] = _now()
        return web.json_response(entry)

    async def _get_entry(self, request: web.Request) -> web.Response:
        entry = self.entries.get(self._entry_name(request))
        if entry is None:
            return google_error(404, "NOT_FOUND", f"Entry {self._entry_name(request)} not found")
        return web.json_response(entry)


@contextmanager
def catalog_double(project: str = "test-project", location: str = "europe-west1") -> Iterator[CatalogDouble]:
    double = CatalogDouble(project, location).start()
    try:
        yield double
    finally:
        double.stop()
