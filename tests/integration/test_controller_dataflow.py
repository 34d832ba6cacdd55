"""The controller with ``runner: dataflow``, on kmock, against the loopback Dataflow API.

validate and load are Kubernetes Jobs (finished by hand, as in test_controller_kmock.py; the workdir
already holds the loaded table); transform and aggregate are launched on the Dataflow double, which
runs them for real on the DirectRunner, and are polled until their jobs end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import pytest

from controller import dataflow_stage
from controller.dataflow import DataflowClient, DataflowJob
from controller.settings import DataflowSettings, Settings
from tests.doubles.dataflow_api import DataflowDouble, dataflow_double
from tests.doubles.stage_runs import BDS, SPEC, TDS, seed_raw_table, table_rows
from tests.kmock_cluster import JOBS, RUNS, finish_job, get_json, operator, post_run, wait_for

pytestmark = pytest.mark.integration

EVENTS = "/api/v1/namespaces/default/events"


@pytest.fixture
def double() -> Iterator[DataflowDouble]:
    with dataflow_double("test-project", "europe-west1") as d:
        yield d


@pytest.fixture
async def dataflow_cluster(
    cluster: kmock.KubernetesEmulator, double: DataflowDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[kmock.KubernetesEmulator]:
    workdir = tmp_path / "work"
    seed_raw_table(workdir)
    for name, value in {
        "DATAOPS_WORKDIR": str(workdir),
        "DATAOPS_DATAFLOW_PROJECT": "test-project",
        "DATAOPS_DATAFLOW_REGION": "europe-west1",
        "DATAOPS_DATAFLOW_TEMPLATE": "gs://staging/templates/stage.json",
        "DATAOPS_DATAFLOW_SERVICE_ACCOUNT": "worker@test-project.iam.gserviceaccount.com",
        "DATAOPS_DATAFLOW_ENDPOINT": double.url,
        "DATAOPS_DATAFLOW_CREDENTIALS": "anonymous",
        "DATAOPS_DATAFLOW_POLL_SECONDS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    yield cluster


async def load_by_hand(k: kmock.KubernetesEmulator, name: str) -> None:
    """validate and load run as Jobs; their pods' outcomes are written as the kubelet would."""
    await wait_for(lambda: get_json(k, f"{JOBS}/{name}-validate-1"))
    await finish_job(k, f"{name}-validate-1", 0, {"rows_in": 4, "rows_out": 4, "message": "valid"})
    await wait_for(lambda: get_json(k, f"{JOBS}/{name}-load-1"))
    await finish_job(k, f"{name}-load-1", 0, {"rows_in": 4, "rows_out": 4, "message": "loaded"})


def phase_is(k: kmock.KubernetesEmulator, name: str, phase: str) -> Any:
    async def probe() -> dict[str, Any] | None:
        run = await get_json(k, f"{RUNS}/{name}")
        return run if run and (run.get("status") or {}).get("phase") == phase else None

    return probe


def launched(double: DataflowDouble, name: str) -> Any:
    async def probe() -> bool:
        return any(j.resource["name"] == name for j in list(double.jobs.values()))

    return probe


def warning_saying(k: kmock.KubernetesEmulator, text: str) -> Any:
    """A Warning Event the controller posted with this text (read from the requests kmock received:
    it stores only the first Event of a generateName)."""

    async def probe() -> dict[str, Any] | None:
        for r in list(k):
            event = r.data if r.url.path == EVENTS and isinstance(r.data, dict) else {}
            if event.get("type") == "Warning" and text in event.get("message", ""):
                return event
        return None

    return probe


async def test_beam_stages_run_as_dataflow_jobs_until_the_run_succeeds(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble, tmp_path: Path
) -> None:
    await post_run(dataflow_cluster, "shop", SPEC)
    async with operator() as runner:
        await load_by_hand(dataflow_cluster, "shop")
        run = await wait_for(phase_is(dataflow_cluster, "shop", "Succeeded"), timeout=300)
    assert runner.exception is None
    stages = {s["name"]: s for s in run["status"]["stages"]}
    transform, aggregate = (
        double.job_named("default-shop-transform-1"),
        double.job_named("default-shop-aggregate-1"),
    )
    assert stages["transform"]["dataflowJobId"] == transform.id
    assert stages["transform"]["job"] == "default-shop-transform-1"
    assert stages["aggregate"]["dataflowJobId"] == aggregate.id
    assert (stages["transform"]["rowsIn"], stages["transform"]["rowsOut"]) == (4, 3), stages["transform"][
        "message"
    ]
    assert stages["aggregate"]["rowsOut"] == 2
    assert stages["transform"]["message"].startswith(
        f"Dataflow job default-shop-transform-1 ({transform.id}) done"
    )
    assert stages["validate"]["job"] == "shop-validate-1" and "dataflowJobId" not in stages["validate"]
    assert transform.resource["labels"]["dataops-run-uid"] == "uid-shop"
    assert await get_json(dataflow_cluster, f"{JOBS}/shop-transform-1") is None
    workdir = tmp_path / "work"
    assert [r["item_id"] for r in table_rows(workdir, TDS, "item_id")] == ["a", "b", "c"]
    assert table_rows(workdir, BDS, "kind") == [
        {"kind": "disk", "items": 1, "total_cost": 5.5},
        {"kind": "vm", "items": 2, "total_cost": 14.0},
    ]


