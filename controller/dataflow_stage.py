"""A stage attempt run as a Dataflow job (``runner: dataflow``): launch it, observe it, stop it.

The executor's side of :mod:`controller.dataflow`: what the reconciler calls where a Kubernetes stage
would create, read or delete a Job. The template parameters are the stage command's own arguments
(``beam/stages/flex.py`` turns them back into ``python -m beam.stages STAGE ...``).
"""

from __future__ import annotations

import logging
from typing import Any

from controller.dataflow import (
    DataflowClient,
    DataflowError,
    DataflowJob,
    JobNotFound,
    job_labels,
    job_name,
    launch_request,
    location_url,
)
from controller.manifests import run_document
from controller.observe import outcome_of_dataflow_job
from controller.planner import Outcome, StageStatus
from controller.settings import Settings

log = logging.getLogger("dataops.dataflow")


def template_parameters(
    run: dict[str, Any], stage: str, started_at: str, settings: Settings
) -> dict[str, str]:
    """The flex template parameters of one stage (images/dataflow-template/stage-metadata.json)."""
    return {
        "stage": stage,
        "run": run_document(run),
        "workdir": settings.workdir,
        "started_at": started_at,
    }


def _launch_of(
    run: dict[str, Any], stage: str, attempt: int, started_at: str, settings: Settings
) -> tuple[str, dict[str, str], dict[str, str]]:
    """The job name, template parameters and labels of one stage attempt."""
    meta = run["metadata"]
    namespace = meta.get("namespace", "default")
    name = job_name(namespace, meta["name"], stage, attempt)
    labels = job_labels(settings.dataflow, namespace, meta["name"], meta.get("uid", ""), stage, attempt)
    return name, template_parameters(run, stage, started_at, settings), labels


def launch_document(
    run: dict[str, Any], stage: str, attempt: int, started_at: str, settings: Settings
) -> dict[str, Any]:
    """The request that launches a stage attempt on Dataflow, as ``dataops render`` prints it."""
    name, parameters, labels = _launch_of(run, stage, attempt, started_at, settings)
    return {
        "dataflowLaunch": {
            "method": "POST",
            "url": f"{location_url(settings.dataflow)}/flexTemplates:launch",
            "body": launch_request(settings.dataflow, name, parameters, labels),
        }
    }


def not_configured(stage: str, attempt: int, settings: Settings) -> Outcome | None:
    missing = settings.dataflow.missing()
    if not missing:
        return None
    return Outcome(
        stage,
        attempt,
        "bad_input",
        message=f"spec.runner is dataflow, but the controller has no Dataflow settings: set {', '.join(missing)} "
        "(Helm values gcp.projectId, gcp.region, dataflow.templateSpec)",
        reason="DataflowNotConfigured",
    )


async def launch(
    client: DataflowClient | None,
    run: dict[str, Any],
    stage: str,
    attempt: int,
    started_at: str,
    settings: Settings,
) -> DataflowJob | Outcome:
    """Launch the attempt's job (or re-attach to it); an Outcome when Dataflow refuses it for good.

    Raises :class:`DataflowError` when it may work later (quota, unavailable): nothing is recorded,
    and the next reconcile launches the same name again.
    """
    refused = not_configured(stage, attempt, settings)
    if refused is not None or client is None:
        return refused or Outcome(stage, attempt, "bad_input", reason="DataflowNotConfigured")
    name, parameters, labels = _launch_of(run, stage, attempt, started_at, settings)
    try:
        return await client.launch(name, parameters, labels)
    except DataflowError as exc:
        if exc.temporary:
            raise
        reason = "PermissionDenied" if exc.status == 403 else "DataflowLaunchFailed"
        return Outcome(stage, attempt, "app", message=str(exc), reason=reason)


async def observe(
    client: DataflowClient | None, namespace: str, run: str, st: StageStatus, settings: Settings
) -> Outcome | None:
    """The attempt's outcome from its job's state; None when Dataflow cannot tell right now."""
    refused = not_configured(st.name, st.attempt, settings)
    if refused is not None or client is None:
        return refused or Outcome(st.name, st.attempt, "bad_input", reason="DataflowNotConfigured")
    name = st.job or job_name(namespace, run, st.name, st.attempt)
    try:
        if st.dataflow_job_id:
            try:
                job: DataflowJob | None = await client.get(st.dataflow_job_id)
            except JobNotFound:
                job = None
        else:
            job = await client.find_active(name)
    except DataflowError as exc:
        log.warning("run %s/%s stage %s: cannot read its Dataflow job: %s", namespace, run, st.name, exc)
        return None
    state = job.state if job is not None else None
    errors: list[str] = []
    counters: dict[str, int] = {}
    try:  # the job's end is known: what it says about it is a bonus, never a reason to wait
        if job is not None and state == "JOB_STATE_FAILED":
            errors = await client.error_messages(job.id)
        if job is not None and state == "JOB_STATE_DONE":
            counters = await client.counters(job.id)
    except DataflowError as exc:
        log.warning("run %s/%s stage %s: Dataflow job %s: %s", namespace, run, st.name, state, exc)
        if state == "JOB_STATE_FAILED":
            errors = [f"(its error messages could not be read: {exc})"]
    job_id = job.id if job is not None else st.dataflow_job_id or "?"
    return outcome_of_dataflow_job(st.name, st.attempt, job_id, name, state, errors, counters)


async def stop(client: DataflowClient | None, namespace: str, run: str, st: StageStatus) -> None:
    """Cancel the attempt's job, found by id or else by its name; one already finished is left alone."""
    if client is None:
        return
    job_id = st.dataflow_job_id
    if not job_id:
        active = await client.find_active(st.job or job_name(namespace, run, st.name, st.attempt))
        if active is None:
            return
        job_id = active.id
    await client.cancel(job_id)
    log.info("run %s/%s stage %s: Dataflow job %s cancelled", namespace, run, st.name, job_id)
