"""The controller's runtime: kopf settings, one Kubernetes client, per-run serialisation and wake-ups.

Handlers (``controller/handlers.py``) are one call each into this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram

from controller import dataflow_stage
from controller import status as status_codec
from controller.admission import DONE, WAITING, Admission, state_of
from controller.dataflow import DataflowClient, DataflowError
from controller.kube import Kube, KubeError
from controller.manifests import LABEL_RUN
from controller.objects import ListingError
from controller.observe import image_error
from controller.reconcile import Reconciled, parse_spec, queued, reconcile_run
from controller.settings import Settings, settings_from_env
from controller.source_grants import SourceGrants
from controller.spec import PipelineRunSpec
from controller.stages import TERMINAL_PHASES, needs_cleanup

log = logging.getLogger("dataops.controller")

FINALIZER = "dataops.io/finalizer"  # kopf's, on IngestionSources (their daemons end before they go)
# Ours, on PipelineRuns: set once a run is under way, removed when what it started is stopped. Owning it
# (rather than kopf's on.delete) costs one write per run and no per-event bookkeeping.
RUN_FINALIZER = "dataops.io/cleanup"

RECONCILES = Counter("dataops_reconciles_total", "PipelineRun reconciles", ["outcome"])
TRANSITIONS = Counter("dataops_run_transitions_total", "PipelineRun phase transitions", ["phase"])
CONFLICTS = Counter("dataops_status_conflicts_total", "Status writes refused for a newer resourceVersion")
RUNS_BY_PHASE = Gauge("dataops_runs", "PipelineRuns seen by this controller, by phase", ["phase"])
STAGE_SECONDS = Histogram(
    "dataops_stage_duration_seconds",
    "Stage durations",
    ["stage", "state"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)


@dataclass(frozen=True)
class Written:
    resource_version: str
    status: int  # the digest of the status
    generation: int


class RunLocks:
    """One lock per run, held by whichever reconcile of it is under way; kept only while a reconcile holds
    or awaits it, so that runs come and go without their locks staying behind."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # run key -> its lock, holders and waiters

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._locks[key][1] - 1
            if users:
                self._locks[key] = (lock, users)
            else:
                del self._locks[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._locks)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    dataflow: DataflowClient | None = None  # set when the controller has Dataflow settings
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    locks: RunLocks = field(default_factory=RunLocks)
    # run key -> what our last write left: an event showing an older status is stale, one showing the
    # same status and generation brings nothing to plan on
    written: dict[str, Written] = field(default_factory=dict)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)
    admission: Admission = field(default_factory=lambda: Admission(0))
    sources: SourceGrants = field(default_factory=SourceGrants)  # IngestionSources' spec.grants
    closed: bool = False  # the operator is stopping: no more timed wake-ups

    def __post_init__(self) -> None:
        self.admission.limit = self.settings.max_running_per_namespace


class SourcesDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, built for IngestionSources only: the one kind with change handlers.

    kopf builds the essence of every object on every event (a deep copy) to find changes; for runs,
    Jobs and pods, whose handlers watch events and need no diff, that was a tenth of the controller's CPU.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        if body.get("kind") != "IngestionSource":
            return kopf.BodyEssence()
        return super().build(body=body, extra_fields=extra_fields)


