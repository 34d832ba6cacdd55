"""A cycle's Beam pipeline as a Dataflow job (``spec.consolidation.runner: dataflow``).

The cycle's pod does everything else as on the direct runner (lock, extract, publish, pull, merge,
watermarks, acknowledgement); only the staging pipeline runs on Dataflow, from the consolidation flex
template (entry :mod:`beam.consolidation.flex`), through the same client the controller launches
stages with (:mod:`controller.dataflow`). The pod then waits for the job:

- the job's name is deterministic per source and *window* (the watermarks the cycle starts from, the
  positions it goes up to, the ids it merges): a cycle retried after its pod died asks for the same
  name, and Dataflow's 409 for an active job of that name re-attaches it instead of launching twice;
- its state is read every ``DATAOPS_DATAFLOW_POLL_SECONDS``, the warehouse lock refreshed meanwhile;
- a failed job fails the cycle with the job's error messages; a job running past
  ``spec.consolidation.jobTimeoutSeconds``, or a pod told to stop (SIGTERM), cancels it first.

Nothing is merged and no watermark moves unless the job succeeded: the merge transaction comes after.
The job reads the source tables from the cycle's warehouse and writes its parquet parts under the
cycle's workdir, so both must be where the job's workers can reach them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from controller.dataflow import (
    CANCELLED,
    DONE,
    FAILED,
    DataflowClient,
    DataflowError,
    DataflowJob,
    PermissionDenied,
    consolidation_job_name,
    consolidation_labels,
)
from controller.settings import DataflowSettings

log = logging.getLogger("dataops.consolidation")

IDENTITY = "The consolidation CronJob's service account (the stage service account)"
IDS_FILE = "ids.txt"


class DataflowCycleError(Exception):
    """The cycle's Dataflow job did not succeed; nothing was merged. ``reason`` is the status reason."""

    def __init__(self, message: str, reason: str, bad_input: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.bad_input = bad_input


class CycleCancelled(Exception):
    """The pod was told to stop (SIGTERM) while its job ran: the job is cancelled, nothing merged."""


@dataclass(frozen=True)
class DataflowRun:
    """How a cycle reaches Dataflow: the settings its pod was given, and how it waits."""

    settings: DataflowSettings
    poll_seconds: float = 30.0


@dataclass(frozen=True)
class LaunchedJob:
    name: str
    id: str
    state: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "id": self.id, "state": self.state}


