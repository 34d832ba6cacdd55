"""The controller records the report the last stage wrote in the PipelineRun's status (kmock's Kubernetes
API emulator: no cluster). The final Event's text is pinned in test_report_status.py: kmock refuses
kopf's repeated Event names, so Events cannot be read back here."""

from __future__ import annotations

from typing import Any

import kmock
import pytest

from tests.integration.test_controller_kmock import SPEC
from tests.kmock_cluster import JOBS, RUNS, finish_job, get_json, operator, wait_for

pytestmark = pytest.mark.integration

REPORT = "gs://reports-bucket/runs/default/shown/report.html"


async def test_report_of_the_last_stage_is_in_the_runs_status(
    cluster: kmock.KubernetesEmulator,
) -> None:
    spec = {k: v for k, v in SPEC.items() if k != "transform"}
    await cluster.post(
        RUNS,
        json={
            "apiVersion": "dataops.io/v1alpha1",
            "kind": "PipelineRun",
            "metadata": {"name": "shown", "namespace": "default", "uid": "u9", "resourceVersion": "1"},
            "spec": spec,
        },
    )
    async with operator() as runner:
        await wait_for(lambda: get_json(cluster, f"{JOBS}/shown-validate-1"))
        await finish_job(cluster, "shown-validate-1", 0, {"rows_in": 3, "rows_out": 3})
        await wait_for(lambda: get_json(cluster, f"{JOBS}/shown-load-1"))
        await finish_job(cluster, "shown-load-1", 0, {"rows_in": 3, "rows_out": 3, "report": REPORT})

        async def succeeded() -> dict[str, Any] | None:
            run = await get_json(cluster, f"{RUNS}/shown")
            return run if run and run.get("status", {}).get("phase") == "Succeeded" else None

        run = await wait_for(succeeded)
    assert runner.exception is None
    assert run["status"]["report"] == REPORT
