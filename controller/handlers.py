"""kopf handlers: decorators only, each body one call into ``controller.operator``."""

from __future__ import annotations

from typing import Any

import kopf

from controller import operator
from controller.crd import GROUP, VERSION
from controller.kube import Kube
from controller.manifests import LABEL_RUN

RUNS = (GROUP, VERSION, "pipelineruns")


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    memo.rt = operator.new_runtime(settings, Kube.from_environment())


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    await operator.close_runtime(memo.rt)


@kopf.on.event(*RUNS)
async def run_changed(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    if type == "DELETED":
        operator.forget(memo.rt, body.metadata.namespace or "default", body.metadata.name or "")
        return
    await operator.reconcile(
        memo.rt, body.metadata.namespace or "default", body.metadata.name or "", dict(body)
    )


@kopf.on.event(
    "batch",
    "v1",
    "jobs",
    labels={LABEL_RUN: kopf.PRESENT},
    when=lambda body, type, **_: operator.job_news(body, type),
)
async def stage_job_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    run = operator.owner_run(dict(body))
    if run:
        await operator.reconcile(memo.rt, body.metadata.namespace or "default", run, None)


@kopf.on.event(
    "",
    "v1",
    "pods",
    labels={LABEL_RUN: kopf.PRESENT},
    when=lambda body, **_: operator.pod_stuck(body),
)
async def stage_pod_stuck(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await operator.pod_news(memo.rt, dict(body))


SOURCES = (GROUP, VERSION, "ingestionsources")


@kopf.on.event(*SOURCES)
async def source_seen(body: kopf.Body, memo: kopf.Memo, type: str | None, **_: Any) -> None:
    memo.rt.sources.observe(dict(body), type)  # its spec.grants, for the tenancy check of runs


@kopf.on.create(*SOURCES)
@kopf.on.update(*SOURCES, field="spec")
@kopf.on.resume(*SOURCES)
async def source_changed(body: kopf.Body, memo: kopf.Memo, patch: kopf.Patch, **_: Any) -> None:
    patch.status.update(await operator.reconcile_source(memo.rt, dict(body)))


@kopf.daemon(*SOURCES, cancellation_timeout=10.0)
async def source_loop(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    await operator.source_loop(memo.rt, body, stopped)
