"""IngestionSource: its consolidation CronJob, and one PipelineRun per new object under its prefix.

New objects are found two ways. A ``gs://`` prefix with ``spec.files.notifications`` pulls the bucket's
OBJECT_FINALIZE notifications first (every few seconds, :mod:`controller.gcs`); every ``pollSeconds``
the prefix is listed as well, which catches what a notification missed. A local folder is listed.
A run's name comes from the object's URI and generation, so a file is never run twice, whatever
restarts, replays or double sightings (notification and listing) happen; a ``gs://`` run reads the
very generation it was named for. The source's status keeps a (generation, uri) watermark, moved by
listings only (they see every object, in order), so that runs pruned by the history limit are not
run again.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from controller.kube import Kube
from controller.manifests import (
    LABEL_SOURCE,
    _short,
    build_consolidation_cronjob,
    build_file_run,
    cronjob_name,
)
from controller.objects import ListingError, ObjectVersion
from controller.observe import _result, _terminated
from controller.settings import Settings
from controller.spec import IngestionSourceSpec
from controller.spec_check import semantic_problems
from controller.stages import TERMINAL_PHASES

if TYPE_CHECKING:
    from controller.gcs import Notified


def list_local(prefix: str, pattern: str) -> list[ObjectVersion]:
    """Objects of a local folder prefix; the generation is the file's modification time in ns."""
    root = Path(prefix.removeprefix("file://"))
    if not root.is_dir():
        return []
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if fnmatch.fnmatch(rel, pattern) and not name.startswith("."):
                found.append(ObjectVersion(str(path.stat().st_mtime_ns), str(path)))
    return sorted(found, key=ObjectVersion.key)


def list_objects(prefix: str, pattern: str) -> list[ObjectVersion]:
    if prefix.startswith("gs://"):
        from controller import gcs

        return gcs.list_gcs(prefix, pattern)
    if "://" in prefix and not prefix.startswith("file://"):
        raise ListingError(f"spec.files.prefix {prefix!r}: use gs://BUCKET/PREFIX or a local folder")
    return list_local(prefix, pattern)


def new_objects(objects: list[ObjectVersion], watermark: tuple[int, str] | None) -> list[ObjectVersion]:
    """Objects after the watermark, oldest first. Pure."""
    return [o for o in objects if watermark is None or o.key() > watermark]


def parse_source_spec(body: dict[str, Any]) -> IngestionSourceSpec | str:
    try:
        spec = IngestionSourceSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if spec.files is not None:
        problems = semantic_problems(spec.files.template)
        if problems:
            return "; ".join(f"spec.files.template{p.removeprefix('spec')}: {m}" for p, m in problems)
    return spec


async def reconcile_cronjob(
    body: dict[str, Any], spec: IngestionSourceSpec, kube: Kube, settings: Settings
) -> dict[str, Any]:
    """Create, update or remove the consolidation CronJob; report the last cycle."""
    meta = body["metadata"]
    namespace, name = meta.get("namespace", "default"), cronjob_name(meta["name"])
    if spec.consolidation is None:
        await kube.delete("CronJob", name, namespace)
        return {}
    wanted = build_consolidation_cronjob(body, settings)
    current, created = await kube.create_if_absent(wanted)
    if not created and current.get("spec") != wanted["spec"]:
        await kube.patch("CronJob", name, namespace, {"spec": wanted["spec"]})
    return await last_cycle(kube, namespace, meta["name"])


async def last_cycle(kube: Kube, namespace: str, source: str) -> dict[str, Any]:
    """The newest finished consolidation Job: when, outcome, rows merged, watermark."""
    jobs = await kube.list("Job", namespace, {LABEL_SOURCE: _short(source, 63)})
    finished = [j for j in jobs if (j.get("status") or {}).get("completionTime") or _failed(j)]
    if not finished:
        return {}
    job = max(finished, key=lambda j: j["metadata"].get("creationTimestamp", ""))
    pods = await kube.list("Pod", namespace, {"job-name": job["metadata"]["name"]})
    pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == job["metadata"]["name"]]
    term = next((t for t in map(_terminated, pods) if t), None)
    result = _result(term.get("message") if term else None)
    return {
        "time": (job.get("status") or {}).get("completionTime") or job["metadata"].get("creationTimestamp"),
        "job": job["metadata"]["name"],
        "outcome": "Failed" if _failed(job) else "Succeeded",
        "rowsMerged": int(result.get("merged", result.get("rows_merged", 0)) or 0),
        "watermark": result.get("watermark_after") or result.get("watermark"),
        "message": str(result.get("message", ""))[:500],
    }


def _failed(job: dict[str, Any]) -> bool:
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Failed" and c.get("status") == "True" for c in conds)


