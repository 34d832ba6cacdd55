"""The controller's runtime: kopf settings, one Kubernetes client, per-run serialisation and wake-ups.

Handlers (``controller/handlers.py``) are one call each into this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram

from controller.kube import Kube, KubeError
from controller.manifests import LABEL_RUN
from controller.objects import ListingError
from controller.reconcile import Reconciled, reconcile_run
from controller.settings import Settings, settings_from_env

log = logging.getLogger("dataops.controller")

FINALIZER = "dataops.io/finalizer"

RECONCILES = Counter("dataops_reconciles_total", "PipelineRun reconciles", ["outcome"])
TRANSITIONS = Counter("dataops_run_transitions_total", "PipelineRun phase transitions", ["phase"])
RUNS_BY_PHASE = Gauge("dataops_runs", "PipelineRuns seen by this controller, by phase", ["phase"])
STAGE_SECONDS = Histogram(
    "dataops_stage_duration_seconds",
    "Stage durations",
    ["stage", "state"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # run key -> (resourceVersion, status) of our last write: an event showing anything else is older
    written: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    phases: dict[str, str] = field(default_factory=dict)


def configure(settings: kopf.OperatorSettings, env: dict[str, str] | None = None) -> Settings:
    """kopf's settings, all in one place."""
    ours = settings_from_env(env if env is not None else dict(os.environ))
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dataops.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="dataops.io")
    # A watch that silently stops delivering is restarted after this many seconds at most.
    settings.watching.server_timeout = ours.watch_timeout_seconds
    settings.watching.client_timeout = ours.watch_timeout_seconds + 30
    settings.watching.connect_timeout = 30
    # kopf's own handler logs are not posted as Events: only our transitions are.
    settings.posting.level = logging.ERROR
    settings.peering.name = ours.peering
    settings.peering.mandatory = False
    # Replicas of equal priority all pause each other: each pod gets its own, so one leads and the
    # others stand by until its keep-alive lapses.
    settings.peering.priority = random.randint(1, 32767)
    settings.batching.worker_limit = 200
    # 429 and 5xx from the API server: kopf backs off (and honours Retry-After) with these delays.
    settings.networking.error_backoffs = [1, 2, 5, 10, 30]
    settings.networking.request_timeout = 60
    return ours


def _key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


async def reconcile(rt: Runtime, namespace: str, name: str, body: dict[str, Any] | None) -> None:
    """Reconcile one run, one at a time per run, from a fresh enough view of it."""
    key = _key(namespace, name)
    async with rt.locks[key]:
        if body is None or (key in rt.written and not _is_our_last_write(body, rt.written[key])):
            body = await rt.kube.get("PipelineRun", name, namespace)
            if body is None:
                _forget(rt, key)
                return
        if body["metadata"].get("deletionTimestamp"):
            return
        try:
            result = await reconcile_run(body, rt.kube, rt.settings, rt.clock())
        except KubeError as exc:
            RECONCILES.labels("error").inc()
            if exc.temporary:
                raise kopf.TemporaryError(str(exc), delay=exc.retry_after or 5) from None
            raise
        RECONCILES.labels("ok").inc()
        if result.changed:
            written = await rt.kube.patch_status("PipelineRun", name, namespace, result.status)
            rt.written[key] = (written["metadata"]["resourceVersion"], written.get("status") or {})
            _record_metrics(rt, key, result)
        for ev in result.events:
            kopf.event(kopf.Body(body), type=ev.type, reason=ev.reason, message=ev.message[:1000])  # type: ignore[arg-type]
        _schedule(rt, namespace, name, result)


def _is_our_last_write(body: dict[str, Any], last: tuple[str, dict[str, Any]]) -> bool:
    """Whether an event's body is at least as new as our last status write.

    The resourceVersion says so on a real API server; the status comparison also catches servers
    (and emulators) that do not bump it, so a stale event never overwrites a newer status.
    """
    return bool(body["metadata"].get("resourceVersion") == last[0] and (body.get("status") or {}) == last[1])


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
    """Wake the run at its next backoff or deadline (a lost timer is caught by the resync timer)."""
    key = _key(namespace, name)
    old = rt.timers.pop(key, None)
    if old is not None:
        old.cancel()
    if result.wake_at is None:
        return
    delay = max(0.0, (result.wake_at - rt.clock()).total_seconds()) + 0.05
    loop = asyncio.get_running_loop()
    rt.timers[key] = loop.call_later(delay, lambda: _spawn(reconcile(rt, namespace, name, None)))


def _spawn(coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("timed reconcile failed: %s", task.exception())


def _forget(rt: Runtime, key: str) -> None:
    rt.written.pop(key, None)
    timer = rt.timers.pop(key, None)
    if timer is not None:
        timer.cancel()
    phase = rt.phases.pop(key, None)
    if phase:
        RUNS_BY_PHASE.labels(phase).dec()


async def cleanup_run(rt: Runtime, namespace: str, name: str) -> None:
    """The finalizer: stop everything a run started, then let it go."""
    _forget(rt, _key(namespace, name))
    for job in await rt.kube.list("Job", namespace, {LABEL_RUN: name}):
        await rt.kube.delete("Job", job["metadata"]["name"], namespace)


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
        await stopped.wait(poll)