def configure(settings: kopf.OperatorSettings, env: dict[str, str] | None = None) -> Settings:
    """kopf's settings, all in one place."""
    ours = settings_from_env(env if env is not None else dict(os.environ))
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dataops.io")
    settings.persistence.diffbase_storage = SourcesDiffBase(prefix="dataops.io")
    # A watch that silently stops delivering is restarted after this many seconds at most.
    settings.watching.server_timeout = ours.watch_timeout_seconds
    # A stream that goes silent (a dead connection: no FIN, no RST) is dropped by the client soon after.
    settings.watching.client_timeout = ours.watch_timeout_seconds + 5
    settings.watching.connect_timeout = 30
    # Only stage Jobs and pods are watched, filtered by the API server: a namespace's other workloads
    # (an IngestionSource's cycles, anything else running there) never reach the controller.
    settings.watching.label_selectors["batch", "v1", "jobs"] = LABEL_RUN
    settings.watching.label_selectors["", "v1", "pods"] = LABEL_RUN
    # A container that cannot start (pod_stuck) keeps its pod Pending: the kubelet's updates of running
    # and finished pods, most of a pod's events, stay on the API server.
    settings.watching.field_selectors["", "v1", "pods"] = "status.phase=Pending"
    # kopf keeps one worker per object for 5 s after its last event (settings.batching.idle_timeout), and
    # its worker_limit caps the workers per watched resource and namespace: a limit of 200 held a burst of
    # new runs to 200 per 5 s, whatever the CPU. No limit (kopf's default): a worker is a task and a queue.
    # kopf's own handler logs are not posted as Events: only our transitions are.
    settings.posting.level = logging.ERROR
    settings.peering.name = ours.peering
    settings.peering.mandatory = False
    # Replicas of equal priority all pause each other: each pod gets its own, so one leads and the
    # others stand by until its keep-alive lapses.
    settings.peering.priority = random.randint(1, 32767)
    # 429 and 5xx from the API server: kopf backs off (and honours Retry-After) with these delays.
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.networking.request_timeout = 60
    return ours


CONFLICT_RETRIES = 5
RETRY_SECONDS = 5.0  # a reconcile that failed (API error, timeout) is tried again this much later


def new_runtime(settings: kopf.OperatorSettings, kube: Kube) -> Runtime:
    """The runtime of a starting controller; with a Dataflow client if Dataflow is configured."""
    ours = configure(settings)
    dataflow = DataflowClient(ours.dataflow) if not ours.dataflow.missing() else None
    return Runtime(settings=ours, kube=kube, dataflow=dataflow)


async def close_runtime(rt: Runtime) -> None:
    """Stop the timed wake-ups first: none may reach for a client closed under it."""
    rt.closed = True
    for key in list(rt.timers):
        _cancel_timer(rt, key)
    await rt.kube.close()
    if rt.dataflow is not None:
        await rt.dataflow.close()


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


async def reconcile(rt: Runtime, namespace: str, name: str, body: dict[str, Any] | None) -> None:
    """Reconcile one run, one at a time per run, from a fresh enough view of it."""
    key = _key(namespace, name)
    async with rt.locks.hold(key):
        if rt.closed:
            return
        if body is not None and key in rt.written and _nothing_new(body, rt.written[key]):
            return  # the echo of our own write, or a change to nothing the planner reads
        fresh = body is None or (key in rt.written and not _is_at_least(body, rt.written[key]))
        try:
            for _ in range(CONFLICT_RETRIES):
                if fresh:
                    body = await rt.kube.get("PipelineRun", name, namespace)
                    if body is None:
                        _forget(rt, key)
                        return
                assert body is not None
                if body["metadata"].get("deletionTimestamp"):
                    await _finalize(rt, body)
                    return
                if await _expire(rt, body):
                    return
                spec = parse_spec(body)
                result = await _queued(rt, body, spec)
                if result is None:
                    result = await reconcile_run(
                        body, rt.kube, rt.settings, rt.clock(), rt.dataflow, rt.sources, spec
                    )
                if not result.changed:
                    break
                try:
                    # Only onto the version planned from: a write by anyone since (another replica during
                    # a rolling update, a user) makes this a 409, and the run is planned again from it.
                    written = await rt.kube.patch_status(
                        "PipelineRun", name, namespace, result.status, body["metadata"].get("resourceVersion")
                    )
                except KubeError as exc:
                    if exc.status != 409:
                        raise
                    CONFLICTS.inc()
                    fresh = True
                    continue
                body = {**body, "metadata": written["metadata"], "status": written.get("status") or {}}
                _record_metrics(rt, key, result)
                break
            else:
                raise KubeError(409, f"status of {key} kept changing under {CONFLICT_RETRIES} attempts")
        except Exception as exc:
            RECONCILES.labels("error").inc()
            # Event handlers are not retried by kopf: the run's own timer tries again.
            delay = (exc.retry_after if isinstance(exc, KubeError) else None) or RETRY_SECONDS
            if isinstance(exc, DataflowError):  # only temporary ones reach here (quota, unavailable)
                delay = rt.settings.dataflow_poll_seconds
            _wake_in(rt, namespace, name, delay)
            if (isinstance(exc, KubeError) and exc.temporary) or isinstance(exc, DataflowError):
                raise kopf.TemporaryError(str(exc), delay=delay) from None
            raise
        body = await _hold(rt, body, spec)
        RECONCILES.labels("ok").inc()
        for ev in result.events:
            kopf.event(kopf.Body(body), type=ev.type, reason=ev.reason, message=ev.message[:1000])  # type: ignore[arg-type]
        _schedule(rt, namespace, name, result)
        before = rt.admission.runs.get(namespace, {}).get(name, ("", ""))[1]
        rt.admission.observe(body)
        if state_of(body) == DONE and before != DONE:
            _wake_queue(rt, namespace)
        _schedule_expiry(rt, body)


