"""Reconcile one PipelineRun: observe its stage Jobs, ask the planner, carry out the actions.

No kopf here: the handlers call :func:`reconcile_run` and apply what it returns, so the same code is
tested without a cluster and runs under kopf unchanged.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from controller import dataflow_stage, tenancy
from controller import status as status_codec
from controller.dataflow import DataflowClient, DataflowError, DataflowJob
from controller.kube import Kube
from controller.manifests import build_stage_job, job_name
from controller.observe import image_grace_end, outcome_of
from controller.planner import (
    Action,
    Outcome,
    RecordEvent,
    RunStatus,
    StartStage,
    StopStage,
    WaitUntil,
    initial_status,
    plan,
)
from controller.settings import Settings
from controller.source_grants import SourceGrants
from controller.spec import PipelineRunSpec
from controller.spec_check import semantic_problems
from controller.stages import TERMINAL_PHASES, runs_on_dataflow


@dataclass
class Reconciled:
    status: dict[str, Any]
    events: list[RecordEvent] = field(default_factory=list)
    wake_at: datetime | None = None
    changed: bool = True


def _invalid(body: dict[str, Any], message: str, now: datetime, reason: str = "InvalidSpec") -> Reconciled:
    status = RunStatus(phase="Failed", reason=reason, message=message, start_time=now, completion_time=now)
    generation = int(body["metadata"].get("generation", 1))
    doc = status_codec.to_dict(status, generation, now, body.get("status"))
    return Reconciled(doc, [RecordEvent("Warning", reason, message)])


def parse_spec(body: dict[str, Any]) -> PipelineRunSpec | str:
    """The run's spec, or the message that says why it is invalid."""
    try:
        spec = PipelineRunSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    problems = semantic_problems(spec)
    if problems:
        return "; ".join(f"{path}: {msg}" for path, msg in problems)
    return spec


def _resume(status: RunStatus, body: dict[str, Any], spec: PipelineRunSpec) -> RunStatus:
    """``spec.rerun`` raised on a failed run: the failed stage and those after it run again."""
    done = int((body.get("status") or {}).get("rerun", 0))
    if spec.rerun <= done or status.phase != "Failed":
        return status
    stages = []
    seen_failure = False
    for s in status.stages:
        if s.state != "Succeeded" or seen_failure:
            seen_failure = True
            s = replace(
                s,
                state="Pending",
                attempt=s.attempt,
                app_failures=0,
                infra_failures=0,
                retry_after=None,
                completion_time=None,
                message="",
                reason="",
            )
        stages.append(s)
    return replace(
        status,
        phase="Pending",
        stages=tuple(stages),
        completion_time=None,
        reason="Rerun",
        message=f"re-run {spec.rerun} from the failed stage",
    )


async def _observe(
    kube: Kube,
    namespace: str,
    name: str,
    status: RunStatus,
    now: datetime,
    settings: Settings,
    spec: PipelineRunSpec,
    dataflow: DataflowClient | None,
) -> tuple[dict[str, Outcome], datetime | None]:
    """Each running stage's outcome, and when a pod that cannot start its container runs out of grace
    (the run is looked at again then: no event marks that moment)."""
    observed: dict[str, Outcome] = {}
    grace_end: datetime | None = None
    for st in status.stages:
        if st.state != "Running":
            continue
        if runs_on_dataflow(spec, st.name):
            found = await dataflow_stage.observe(dataflow, namespace, name, st, settings)
            if found is not None:
                observed[st.name] = found
            continue
        jname = job_name(name, st.name, st.attempt)
        job, pods = await asyncio.gather(
            kube.get("Job", jname, namespace),
            kube.list("Pod", namespace, {"job-name": jname}),
        )
        pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("job-name") == jname]
        outcome = outcome_of(st.name, st.attempt, job, pods, now, settings.image_pull_grace_seconds)
        observed[st.name] = outcome
        if outcome.kind in ("app", "infra", "bad_input") and job is not None and not _finished(job):
            await kube.delete("Job", jname, namespace)
        end = image_grace_end(pods, settings.image_pull_grace_seconds) if outcome.kind == "running" else None
        if end is not None:
            grace_end = end if grace_end is None else min(grace_end, end)
    return observed, grace_end


def _finished(job: dict[str, Any]) -> bool:
    conds = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conds)


def queued(body: dict[str, Any], spec: PipelineRunSpec, message: str, now: datetime) -> Reconciled:
    """A run that may not start yet: Pending, reason Queued, its place in the message."""
    previous = body.get("status") or {}
    status = replace(initial_status(spec), reason="Queued", message=message)
    doc = status_codec.to_dict(status, int(body["metadata"].get("generation", 1)), now, previous)
    doc["rerun"] = spec.rerun
    changed = _essence(doc) != _essence(previous)
    first = previous.get("reason") != "Queued"
    events = [RecordEvent("Normal", "Queued", message)] if first else []
    return Reconciled(doc, events, None, changed)