def window_key(before: Mapping[str, Any], upto: Mapping[str, Any], ids: Sequence[str]) -> str:
    """What a cycle merges, as 16 hex digits: the same watermarks, end positions and ids, the same key."""
    doc = json.dumps({"before": before, "upto": upto, "ids": sorted(ids)}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def window_folder(root: Path, window: str) -> Path:
    """``<root>/<window>``, where the job finds its ids and leaves its parts; other windows' are gone."""
    if root.is_dir():
        for old in root.iterdir():
            if old.name != window:
                shutil.rmtree(old, ignore_errors=True)
    folder = root / window
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_ids(folder: Path, ids: Sequence[str]) -> Path:
    """The ids file, written whole (a job re-attached by a retried cycle may be reading it)."""
    path = folder / IDS_FILE
    if not path.exists():
        partial = folder / f"{IDS_FILE}.part"
        partial.write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        os.replace(partial, path)
    return path


def launch_parameters(
    source_doc: str, workdir: Path, ids: Path, staging: Path, upto: Any, buckets: int | None
) -> dict[str, str]:
    """The consolidation template's parameters (images/dataflow-template/consolidation-metadata.json)."""
    parameters = {"source": source_doc, "workdir": str(workdir), "ids": str(ids), "staging": str(staging)}
    if upto is not None:
        parameters |= {"upto_cursor": str(upto.cursor), "upto_id": str(upto.key[0])}
    if buckets:
        parameters["buckets"] = str(buckets)
    return parameters


@contextlib.contextmanager
def _sigterm_cancels() -> Iterator[None]:
    """SIGTERM raises :class:`CycleCancelled` in the waiting loop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise CycleCancelled("the cycle's pod was told to stop (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_job(
    run: DataflowRun,
    source: str,
    cycle_id: str,
    window: str,
    parameters: Mapping[str, str],
    *,
    timeout_seconds: float,
    on_launch: Callable[[LaunchedJob], None] = lambda job: None,
    heartbeat: Callable[[], None] = lambda: None,
) -> LaunchedJob:
    """Launch (or re-attach to) the window's job and wait until it is done; raises
    :class:`DataflowCycleError` when it fails, is cancelled or times out, after cancelling it."""
    missing = run.settings.missing()
    if missing:
        raise DataflowCycleError(
            "spec.consolidation.runner is dataflow, but the cycle has no Dataflow settings: set"
            f" {', '.join(missing)} (Helm values gcp.projectId, gcp.region, dataflow.consolidationTemplateSpec"
            " or dataflow.templateSpecPrefix)",
            "DataflowNotConfigured",
            bad_input=True,
        )
    name = consolidation_job_name(source, window)
    labels = consolidation_labels(run.settings, source, cycle_id, window)
    with asyncio.Runner() as runner, _sigterm_cancels():
        client = DataflowClient(run.settings, identity=IDENTITY)
        try:
            job = _launch(runner, client, name, parameters, labels)
            on_launch(LaunchedJob(job.name, job.id, job.state))
            return _wait(runner, client, job, run.poll_seconds, timeout_seconds, heartbeat)
        finally:
            runner.run(client.close())


def _launch(
    runner: asyncio.Runner,
    client: DataflowClient,
    name: str,
    parameters: Mapping[str, str],
    labels: Mapping[str, str],
) -> DataflowJob:
    try:
        job = runner.run(client.launch(name, parameters, labels))
    except PermissionDenied as exc:
        raise DataflowCycleError(str(exc), "PermissionDenied") from None
    except DataflowError as exc:
        raise DataflowCycleError(
            f"the consolidation job {name} was not launched: {exc}", "DataflowLaunchFailed"
        ) from None
    log.info("consolidation job %s: %s (%s)", name, job.id, job.state)
    return job


def _wait(
    runner: asyncio.Runner,
    client: DataflowClient,
    job: DataflowJob,
    poll_seconds: float,
    timeout_seconds: float,
    heartbeat: Callable[[], None],
) -> LaunchedJob:
    deadline = time.monotonic() + timeout_seconds
    try:
        while not job.terminal:
            if time.monotonic() >= deadline:
                raise DataflowCycleError(
                    f"Dataflow job {job.name} ({job.id}) still {job.state} after {timeout_seconds:g}s"
                    " (spec.consolidation.jobTimeoutSeconds): cancelled; nothing was merged",
                    "DataflowJobTimedOut",
                )
            time.sleep(min(poll_seconds, max(deadline - time.monotonic(), 0.0)))
            heartbeat()
            try:
                job = runner.run(client.get(job.id))
            except DataflowError as exc:  # retried with backoff inside; try again at the next poll
                log.warning("consolidation job %s: cannot read its state: %s", job.name, exc)
    except BaseException:
        if not job.terminal:
            _cancel(runner, client, job)
        raise
    if job.state == DONE:
        return LaunchedJob(job.name, job.id, job.state)
    raise _failure(runner, client, job)


def _cancel(runner: asyncio.Runner, client: DataflowClient, job: DataflowJob) -> None:
    try:
        runner.run(client.cancel(job.id))
        log.warning("consolidation job %s (%s) cancelled", job.name, job.id)
    except DataflowError as exc:
        log.warning("consolidation job %s (%s) could not be cancelled: %s", job.name, job.id, exc)


def _failure(runner: asyncio.Runner, client: DataflowClient, job: DataflowJob) -> DataflowCycleError:
    if job.state == CANCELLED:
        return DataflowCycleError(
            f"Dataflow job {job.name} ({job.id}) was cancelled before it finished; nothing was merged",
            "DataflowJobCancelled",
        )
    errors: list[str] = []
    if job.state == FAILED:
        try:
            errors = runner.run(client.error_messages(job.id))
        except DataflowError as exc:
            errors = [f"(its error messages could not be read: {exc})"]
    said = "; ".join(errors) or job.state
    return DataflowCycleError(
        f"Dataflow job {job.name} ({job.id}) failed: {said}; nothing was merged", "DataflowJobFailed"
    )