async def _queued(rt: Runtime, body: dict[str, Any], spec: PipelineRunSpec | str) -> Reconciled | None:
    """The run's Queued status while the namespace is at its limit; None once it may start."""
    if state_of(body) != WAITING:
        return None
    if isinstance(spec, str) or spec.cancel:
        return None  # invalid or cancelled: the planner finishes it at once
    namespace = body["metadata"].get("namespace", "default")
    if rt.admission.limit > 0 and namespace not in rt.admission.seeded:
        for run in await rt.kube.list("PipelineRun", namespace, {}):
            if run["metadata"]["name"] not in rt.admission.runs.get(namespace, {}):
                rt.admission.observe(run)
        rt.admission.seeded.add(namespace)
    rt.admission.observe(body)
    place = rt.admission.admit(namespace, body["metadata"]["name"])
    if place == 0:
        return None
    limit = rt.admission.limit
    message = (
        f"queued: {place - 1} run(s) ahead; namespace {namespace} runs at most {limit} at once"
        f" ({rt.admission.active(namespace)} running)"
    )
    return queued(body, spec, message, rt.clock())


def _wake_queue(rt: Runtime, namespace: str) -> None:
    for name in rt.admission.next_up(namespace):
        _spawn(reconcile(rt, namespace, name, None))


async def _expire(rt: Runtime, body: dict[str, Any]) -> bool:
    """Delete a finished run whose TTL (DATAOPS_FINISHED_TTL_SECONDS) has passed; True if deleted."""
    due = _expiry(rt, body)
    if due is None or rt.clock() < due:
        return False
    meta = body["metadata"]
    await rt.kube.delete("PipelineRun", meta["name"], meta.get("namespace", "default"))
    log.info("deleted finished run %s/%s: its TTL passed", meta.get("namespace"), meta["name"])
    return True


def _expiry(rt: Runtime, body: dict[str, Any]) -> datetime | None:
    ttl = rt.settings.finished_ttl_seconds
    status = body.get("status") or {}
    if ttl is None or status.get("phase") not in TERMINAL_PHASES or not status.get("completionTime"):
        return None
    done = datetime.fromisoformat(str(status["completionTime"]).replace("Z", "+00:00"))
    return done + timedelta(seconds=ttl)


def _schedule_expiry(rt: Runtime, body: dict[str, Any]) -> None:
    due = _expiry(rt, body)
    if due is None:
        return
    meta = body["metadata"]
    _wake_in(rt, meta.get("namespace", "default"), meta["name"], max(0.0, (due - rt.clock()).total_seconds()))


def _nothing_new(body: dict[str, Any], last: Written) -> bool:
    """Whether an event shows what we last wrote and no newer spec: nothing for the planner to act on.

    The planner reads the spec (its generation), the status and the deletion mark; Jobs bring their
    own events. So the echoes of our own status and finalizer writes, and label or annotation edits,
    are skipped without a request.
    """
    meta = body["metadata"]
    return bool(
        not meta.get("deletionTimestamp")
        and int(meta.get("generation", 1)) == last.generation
        and digest(body.get("status") or {}) == last.status
    )


