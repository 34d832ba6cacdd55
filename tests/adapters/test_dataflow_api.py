"""The Dataflow client against a loopback Dataflow REST API whose jobs really run the stage.

The double (tests/doubles/dataflow_api.py) answers as the v1b3 reference documents and runs each
launched stage with ``python -m beam.stages`` on the DirectRunner, so a job that is DONE has written
its table for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from controller.dataflow import (
    DataflowClient,
    DataflowError,
    DataflowJob,
    DataflowSettings,
    PermissionDenied,
    job_labels,
    job_name,
)
from tests.doubles.dataflow_api import DataflowDouble, dataflow_double
from tests.doubles.stage_runs import STARTED_AT, TDS, run_document, seed_raw_table, table_rows

pytestmark = pytest.mark.integration

SETTINGS = DataflowSettings(
    project="test-project",
    region="europe-west1",
    template="gs://staging/templates/stage.json",
    service_account="dataops-worker@test-project.iam.gserviceaccount.com",
    network="dataops",
    subnetwork="regions/europe-west1/subnetworks/dataops-nodes",
    temp_location="gs://staging/tmp",
    staging_location="gs://staging/staging",
    labels={"env": "test", "team": "Data Ops"},
    max_workers=3,
    anonymous=True,
)


@pytest.fixture
def double() -> Iterator[DataflowDouble]:
    with dataflow_double(SETTINGS.project, SETTINGS.region) as d:
        yield d


@pytest.fixture
async def client(double: DataflowDouble) -> AsyncIterator[DataflowClient]:
    settings = DataflowSettings(**{**SETTINGS.__dict__, "endpoint": double.url})
    c = DataflowClient(settings, backoff_seconds=0.01)
    yield c
    await c.close()


def parameters(workdir: Path, stage: str = "transform", run: str = "items") -> dict[str, str]:
    return {
        "stage": stage,
        "run": run_document(run),
        "workdir": str(workdir),
        "started_at": STARTED_AT,
    }


def labels(run: str = "items", stage: str = "transform", attempt: int = 1) -> dict[str, str]:
    return job_labels(SETTINGS, "default", run, "uid-1", stage, attempt)


async def until_terminal(client: DataflowClient, job_id: str, timeout: float = 300.0) -> DataflowJob:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = await client.get(job_id)
        if job.terminal:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} after {timeout}s")
        await asyncio.sleep(0.2)


def test_job_names_are_deterministic_and_valid_for_dataflow() -> None:
    assert job_name("team-a", "inventory.2026-01", "transform", 2) == "team-a-inventory-2026-01-transform-2"
    assert job_name("9ns", "run", "aggregate", 1) == "dataops-9ns-run-aggregate-1"
    long = job_name("ns", "r" * 2000, "transform", 1)
    assert len(long) <= 1024 and long.endswith("-transform-1")
    assert long == job_name("ns", "r" * 2000, "transform", 1)


async def test_launch_sends_template_parameters_labels_account_network_and_locations(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    double.hold()
    job = await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    [sent] = double.launches
    launch = sent["launchParameter"]
    assert launch["jobName"] == "default-items-transform-1"
    assert launch["containerSpecGcsPath"] == "gs://staging/templates/stage.json"
    assert launch["parameters"]["stage"] == "transform"
    assert launch["parameters"]["workdir"] == str(tmp_path)
    assert launch["environment"] == {
        "serviceAccountEmail": "dataops-worker@test-project.iam.gserviceaccount.com",
        "network": "dataops",
        "subnetwork": "regions/europe-west1/subnetworks/dataops-nodes",
        "tempLocation": "gs://staging/tmp",
        "stagingLocation": "gs://staging/staging",
        "maxWorkers": 3,
        "ipConfiguration": "WORKER_IP_PRIVATE",
        "additionalUserLabels": {
            "env": "test",
            "team": "data-ops",
            "managed-by": "dataops-operator",
            "dataops-namespace": "default",
            "dataops-run": "items",
            "dataops-run-uid": "uid-1",
            "dataops-stage": "transform",
            "dataops-attempt": "1",
        },
    }
    fetched = await client.get(job.id)
    assert fetched.labels["dataops-run"] == "items"
    assert fetched.resource["environment"]["serviceAccountEmail"] == SETTINGS.service_account
    assert fetched.state == "JOB_STATE_RUNNING"
    await client.cancel(job.id)


async def test_a_launched_stage_runs_on_the_direct_runner_until_done(
    client: DataflowClient, tmp_path: Path
) -> None:
    seed_raw_table(tmp_path)

    job = await client.launch("default-items-transform-1", parameters(tmp_path), labels())
    done = await until_terminal(client, job.id)

    assert done.state == "JOB_STATE_DONE"
    assert await client.counters(job.id) == {"rows_read": 4, "rows_written": 3, "rows_rejected": 0}
    assert table_rows(tmp_path, TDS, "item_id") == [
        {"item_id": "a", "kind": "vm", "cost": 12.0},
        {"item_id": "b", "kind": "disk", "cost": 5.5},
        {"item_id": "c", "kind": "vm", "cost": 2.0},
    ]


async def test_cancel_stops_the_job_and_reports_it_cancelled(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    seed_raw_table(tmp_path)
    double.hold()
    job = await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    await client.cancel(job.id)

    assert (await client.get(job.id)).state == "JOB_STATE_CANCELLED"
    assert double.job_named("default-items-transform-1").process.poll() is not None  # type: ignore[union-attr]
    assert await client.cancel(job.id) is not None  # a second cancel of a finished job is no error


async def test_a_second_launch_of_an_active_name_reattaches_to_the_running_job(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    double.hold()
    first = await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    again = await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    assert again.id == first.id
    assert len(double.jobs) == 1
    assert (
        "POST",
        "/v1b3/projects/test-project/locations/europe-west1/flexTemplates:launch",
    ) in double.requests
    await client.cancel(first.id)


async def test_an_active_job_of_the_same_name_from_another_run_is_not_taken_over(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    double.hold()
    first = await client.launch("default-items-transform-1", parameters(tmp_path), labels())
    other = {**labels(), "dataops-run-uid": "uid-2"}

    with pytest.raises(DataflowError, match="belongs to another run"):
        await client.launch("default-items-transform-1", parameters(tmp_path), other)
    await client.cancel(first.id)


async def test_a_failing_stage_fails_the_job_with_the_stage_error_as_job_message(
    client: DataflowClient, tmp_path: Path
) -> None:
    job = await client.launch("default-items-transform-1", parameters(tmp_path), labels())  # no raw table

    failed = await until_terminal(client, job.id)
    messages = await client.error_messages(job.id)

    assert failed.state == "JOB_STATE_FAILED"
    assert any("input table shop_raw.items does not exist" in m for m in messages)


async def test_a_job_failed_by_dataflow_surfaces_its_error_message(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    double.hold()
    job = await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    double.fail(job.id, "Workflow failed. Causes: S01:Read+Standardize failed: worker lost")

    assert (await client.get(job.id)).state == "JOB_STATE_FAILED"
    assert await client.error_messages(job.id) == [
        "Workflow failed. Causes: S01:Read+Standardize failed: worker lost"
    ]


async def test_permission_denied_names_the_missing_roles_and_where(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    double.deny("dataflow.jobs.create")

    with pytest.raises(PermissionDenied) as denied:
        await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    message = str(denied.value)
    assert "roles/dataflow.developer on project test-project (dataflow.jobs.create)" in message
    assert (
        "roles/iam.serviceAccountUser on the worker service account "
        "dataops-worker@test-project.iam.gserviceaccount.com"
    ) in message
    assert not denied.value.temporary


async def test_quota_errors_are_retried_with_backoff_until_the_launch_goes_through(
    client: DataflowClient, double: DataflowDouble, tmp_path: Path
) -> None:
    double.hold()
    double.throttle(2)

    job = await client.launch("default-items-transform-1", parameters(tmp_path), labels())

    assert job.state == "JOB_STATE_RUNNING"
    assert [m for m, p in double.requests if p.endswith("flexTemplates:launch")] == ["POST"] * 3
    await client.cancel(job.id)


async def test_quota_errors_that_last_give_a_temporary_error_naming_the_quota(
    double: DataflowDouble, tmp_path: Path
) -> None:
    settings = DataflowSettings(**{**SETTINGS.__dict__, "endpoint": double.url})
    client = DataflowClient(settings, attempts=2, backoff_seconds=0.01)
    double.throttle(5)

    with pytest.raises(DataflowError) as exhausted:
        await client.launch("default-items-transform-1", parameters(tmp_path), labels())
    await client.close()

    assert exhausted.value.temporary
    assert "quota exhausted" in str(exhausted.value) and "Job create requests" in str(exhausted.value)
