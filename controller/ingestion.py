"""IngestionSource: its consolidation CronJob, and one PipelineRun per new object under its prefix.

New objects are found by listing the prefix (production adds GCS notifications in front of this, the
listing stays as the fallback). A run's name comes from the object's URI and generation, so a file is
never run twice, whatever restarts or replays happen; the source's status keeps a (generation, uri)
watermark so that runs pruned by the history limit are not run again.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller.kube import Kube
from controller.manifests import (
    LABEL_SOURCE,
    _short,
    build_consolidation_cronjob,
    build_file_run,
    cronjob_name,
)
from controller.observe import _result, _terminated
from controller.settings import Settings
from controller.spec import IngestionSourceSpec
from controller.spec_check import semantic_problems
from controller.stages import TERMINAL_PHASES


@dataclass(frozen=True, order=True)
class ObjectVersion:
    generation: str
    uri: str

    def key(self) -> tuple[int, str]:
        return (int(self.generation), self.uri)


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


class ListingError(Exception):
    """The prefix cannot be listed; the message says why and what to do."""


def list_objects(prefix: str, pattern: str) -> list[ObjectVersion]:
    if "://" in prefix and not prefix.startswith("file://"):
        raise ListingError(
            f"spec.files.prefix {prefix!r}: this controller lists local folders only; "
            "bucket listing comes with the GCS adapter"
        )
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


async def discover_files(
    body: dict[str, Any], spec: IngestionSourceSpec, kube: Kube, now: datetime
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
    if not spec.suspend:
        room = max(spec.files.max_concurrent_runs - len(active), 0)
        for obj in new_objects(list_objects(spec.files.prefix, spec.files.pattern), watermark)[:room]:
            await kube.create_if_absent(build_file_run(body, obj.uri, obj.generation))
            watermark = obj.key()
            created += 1
    await prune_history(kube, namespace, runs, spec.history_limit)
    status: dict[str, Any] = {
        "activeRuns": len(active) + created,
        "lastListed": now.isoformat(),
        "runsCreated": int(previous.get("runsCreated", 0)) + created,
    }
    if watermark is not None:
        status["watermark"] = {"generation": str(watermark[0]), "uri": watermark[1]}
    return status


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