def _is_at_least(body: dict[str, Any], last: Written) -> bool:
    """Whether an event's body is at least as new as our last status write, so it can be planned on.

    It shows the status we wrote last (only we write the status): it is that version or a later one
    (a spec or metadata change). Comparing the status and not only the resourceVersion also guards
    against servers (and emulators) that do not bump resourceVersion: a stale event never overwrites a
    newer status.
    """
    return digest(body.get("status") or {}) == last.status


def digest(status: dict[str, Any]) -> int:
    """A status, as what it says (key order aside): kept for every run instead of the status itself."""
    return hash(json.dumps(status, sort_keys=True, separators=(",", ":"), default=str))


async def _hold(rt: Runtime, body: dict[str, Any], spec: PipelineRunSpec | str) -> dict[str, Any]:
    """Put our finalizer on a run under way that needs it (once), and remember what our writes left.

    Only a run with a Dataflow stage needs it (``needs_cleanup``): the collector cannot see a Dataflow
    job. After the status write, not before the first launch: a launch in between is found again by
    its name when the run is reconciled. A 409 is left to the next reconcile.
    """
    meta, status = body["metadata"], body.get("status") or {}
    key = _key(meta.get("namespace", "default"), meta["name"])
    finalizers = list(meta.get("finalizers") or [])
    if (
        RUN_FINALIZER not in finalizers
        and status.get("phase") not in TERMINAL_PHASES
        and not isinstance(spec, str)
        and needs_cleanup(spec)
    ):
        try:
            patched = await _set_finalizers(rt, meta, [*finalizers, RUN_FINALIZER])
            body = {**body, "metadata": patched["metadata"]}
        except KubeError as exc:
            if not exc.temporary:
                raise
    meta = body["metadata"]
    rt.written[key] = Written(
        str(meta.get("resourceVersion", "")), digest(status), int(meta.get("generation", 1))
    )
    return body


async def _finalize(rt: Runtime, body: dict[str, Any]) -> None:
    """A run being deleted: stop what it started, then take our finalizer off so it can go."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    finalizers = list(meta.get("finalizers") or [])
    if RUN_FINALIZER not in finalizers:
        return
    for problem in await cleanup_run(rt, namespace, name, body.get("status")):
        kopf.event(kopf.Body(body), type="Warning", reason="CleanupFailed", message=problem[:1000])  # type: ignore[arg-type]
    await _set_finalizers(rt, meta, [f for f in finalizers if f != RUN_FINALIZER])


async def _set_finalizers(rt: Runtime, meta: dict[str, Any], finalizers: list[str]) -> dict[str, Any]:
    """The run's finalizers, written onto the version we saw only (a 409 if anyone wrote since)."""
    return await rt.kube.patch(
        "PipelineRun",
        meta["name"],
        meta.get("namespace", "default"),
        {"metadata": {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}},
    )


def _record_metrics(rt: Runtime, key: str, result: Reconciled) -> None:
    phase = str(result.status.get("phase", ""))
    before = rt.phases.get(key)
    if before != phase:
        TRANSITIONS.labels(phase).inc()
        if before:
            RUNS_BY_PHASE.labels(before).dec()
        RUNS_BY_PHASE.labels(phase).inc()
        rt.phases[key] = phase
    for stage in result.status.get("stages", []):
        if stage.get("durationSeconds") is not None and stage.get("state") in ("Succeeded", "Failed"):
            STAGE_SECONDS.labels(stage["name"], stage["state"]).observe(stage["durationSeconds"])


def _schedule(rt: Runtime, namespace: str, name: str, result: Reconciled) -> None:
    """Wake the run at its next backoff or deadline, and an unfinished one at least every resync period.

    The resync catches what no event shows (a pod that cannot pull its image) and anything missed while
    the watch was down. Finished runs sleep (their TTL, if any, is scheduled apart).
    """
    wake = result.wake_at
    if result.status.get("phase") not in TERMINAL_PHASES:
        resync = rt.clock() + timedelta(seconds=rt.settings.resync_seconds)
        wake = resync if wake is None else min(wake, resync)
    if wake is None:
        _cancel_timer(rt, _key(namespace, name))
        return
    _wake_in(rt, namespace, name, max(0.0, (wake - rt.clock()).total_seconds()) + 0.05)