def listing_due(spec: IngestionSourceSpec, previous: dict[str, Any], now: datetime) -> bool:
    """Without notifications, every poll lists; with them, a listing every ``pollSeconds``. Pure."""
    assert spec.files is not None
    if spec.files.notifications is None or not previous.get("lastListed"):
        return True
    try:
        last = datetime.fromisoformat(str(previous["lastListed"]))
    except ValueError:
        return True
    return now - last >= timedelta(seconds=spec.files.poll_seconds)


async def _notified(spec: IngestionSourceSpec, settings: Settings | None) -> Notified | None:
    """This poll's notifications, or None when the source has none."""
    files = spec.files
    assert files is not None
    if files.notifications is None:
        return None
    if not files.prefix.startswith("gs://"):
        raise ListingError(
            f"spec.files.notifications: notifications need a gs:// prefix, not {files.prefix!r}"
        )
    project = settings.pubsub_project if settings else None
    if not project:
        raise ListingError(
            "spec.files.notifications: no Pub/Sub project: set DATAOPS_PUBSUB_PROJECT (Helm: gcp.projectId)"
        )
    from controller import gcs

    return await asyncio.to_thread(
        gcs.pull_notifications,
        project,
        files.notifications.subscription,
        files.prefix,
        files.pattern,
        files.notifications.max_messages,
    )


async def discover_files(
    body: dict[str, Any],
    spec: IngestionSourceSpec,
    kube: Kube,
    now: datetime,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Create a run for each new object (within maxConcurrentRuns), prune history; the files status."""
    assert spec.files is not None
    meta = body["metadata"]
    namespace = meta.get("namespace", "default")
    previous = (body.get("status") or {}).get("files") or {}
    mark = previous.get("watermark")
    watermark = (int(mark["generation"]), str(mark["uri"])) if mark else None
    runs = await kube.list("PipelineRun", namespace, {LABEL_SOURCE: _short(meta["name"], 63)})
    active = [r for r in runs if (r.get("status") or {}).get("phase") not in TERMINAL_PHASES]
    created = 0
    listed_now = False
    problem = None
    if not spec.suspend:
        try:
            notified = await _notified(spec, settings)
        except ListingError as exc:  # the listing goes on without them: named in the status and an Event
            notified, problem = None, str(exc)
        listed: set[ObjectVersion] = set()
        if listing_due(spec, previous, now):
            found = await asyncio.to_thread(list_objects, spec.files.prefix, spec.files.pattern)
            listed, listed_now = set(new_objects(found, watermark)), True
        heard = set(notified.objects) if notified is not None else set()
        candidates = sorted(listed | set(new_objects(sorted(heard), watermark)), key=ObjectVersion.key)
        room = max(spec.files.max_concurrent_runs - len(active), 0)
        handled: set[ObjectVersion] = set()
        for obj in candidates:
            if room == 0:
                break
            _, made = await kube.create_if_absent(build_file_run(body, obj.uri, obj.generation))
            handled.add(obj)
            if made:
                room -= 1
                created += 1
            if obj in listed:  # listings see every object in order: only they move the watermark
                watermark = obj.key()
        if notified is not None:
            await _settle(spec, settings, notified, heard - (set(candidates) - handled))
    await prune_history(kube, namespace, runs, spec.history_limit)
    status: dict[str, Any] = {
        "activeRuns": len(active) + created,
        "lastListed": now.isoformat() if listed_now else previous.get("lastListed", now.isoformat()),
        "runsCreated": int(previous.get("runsCreated", 0)) + created,
    }
    if watermark is not None:
        status["watermark"] = {"generation": str(watermark[0]), "uri": watermark[1]}
    if problem is not None:
        status["notificationProblem"] = problem[:1000]
    return status


async def _settle(
    spec: IngestionSourceSpec, settings: Settings | None, notified: Notified, done: set[ObjectVersion]
) -> None:
    """Acknowledge the notifications handled (or not ours); give back those left for lack of room."""
    from controller import gcs

    assert spec.files is not None and spec.files.notifications is not None and settings is not None
    ack = list(notified.other_ack_ids) + [a for obj in done for a in notified.objects[obj]]
    nack = [a for obj, ids in notified.objects.items() if obj not in done for a in ids]
    await asyncio.to_thread(
        gcs.settle, str(settings.pubsub_project), spec.files.notifications.subscription, ack, nack
    )


async def prune_history(kube: Kube, namespace: str, runs: list[dict[str, Any]], limit: int) -> None:
    """Keep the newest ``limit`` finished runs of each outcome; delete older ones."""
    for phase in ("Succeeded", "Failed", "Cancelled"):
        done = sorted(
            (r for r in runs if (r.get("status") or {}).get("phase") == phase),
            key=lambda r: (r.get("status") or {}).get("completionTime") or "",
            reverse=True,
        )
        for run in done[limit:]:
            await kube.delete("PipelineRun", run["metadata"]["name"], namespace)
