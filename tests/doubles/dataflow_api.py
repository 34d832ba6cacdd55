"""A loopback Dataflow REST API (v1b3) that really runs the jobs it is asked to launch.

It answers the calls the controller makes, with the shapes the REST reference documents:

- ``POST .../locations/{location}/flexTemplates:launch`` (LaunchFlexTemplateRequest) -> ``{"job": Job}``;
  409 ``ALREADY_EXISTS`` when an active job has the same name;
- ``GET .../jobs/{jobId}`` -> Job (``id``, ``projectId``, ``name``, ``type``, ``currentState``,
  ``currentStateTime``, ``createTime``, ``location``, ``labels``, ``environment``, ...);
- ``PUT .../jobs/{jobId}`` with ``requestedState: JOB_STATE_CANCELLED`` -> the Job, cancelled;
- ``GET .../jobs?filter=ACTIVE|TERMINATED|ALL&name=`` -> ``{"jobs": [...]}``;
- ``GET .../jobs/{jobId}/messages?minimumImportance=`` -> ``{"jobMessages": [...]}``;
- ``GET .../jobs/{jobId}/metrics`` -> JobMetrics: the pipeline's user counters (namespace ``dataops``),
  committed and tentative, as Dataflow reports a Beam ``Metrics.counter``. The stage's process keeps its
  counters to itself, so the double reports the ones its result carries: ``rows_read`` (rows in),
  ``rows_written`` (rows out), ``rows_rejected``.

Errors come in Google's JSON error shape (``{"error": {"code", "message", "status", "details"}}``).

A launch starts what the template's entry file runs, as a local process on the DirectRunner: for the
stage template, the stage's own command ``python -m beam.stages <stage> ...`` built from the launch
parameters (:mod:`beam.stages.flex`); for the consolidation template (a spec named
``consolidation.json``, as the chart names it), the entry file itself with the parameters as the
launcher passes them, ``python -m beam.consolidation.flex --source=... --workdir=...``, which runs the
real consolidation pipeline. The job is ``JOB_STATE_RUNNING`` while the process runs, then ``JOB_STATE_DONE`` or
``JOB_STATE_FAILED`` (its error message taken from the stage's result) from the process's outcome;
cancelling kills the process (``JOB_STATE_CANCELLED``).

Test hooks: :meth:`DataflowDouble.hold` keeps new jobs' processes paused (SIGSTOP) until
:meth:`release`; :meth:`fail` fails a job with a message; :meth:`deny` answers the next launches with
403; :meth:`throttle` answers the next requests with 429 ``RESOURCE_EXHAUSTED``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from beam.consolidation.flex import pipeline_command
from beam.stages.flex import stage_command
from tests.doubles.google_errors import google_error
from tests.doubles.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parents[2]
ACTIVE = {"JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_CANCELLING"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class FakeJob:
    resource: dict[str, Any]
    parameters: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    result_file: Path | None = None
    log_file: Path | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    forced: tuple[str, str] | None = None  # (state, error message) set by a hook or a cancel

    @property
    def id(self) -> str:
        return str(self.resource["id"])


class DataflowDouble:
    """Serve the Dataflow API on 127.0.0.1 from a thread of its own; jobs are local processes."""

    def __init__(self, project: str = "test-project", location: str = "europe-west1") -> None:
        self.project = project
        self.location = location
        self.jobs: dict[str, FakeJob] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        self.launches: list[dict[str, Any]] = []  # every LaunchFlexTemplateRequest body accepted
        self._held = False
        self._deny: list[str] = []  # permissions refused to the next launches
        self._throttle = 0
        self._lock = threading.RLock()
        self._tmp = Path(tempfile.mkdtemp(prefix="dataflow-double-"))
        self._server = LoopbackServer()
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> DataflowDouble:
        self.url = self._server.start(self._app)
        return self

    def stop(self) -> None:
        for job in list(self.jobs.values()):
            self._kill(job)
        self._server.stop()

    def _app(self) -> web.Application:
        app = web.Application()
        base = "/v1b3/projects/{project}/locations/{location}"
        app.router.add_post(base + "/flexTemplates:launch", self._launch)
        app.router.add_get(base + "/jobs", self._list)
        app.router.add_get(base + "/jobs/{job_id}", self._get)
        app.router.add_put(base + "/jobs/{job_id}", self._update)
        app.router.add_get(base + "/jobs/{job_id}/messages", self._messages)
        app.router.add_get(base + "/jobs/{job_id}/metrics", self._metrics)
        app.middlewares.append(self._record)
        return app

    # -- test hooks -----------------------------------------------------------------------------------

    def hold(self) -> None:
        """Processes of jobs launched from now on start paused: their jobs stay RUNNING until released."""
        self._held = True

    def release(self) -> None:
        self._held = False
        with self._lock:
            for job in self.jobs.values():
                if job.process is not None and job.process.poll() is None:
                    job.process.send_signal(signal.SIGCONT)

    def fail(self, job_id: str, message: str) -> None:
        """Make a job fail now, with this error message (as a worker error would)."""
        with self._lock:
            job = self.jobs[job_id]
            job.forced = ("JOB_STATE_FAILED", message)
            self._kill(job)
            self._refresh(job)

    def deny(self, permission: str = "dataflow.jobs.create") -> None:
        """The next launch is refused with 403 PERMISSION_DENIED for this permission."""
        self._deny.append(permission)

    def throttle(self, times: int) -> None:
        """The next ``times`` requests are answered with 429 RESOURCE_EXHAUSTED (a quota)."""
        self._throttle = times

    def job_named(self, name: str) -> FakeJob:
        with self._lock:
            return next(j for j in self.jobs.values() if j.resource["name"] == name)

    def state(self, job_id: str) -> str:
        with self._lock:
            job = self.jobs[job_id]
            self._refresh(job)
            return str(job.resource["currentState"])

    # -- the API --------------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.match_info.get("project") not in (None, self.project) or request.match_info.get(
            "location"
        ) not in (None, self.location):
            return google_error(404, "NOT_FOUND", f"(unknown project or location) {request.path}")
        if self._throttle > 0:
            self._throttle -= 1
            return google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Job create requests' and limit 'Job create requests "
                f"per minute per region' of service 'dataflow.googleapis.com' for consumer 'project_number:{self.project}'.",
                "RATE_LIMIT_EXCEEDED",
                "dataflow.googleapis.com",
                service="dataflow.googleapis.com",
            )
        return await handler(request)

    async def _launch(self, request: web.Request) -> web.Response:
        body = await request.json()
        param = body.get("launchParameter") or {}
        name = str(param.get("jobName", ""))
        if self._deny:
            permission = self._deny.pop(0)
            return google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission '{permission}' denied on project: '{self.project}'",
                "IAM_PERMISSION_DENIED",
                "dataflow.googleapis.com",
                permission=permission,
                resource=f"projects/{self.project}",
            )
        if not param.get("containerSpecGcsPath", "").startswith("gs://"):
            return google_error(400, "INVALID_ARGUMENT", "containerSpecGcsPath must be a gs:// path")
        with self._lock:
            for job in self.jobs.values():
                self._refresh(job)
                if job.resource["name"] == name and job.resource["currentState"] in ACTIVE:
                    return google_error(
                        409,
                        "ALREADY_EXISTS",
                        f"(1a2b3c): The workflow could not be created. Causes: (4d5e6f): There is already "
                        f"an active job named {name} with id: {job.id}. If you want to submit a second "
                        "job, try again by setting a different name.",
                    )
            job = self._start(param)
            self.launches.append(body)
            resource = dict(job.resource)
        return web.json_response({"job": resource})

    async def _get(self, request: web.Request) -> web.Response:
        job = self._find(request.match_info["job_id"])
        if job is None:
            return self._not_found(request.match_info["job_id"])
        return web.json_response(job.resource)

    async def _update(self, request: web.Request) -> web.Response:
        job = self._find(request.match_info["job_id"])
        if job is None:
            return self._not_found(request.match_info["job_id"])
        body = await request.json()
        if body.get("requestedState") != "JOB_STATE_CANCELLED":
            return google_error(
                400, "INVALID_ARGUMENT", f"unsupported requestedState {body.get('requestedState')}"
            )
        with self._lock:
            if job.resource["currentState"] not in ACTIVE:
                return google_error(
                    400,
                    "FAILED_PRECONDITION",
                    f"Workflow modification failed. Causes: (7a8b): Could not cancel workflow; "
                    f"job {job.id} is in state {job.resource['currentState']}.",
                )
            job.forced = ("JOB_STATE_CANCELLED", "")
            job.resource["requestedState"] = "JOB_STATE_CANCELLED"
            self._kill(job)
            self._refresh(job)
            return web.json_response(job.resource)

    async def _list(self, request: web.Request) -> web.Response:
        wanted = request.query.get("filter", "UNKNOWN")
        name = request.query.get("name")
        with self._lock:
            jobs = []
            for job in self.jobs.values():
                self._refresh(job)
                active = job.resource["currentState"] in ACTIVE
                if (wanted == "ACTIVE" and not active) or (wanted == "TERMINATED" and active):
                    continue
                if name and job.resource["name"] != name:
                    continue
                jobs.append(dict(job.resource))
        return web.json_response({"jobs": jobs})

    async def _messages(self, request: web.Request) -> web.Response:
        job = self._find(request.match_info["job_id"])
        if job is None:
            return self._not_found(request.match_info["job_id"])
        order = ["JOB_MESSAGE_DEBUG", "JOB_MESSAGE_DETAILED", "JOB_MESSAGE_BASIC", "JOB_MESSAGE_WARNING"]
        order.append("JOB_MESSAGE_ERROR")
        least = request.query.get("minimumImportance", "JOB_MESSAGE_DEBUG")
        floor = order.index(least) if least in order else 0
        messages = [m for m in job.messages if order.index(m["messageImportance"]) >= floor]
        return web.json_response({"jobMessages": messages})

    async def _metrics(self, request: web.Request) -> web.Response:
        job = self._find(request.match_info["job_id"])
        if job is None:
            return self._not_found(request.match_info["job_id"])
        result = {}
        if job.result_file is not None and job.result_file.exists():
            result = json.loads(job.result_file.read_text(encoding="utf-8"))
        counters = {
            "rows_read": result.get("rows_in", 0),
            "rows_written": result.get("rows_out", 0),
            "rows_rejected": result.get("rows_rejected", 0),
        }
        metrics = []
        for name, value in counters.items():
            for tentative in (False, True):
                context = {"namespace": "dataops", "step": "s2"}
                if tentative:
                    context["tentative"] = "true"
                metrics.append(
                    {
                        "name": {"origin": "user", "name": name, "context": context},
                        "kind": "Sum",
                        "cumulative": True,
                        "scalar": value,
                        "updateTime": _now(),
                    }
                )
        metrics.append(
            {
                "name": {
                    "origin": "dataflow/v1b3",
                    "name": "ElementCount",
                    "context": {"output_user_name": "Read"},
                },
                "kind": "Sum",
                "scalar": 999,
                "updateTime": _now(),
            }
        )
        return web.json_response({"metricTime": _now(), "metrics": metrics})

    def _not_found(self, job_id: str) -> web.Response:
        return google_error(
            404,
            "NOT_FOUND",
            f"(8c9d): Information about job {job_id} could not be found in our system. Please double check "
            "that the API being used is projects.locations.jobs.get",
        )

    # -- jobs as processes ----------------------------------------------------------------------------

    def _find(self, job_id: str) -> FakeJob | None:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is not None:
                self._refresh(job)
            return job

    def _start(self, param: dict[str, Any]) -> FakeJob:
        now = _now()
        created = datetime.now(UTC).strftime("%Y-%m-%d_%H_%M_%S")
        job_id = f"{created}-{uuid.uuid4().int % 10**19:019d}"
        env_in = param.get("environment") or {}
        resource = {
            "id": job_id,
            "projectId": self.project,
            "name": param.get("jobName", ""),
            "type": "JOB_TYPE_BATCH",
            "currentState": "JOB_STATE_QUEUED",
            "currentStateTime": now,
            "createTime": now,
            "startTime": now,
            "location": self.location,
            "labels": dict(env_in.get("additionalUserLabels") or {}),
            "environment": {
                "serviceAccountEmail": env_in.get("serviceAccountEmail", ""),
                "tempStoragePrefix": env_in.get("tempLocation", ""),
                "workerRegion": self.location,
            },
            "jobMetadata": {
                "sdkVersion": {"sdkSupportStatus": "SUPPORTED", "versionDisplayName": "Apache Beam"}
            },
        }
        job = FakeJob(resource=resource, parameters=dict(param.get("parameters") or {}))
        self.jobs[job_id] = job
        try:
            command, env = self._entry(str(param.get("containerSpecGcsPath", "")), job)
        except ValueError as exc:
            job.forced = ("JOB_STATE_FAILED", f"Error occurred in the launcher container: {exc}")
            self._refresh(job)
            return job
        folder = self._tmp / job_id
        folder.mkdir()
        job.log_file = folder / "stage.log"
        if command[0] == "beam.stages":
            job.result_file = folder / "result.json"
            command = [*command, "--result-file", str(job.result_file)]
        with job.log_file.open("wb") as log:
            job.process = subprocess.Popen(
                [sys.executable, "-m", *command],
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if self._held:
            job.process.send_signal(signal.SIGSTOP)
        self._set_state(job, "JOB_STATE_RUNNING")
        return job

    def _entry(self, template: str, job: FakeJob) -> tuple[list[str], dict[str, str]]:
        """The module and arguments the template's entry file runs, and its environment."""
        if template.rsplit("/", 1)[-1].startswith("consolidation"):
            pipeline_command(job.parameters)  # refuses missing parameters, as the launcher would fail
            flags = [f"--{name}={value}" for name, value in job.parameters.items()]
            return ["beam.consolidation.flex", *flags], {}
        argv, env = stage_command(job.parameters)
        return ["beam.stages", *argv], env

    def _kill(self, job: FakeJob) -> None:
        if job.process is not None and job.process.poll() is None:
            job.process.kill()
            job.process.wait(timeout=30)

    def _refresh(self, job: FakeJob) -> None:
        """Bring a job's state up to its process's outcome."""
        if job.resource["currentState"] not in ACTIVE:
            return
        if job.forced is not None:
            state, message = job.forced
            if message:
                self._error_message(job, message)
            self._set_state(job, state)
            return
        if job.process is None or job.process.poll() is None:
            return
        if job.process.returncode == 0:
            self._set_state(job, "JOB_STATE_DONE")
            return
        self._error_message(job, self._failure(job))
        self._set_state(job, "JOB_STATE_FAILED")

    def _failure(self, job: FakeJob) -> str:
        if job.result_file is not None and job.result_file.exists():
            result = json.loads(job.result_file.read_text(encoding="utf-8"))
            if result.get("message"):
                return f"Error message from worker: {result['message']}"
        tail = job.log_file.read_text(encoding="utf-8", errors="replace")[-500:] if job.log_file else ""
        return f"Error message from worker: the pipeline exited with status {job.process.returncode if job.process else '?'}: {tail}"

    def _error_message(self, job: FakeJob, text: str) -> None:
        job.messages.append(
            {
                "id": str(len(job.messages) + 1),
                "time": _now(),
                "messageText": text,
                "messageImportance": "JOB_MESSAGE_ERROR",
            }
        )

    def _set_state(self, job: FakeJob, state: str) -> None:
        job.resource["currentState"] = state
        job.resource["currentStateTime"] = _now()


@contextmanager
def dataflow_double(
    project: str = "test-project", location: str = "europe-west1"
) -> Iterator[DataflowDouble]:
    double = DataflowDouble(project, location).start()
    try:
        yield double
    finally:
        double.stop()