async def reconcile_run(
    body: dict[str, Any],
    kube: Kube,
    settings: Settings,
    now: datetime,
    dataflow: DataflowClient | None = None,
    sources: SourceGrants | None = None,
    spec: PipelineRunSpec | str | None = None,
) -> Reconciled:
    """The run's next status and what it takes to get there; ``spec``: ``parse_spec(body)`` if done."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    generation = int(meta.get("generation", 1))
    previous = body.get("status") or {}
    spec = parse_spec(body) if spec is None else spec
    if isinstance(spec, str):
        if previous.get("phase") == "Failed" and previous.get("reason") == "InvalidSpec":
            return Reconciled(previous, changed=False)
        return _invalid(body, spec, now)
    if previous.get("phase") not in TERMINAL_PHASES and not _started(previous):
        refused = await _refused(spec, namespace, kube, settings, sources)
        if refused:
            return _invalid(body, "; ".join(refused), now, reason="NotGranted")
    status = _resume(status_codec.from_dict(previous), body, spec)
    if status.phase in TERMINAL_PHASES and not spec.cancel:
        return Reconciled(previous, changed=False)
    observed, grace_end = await _observe(kube, namespace, name, status, now, settings, spec, dataflow)
    step = plan(spec, status, observed, now)
    wake: datetime | None = grace_end + timedelta(seconds=1) if grace_end is not None else None
    started_at = (step.status.start_time or now).isoformat(timespec="seconds")
    status, actions = step.status, list(step.actions)
    todo: deque[Action] = deque(step.actions)
    while todo:
        action = todo.popleft()
        if isinstance(action, StartStage) and runs_on_dataflow(spec, action.stage):
            launched = await dataflow_stage.launch(
                dataflow, body, action.stage, action.attempt, started_at, settings
            )
            if isinstance(launched, Outcome):  # refused for good: the planner decides what follows
                again = plan(spec, status, {action.stage: launched}, now)
                status = again.status
                actions.extend(again.actions)
                todo.extend(again.actions)
                continue
            status = _stage_ran_as(status, action.stage, launched)
        elif isinstance(action, StartStage):
            job = build_stage_job(body, action.stage, action.attempt, started_at, settings)
            await kube.create_if_absent(job)
            status = _stage_ran_as(status, action.stage, job["metadata"]["name"])
        elif isinstance(action, StopStage) and runs_on_dataflow(spec, action.stage):
            stopped = await _stop_dataflow(dataflow, namespace, name, status, action)
            if stopped is not None:
                actions.append(stopped)
        elif isinstance(action, StopStage):
            await kube.delete("Job", job_name(name, action.stage, action.attempt), namespace)
        elif isinstance(action, WaitUntil):
            wake = action.when if wake is None else min(wake, action.when)
    if any(s.state == "Running" and runs_on_dataflow(spec, s.name) for s in status.stages):
        poll = now + timedelta(seconds=settings.dataflow_poll_seconds)
        wake = poll if wake is None else min(wake, poll)
    doc = status_codec.to_dict(status, generation, now, previous)
    doc["rerun"] = spec.rerun
    changed = _essence(doc) != _essence(previous)
    events = [a for a in actions if isinstance(a, RecordEvent)]
    return Reconciled(doc, events, wake, changed)


def _started(status: dict[str, Any]) -> bool:
    """Whether any stage attempt has started: grants are checked before that, not withdrawn mid-run."""
    return any(int(s.get("attempt") or 0) > 0 for s in status.get("stages") or [])


async def _refused(
    spec: PipelineRunSpec, namespace: str, kube: Kube, settings: Settings, sources: SourceGrants | None
) -> list[str]:
    """What the run reaches outside its namespace's grants (Helm's and its IngestionSources')."""
    grants = settings.grants
    if not grants.enabled:
        return []
    if sources is None or not grants.from_sources:
        return tenancy.problems(spec, namespace, grants)

    async def listed(ns: str) -> list[dict[str, Any]]:
        return await kube.list("IngestionSource", ns, {})

    refused = tenancy.problems(spec, namespace, grants, await sources.of(namespace, listed))
    if refused:  # confirmed on a fresh listing: the granting source's event may not have come yet
        refused = tenancy.problems(spec, namespace, grants, await sources.of(namespace, listed, fresh=True))
    return refused


def _stage_ran_as(status: RunStatus, stage: str, ran: str | DataflowJob) -> RunStatus:
    """The stage record with the name of the Job, or the name and id of the Dataflow job, it runs as."""
    job, job_id = (ran, "") if isinstance(ran, str) else (ran.name, ran.id)
    return replace(
        status,
        stages=tuple(
            replace(s, job=job, dataflow_job_id=job_id) if s.name == stage else s for s in status.stages
        ),
    )


async def _stop_dataflow(
    dataflow: DataflowClient | None, namespace: str, name: str, status: RunStatus, action: StopStage
) -> RecordEvent | None:
    record = status.stage(action.stage)
    if record is None:
        return None
    try:
        await dataflow_stage.stop(dataflow, namespace, name, record)
    except DataflowError as exc:
        if exc.temporary:
            raise
        return RecordEvent("Warning", "DataflowCancelFailed", f"stage {action.stage}: {exc}")
    return None


def _essence(status: dict[str, Any]) -> Any:
    """A status without its timestamps of conditions, to tell whether anything really changed."""
    conds = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions", [])]
    return {**{k: v for k, v in status.items() if k != "conditions"}, "conditions": conds}