def _wake_in(rt: Runtime, namespace: str, name: str, delay: float) -> None:
    key = _key(namespace, name)
    _cancel_timer(rt, key)
    if rt.closed:
        return
    loop = asyncio.get_running_loop()
    rt.timers[key] = loop.call_later(delay, lambda: _spawn(reconcile(rt, namespace, name, None)))


def _cancel_timer(rt: Runtime, key: str) -> None:
    old = rt.timers.pop(key, None)
    if old is not None:
        old.cancel()


def _spawn(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("timed reconcile failed: %s", task.exception())


def forget(rt: Runtime, namespace: str, name: str) -> None:
    """A run is gone (its DELETED event): drop what the controller keeps of it."""
    _forget(rt, _key(namespace, name))


def _forget(rt: Runtime, key: str) -> None:
    namespace, _, name = key.partition("/")
    was = rt.admission.runs.get(namespace, {}).get(name, ("", ""))[1]
    rt.admission.forget(namespace, name)
    if was and was != DONE:
        _wake_queue(rt, namespace)
    rt.written.pop(key, None)
    _cancel_timer(rt, key)
    phase = rt.phases.pop(key, None)
    if phase:
        RUNS_BY_PHASE.labels(phase).dec()


def job_news(job: dict[str, Any], event_type: str | None) -> bool:
    """Whether a stage Job's event can change its run: it ended, failed a pod, or is going away.

    Its creation and its pods starting change nothing the planner reads; what a Job's status does not
    show (a pod that cannot pull its image) the pod watch finds (``pod_stuck``).
    """
    if event_type == "DELETED" or job["metadata"].get("deletionTimestamp"):
        return True
    status = job.get("status") or {}
    ended = any(
        c.get("type") in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet")
        and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return ended or int(status.get("failed") or 0) > 0


async def cleanup_run(
    rt: Runtime, namespace: str, name: str, status: dict[str, Any] | None = None
) -> list[str]:
    """Stop everything a run started (its Jobs, its running Dataflow jobs), before it goes.

    Returns what could not be stopped for good (said in a Warning Event; the run goes all the same).
    """
    problems: list[str] = []
    _forget(rt, _key(namespace, name))
    for job in await rt.kube.list("Job", namespace, {LABEL_RUN: name}):
        await rt.kube.delete("Job", job["metadata"]["name"], namespace)
    for stage in status_codec.from_dict(status).stages:
        if stage.state == "Running" and stage.dataflow_job_id and rt.dataflow is not None:
            try:
                await dataflow_stage.stop(rt.dataflow, namespace, name, stage)
            except DataflowError as exc:
                if exc.temporary:
                    raise  # tried again on the run's timer; the run waits on its finalizer meanwhile
                # Refused for good (the job is gone, a permission): said once, and the run may go.
                problems.append(f"cannot cancel the Dataflow job of stage {stage.name}: {exc}")
    return problems


def pod_stuck(pod: dict[str, Any]) -> bool:
    """Whether a stage pod's event can change its run: its container cannot start (an image that cannot
    be pulled, a wrong config). The run then fails that attempt once the image pull grace has passed;
    everything else a pod does shows in its Job's status."""
    return image_error(pod) is not None and not pod["metadata"].get("deletionTimestamp")


async def pod_news(rt: Runtime, pod: dict[str, Any]) -> None:
    """A stage pod that cannot start: its run is looked at now, and again when its grace ends."""
    meta = pod["metadata"]
    namespace = meta.get("namespace", "default")
    run = (meta.get("labels") or {}).get(LABEL_RUN, "")
    if len(run) >= 63:  # maybe cut to fit a label: the run's name is on its Job's owner reference
        job = (meta.get("labels") or {}).get("job-name")
        found = await rt.kube.get("Job", job, namespace) if job else None
        run = (owner_run(found) if found else None) or ""
    if run:
        await reconcile(rt, namespace, run, None)


def owner_run(job: dict[str, Any]) -> str | None:
    for ref in job["metadata"].get("ownerReferences") or []:
        if ref.get("kind") == "PipelineRun" and ref.get("controller"):
            return str(ref["name"])
    return None


async def reconcile_source(rt: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    """The CronJob of an IngestionSource, and the status that reports it."""
    from controller import ingestion

    spec = ingestion.parse_source_spec(body)
    generation = int(body["metadata"].get("generation", 1))
    if isinstance(spec, str):
        kopf.event(kopf.Body(body), type="Warning", reason="InvalidSpec", message=spec[:1000])  # type: ignore[arg-type]
        return {
            "phase": "Failed",
            "reason": "InvalidSpec",
            "message": spec[:2000],
            "observedGeneration": generation,
        }
    try:
        cycle = await ingestion.reconcile_cronjob(body, spec, rt.kube, rt.settings)
    except KubeError as exc:
        if exc.temporary:
            raise kopf.TemporaryError(str(exc), delay=exc.retry_after or 5) from None
        raise
    phase = "Suspended" if spec.suspend else "Active"
    status: dict[str, Any] = {
        "phase": phase,
        "reason": phase,
        "observedGeneration": generation,
        "message": "suspended" if spec.suspend else "watching",
    }
    if cycle:
        status["lastCycle"] = cycle
    return status


def _report_notifications(body: dict[str, Any], files: dict[str, Any]) -> None:
    """A Warning Event when the notifications of a source start failing, or fail differently."""
    problem = files.get("notificationProblem")
    before = ((body.get("status") or {}).get("files") or {}).get("notificationProblem")
    if problem and problem != before:
        kopf.event(kopf.Body(body), type="Warning", reason="NotificationsFailed", message=problem)  # type: ignore[arg-type]


def _same_status(body: dict[str, Any], update: dict[str, Any]) -> bool:
    """Whether the status already says all of ``update`` (then no patch: notification polls are frequent)."""
    status = body.get("status") or {}
    return all(status.get(k) == v for k, v in update.items())


async def source_loop(rt: Runtime, body: Any, stopped: Any) -> None:
    """Per IngestionSource: list its prefix for new objects, and refresh the last cycle, every poll."""
    from controller import ingestion

    while not stopped:
        fresh = await rt.kube.get("IngestionSource", body.metadata.name, body.metadata.namespace)
        if fresh is None:
            return
        spec = ingestion.parse_source_spec(fresh)
        poll = rt.settings.resync_seconds
        if not isinstance(spec, str):
            update: dict[str, Any] = {}
            try:
                if spec.files is not None:
                    poll = min(poll, float(spec.files.poll_seconds))
                    if spec.files.notifications is not None:
                        poll = min(poll, rt.settings.notification_poll_seconds)
                    update["files"] = await ingestion.discover_files(
                        fresh, spec, rt.kube, rt.clock(), rt.settings
                    )
                    _report_notifications(fresh, update["files"])
                if spec.consolidation is not None:
                    cycle = await ingestion.last_cycle(rt.kube, body.metadata.namespace, body.metadata.name)
                    if cycle:
                        update["lastCycle"] = cycle
                if update and not _same_status(fresh, update):
                    update["activeRuns"] = (update.get("files") or {}).get("activeRuns", 0)
                    await rt.kube.patch_status(
                        "IngestionSource", body.metadata.name, body.metadata.namespace, update
                    )
            except ListingError as exc:
                kopf.event(kopf.Body(fresh), type="Warning", reason="ListingFailed", message=str(exc))  # type: ignore[arg-type]
            except KubeError as exc:
                log.warning("IngestionSource %s: %s", body.metadata.name, exc)
        # A plain sleep, which kopf cancels when it stops the daemon. ``await stopped.wait(poll)`` waits in
        # a task of its own that outlives that cancellation and ends in a TimeoutError, which kopf, exiting,
        # raises as the operator's own failure.
        await asyncio.sleep(poll)