async def test_cancelling_a_run_cancels_its_dataflow_job(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble
) -> None:
    double.hold()
    await post_run(dataflow_cluster, "stopme", SPEC)
    async with operator() as runner:
        await load_by_hand(dataflow_cluster, "stopme")
        await wait_for(launched(double, "default-stopme-transform-1"))
        await dataflow_cluster.patch(
            f"{RUNS}/stopme",
            json={"spec": {"cancel": True}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        run = await wait_for(phase_is(dataflow_cluster, "stopme", "Cancelled"))
    assert runner.exception is None
    job = double.job_named("default-stopme-transform-1")
    assert double.state(job.id) == "JOB_STATE_CANCELLED"
    assert run["status"]["stages"][2]["state"] == "Cancelled"
    assert run["status"]["stages"][2]["dataflowJobId"] == job.id


async def test_a_failed_dataflow_job_fails_the_run_with_its_error_in_status_and_events(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble
) -> None:
    double.hold()
    await post_run(dataflow_cluster, "broken", SPEC)
    async with operator():
        await load_by_hand(dataflow_cluster, "broken")
        await wait_for(launched(double, "default-broken-transform-1"))
        job = double.job_named("default-broken-transform-1")
        double.fail(job.id, "Workflow failed. Causes: S02:Standardize failed: division by zero")
        run = await wait_for(phase_is(dataflow_cluster, "broken", "Failed"))
        event = await wait_for(warning_saying(dataflow_cluster, "S02:Standardize failed: division by zero"))
    assert "S02:Standardize failed: division by zero" in run["status"]["message"]
    assert run["status"]["stages"][2]["reason"] == "DataflowJobFailed"
    assert event["reason"] in ("StageFailed", "Failed")


async def test_a_launch_refused_for_a_missing_role_fails_the_run_naming_the_role(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble
) -> None:
    double.deny("dataflow.jobs.create")
    await post_run(dataflow_cluster, "denied", SPEC)
    async with operator():
        await load_by_hand(dataflow_cluster, "denied")
        run = await wait_for(phase_is(dataflow_cluster, "denied", "Failed"))
    assert "roles/dataflow.developer on project test-project" in run["status"]["message"]
    assert run["status"]["stages"][2]["reason"] == "PermissionDenied"
    assert double.jobs == {}


async def test_deleting_a_run_cancels_its_running_dataflow_job_before_it_goes(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble
) -> None:
    double.hold()
    await post_run(dataflow_cluster, "gone", SPEC)
    async with operator() as runner:
        await load_by_hand(dataflow_cluster, "gone")
        await wait_for(launched(double, "default-gone-transform-1"))
        await wait_for(phase_is(dataflow_cluster, "gone", "Transforming"))
        await dataflow_cluster.delete(f"{RUNS}/gone")

        async def deleted() -> bool:
            return await get_json(dataflow_cluster, f"{RUNS}/gone") is None

        await wait_for(deleted)
    assert runner.exception is None
    assert double.state(double.job_named("default-gone-transform-1").id) == "JOB_STATE_CANCELLED"


async def test_a_restarted_controller_follows_the_job_it_launched_without_a_second_launch(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble
) -> None:
    double.hold()
    await post_run(dataflow_cluster, "steady", SPEC)
    async with operator():
        await load_by_hand(dataflow_cluster, "steady")
        await wait_for(launched(double, "default-steady-transform-1"))
        await wait_for(phase_is(dataflow_cluster, "steady", "Transforming"))
    double.release()
    async with operator() as runner:
        run = await wait_for(phase_is(dataflow_cluster, "steady", "Succeeded"), timeout=300)
    assert runner.exception is None
    transforms = [j for j in double.jobs.values() if j.resource["name"] == "default-steady-transform-1"]
    assert len(transforms) == 1
    assert run["status"]["stages"][2]["dataflowJobId"] == transforms[0].id


async def test_a_launch_whose_record_was_lost_reattaches_to_the_active_job_of_its_name(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble, tmp_path: Path
) -> None:
    double.hold()
    client = DataflowClient(
        DataflowSettings(
            project="test-project",
            region="europe-west1",
            template="gs://staging/templates/stage.json",
            endpoint=double.url,
            anonymous=True,
        )
    )
    body = {"metadata": {"name": "lost", "namespace": "default", "uid": "uid-lost"}, "spec": SPEC}
    settings = Settings(workdir=str(tmp_path / "work"), dataflow=client.settings)
    earlier = await dataflow_stage.launch(client, body, "transform", 1, "2026-02-03T04:05:06+00:00", settings)
    await client.close()
    assert isinstance(earlier, DataflowJob)
    # What a controller that launched the job but died before writing the status leaves behind.
    await post_run(dataflow_cluster, "lost", SPEC)
    async with operator():
        await load_by_hand(dataflow_cluster, "lost")
        await wait_for(phase_is(dataflow_cluster, "lost", "Transforming"))
        double.release()
        run = await wait_for(phase_is(dataflow_cluster, "lost", "Succeeded"), timeout=300)
    assert [j.id for j in double.jobs.values() if j.resource["name"] == "default-lost-transform-1"] == [
        earlier.id
    ]
    assert run["status"]["stages"][2]["dataflowJobId"] == earlier.id


async def test_a_dataflow_stage_over_its_timeout_has_its_job_cancelled(
    dataflow_cluster: kmock.KubernetesEmulator, double: DataflowDouble
) -> None:
    double.hold()
    await post_run(dataflow_cluster, "slow", {**SPEC, "timeouts": {"stageSeconds": 8}})
    async with operator():
        await load_by_hand(dataflow_cluster, "slow")
        await wait_for(launched(double, "default-slow-transform-1"))
        run = await wait_for(phase_is(dataflow_cluster, "slow", "Failed"))
    job = double.job_named("default-slow-transform-1")
    assert run["status"]["reason"] == "Timeout"
    assert double.state(job.id) == "JOB_STATE_CANCELLED"
