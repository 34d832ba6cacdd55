"""The bench's second reference: a bare kopf handler that only creates a run's first Job and sets its
phase, with kopf's defaults (its progress annotations, its "succeeded" Event) and the controller's own
HTTP client. The issue's yardstick for the whole controller; run by tests/bench/bench_controller.py as
``kopf run --standalone --namespace NS tests/bench/bare_kopf.py``.
"""

from __future__ import annotations

from typing import Any

import kopf

from controller.kube import Kube
from tests.bench.bench_controller import job_doc


@kopf.on.startup()
async def start(memo: kopf.Memo, **_: Any) -> None:
    memo.kube = Kube.from_environment()


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    await memo.kube.close()


@kopf.on.create("dataops.io", "v1alpha1", "pipelineruns")
async def create(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    job = job_doc(body["metadata"]["name"])
    job["metadata"]["namespace"] = body["metadata"]["namespace"]
    await memo.kube.create_if_absent(job)
    patch.status["phase"] = "Validating"
