"""Consolidation cycles with ``runner: dataflow``: the staging pipeline launched from the consolidation
flex template on a loopback Dataflow REST API (tests/doubles/dataflow_api.py), whose job runs the real
consolidation pipeline on the DirectRunner. Everything else of the cycle (lock, extract, bus, merge,
watermarks) runs as in the pod, on DuckDB and the embedded queue."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from beam.consolidation import FAULT_EXIT_STATUS
from beam.consolidation.dataflow import DataflowCycleError, DataflowRun
from controller.dataflow import consolidation_job_name, label_value
from controller.settings import DataflowSettings, Settings, consolidation_dataflow_env
from tests.consolidation.helpers import ROOT, World, run_module, spec_doc
from tests.doubles.dataflow_api import DataflowDouble, dataflow_double

pytestmark = pytest.mark.integration

TEMPLATE = "gs://staging/templates/consolidation.json"
WORKERS = "dataops-worker@test-project.iam.gserviceaccount.com"


@pytest.fixture
def double() -> Iterator[DataflowDouble]:
    with dataflow_double("test-project", "europe-west1") as d:
        yield d


@pytest.fixture
def settings(double: DataflowDouble) -> DataflowSettings:
    return DataflowSettings(
        project="test-project",
        region="europe-west1",
        template=TEMPLATE,
        service_account=WORKERS,
        network="dataops",
        subnetwork="regions/europe-west1/subnetworks/dataops-nodes",
        temp_location="gs://staging/tmp",
        staging_location="gs://staging/staging",
        labels={"env": "test"},
        endpoint=double.url,
        anonymous=True,
    )


def pod_env(settings: DataflowSettings) -> dict[str, str]:
    """What the controller gives the CronJob's pod: its own settings, the consolidation template."""
    controller = Settings(
        dataflow=replace(
            settings, template="gs://staging/templates/stage.json", consolidation_template=TEMPLATE
        ),
        dataflow_poll_seconds=1,
    )
    return consolidation_dataflow_env(controller)


def new_world(folder: Path, runner: str) -> World:
    doc = spec_doc(batch_size=50)
    doc["spec"]["consolidation"]["runner"] = runner
    world = World(folder, doc)
    world.insert_transactions(["T00001", "T00002"])
    world.insert_operations(4, tx_ids=["T00001", "T00002", "T00003", None])
    world.insert_operations(2, tie=True, tx_ids=["T00001"])
    return world


def on_dataflow(settings: DataflowSettings) -> DataflowRun:
    return DataflowRun(settings, poll_seconds=0.2)


def wait_for(condition: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


def launch_requests(double: DataflowDouble) -> int:
    return sum(1 for method, path in double.requests if method == "POST" and path.endswith(":launch"))


def cycle_process(world: World, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    """The CronJob pod's command, ``python -m beam.consolidation``, started in the background."""
    args = [str(world.spec_file()), "--workdir", str(world.workdir), "--output", "json", *extra]
    child_env = {"PYTHONPATH": str(ROOT), "DATAOPS_BUS": "embedded", "PATH": "/usr/bin:/bin", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "beam.consolidation", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=child_env,
    )


def nothing_merged(world: World) -> bool:
    counts = [
        world.query(f"SELECT count(*) FROM _dataops.{table}")[0][0]
        for table in ("consolidation_watermarks", "consolidation_cycles", "locks")
    ]
    return world.target_rows() == [] and counts == [0, 0, 0]


def test_a_cycle_on_dataflow_merges_the_same_rows_as_a_cycle_in_its_pod(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    local = new_world(tmp_path / "local", "direct")
    remote = new_world(tmp_path / "dataflow", "dataflow")

    in_pod = local.cycle()
    result = remote.cycle(dataflow=on_dataflow(settings))

    launch = double.launches[0]["launchParameter"]
    environment = launch["environment"]
    assert (result.status, result.inserted) == ("Merged", in_pod.inserted)
    assert remote.target_rows() == local.target_rows() == remote.reference()
    assert result.watermark_after == in_pod.watermark_after
    assert len(double.launches) == 1
    assert result.dataflow_job is not None and result.dataflow_job["state"] == "JOB_STATE_DONE"
    assert launch["jobName"] == result.dataflow_job["name"]
    assert launch["jobName"].startswith("dataops-consolidate-tests-ops-")
    assert launch["containerSpecGcsPath"] == TEMPLATE
    assert launch["parameters"]["workdir"] == str(remote.workdir)
    assert json.loads(launch["parameters"]["source"])["metadata"]["name"] == "ops"
    assert environment["serviceAccountEmail"] == WORKERS
    assert (environment["network"], environment["subnetwork"]) == (settings.network, settings.subnetwork)
    assert (environment["tempLocation"], environment["stagingLocation"]) == (
        "gs://staging/tmp",
        "gs://staging/staging",
    )
    assert environment["ipConfiguration"] == "WORKER_IP_PRIVATE"
    assert environment["additionalUserLabels"] | {"dataops-window": ""} == {
        "env": "test",
        "managed-by": "dataops-operator",
        "dataops-namespace": "tests",
        "dataops-source": "ops",
        "dataops-cycle": label_value(result.cycle_id),
        "dataops-window": "",
    }


def test_a_cycle_retried_after_its_pod_died_reattaches_to_the_running_job(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    world = new_world(tmp_path / "work", "dataflow")
    double.hold()

    killed = run_module(
        [str(world.spec_file()), "--workdir", str(world.workdir)],
        {**pod_env(settings), "DATAOPS_FAULTPOINT": "after_launch"},
    )
    retried = cycle_process(world, pod_env(settings))
    wait_for(lambda: launch_requests(double) == 2)
    double.release()
    out, err = retried.communicate(timeout=300)

    summary = json.loads(out)
    assert killed.returncode == FAULT_EXIT_STATUS, killed.stderr[-2000:]
    assert retried.returncode == 0, err[-2000:]
    assert summary["status"] == "Merged"
    assert len(double.jobs) == 1
    assert summary["dataflowJob"]["id"] == next(iter(double.jobs))
    assert world.target_rows() == world.reference()


def test_the_lock_is_kept_while_the_job_runs_so_a_second_cycle_neither_merges_nor_launches(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    world = new_world(tmp_path / "work", "dataflow")
    double.hold()

    first = cycle_process(world, pod_env(settings), "--lock-ttl", "3")
    wait_for(lambda: double.jobs)
    wait_for(lambda: lock_held_for(world) > 4.0)  # refreshed past its 3 s while the job runs
    second = world.cycle(dataflow=on_dataflow(settings), lock_wait_seconds=0)
    double.release()
    out, err = first.communicate(timeout=300)

    assert second.status == "Skipped"
    assert first.returncode == 0, err[-2000:]
    assert json.loads(out)["status"] == "Merged"
    assert len(double.jobs) == launch_requests(double) == 1
    assert world.target_rows() == world.reference()


def lock_held_for(world: World) -> float:
    rows = world.query("SELECT epoch(expires_at) - epoch(acquired_at) FROM _dataops.locks")
    return float(rows[0][0]) if rows else 0.0


def test_a_failed_job_fails_the_cycle_with_its_error_and_merges_nothing(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    world = new_world(tmp_path / "work", "dataflow")
    result_file = tmp_path / "termination-log"
    double.hold()

    proc = cycle_process(world, pod_env(settings), "--result-file", str(result_file))
    wait_for(lambda: double.jobs)
    with world.warehouse.connect() as con:  # the job's input goes away under it: it fails for real
        con.execute("DROP TABLE ops.transactions")
    double.release()
    out, err = proc.communicate(timeout=300)

    summary = json.loads(out)
    job_id = next(iter(double.jobs))
    assert proc.returncode == 1
    assert (summary["status"], summary["reason"]) == ("Failed", "DataflowJobFailed")
    assert f"({job_id}) failed: Error message from worker:" in summary["message"]
    assert "ops.transactions" in summary["message"]
    assert "nothing was merged" in summary["message"]
    termination = json.loads(result_file.read_text())  # what status.lastCycle shows
    assert termination["reason"] == "DataflowJobFailed"
    assert f"({job_id}) failed: Error message from worker:" in termination["message"]
    assert "Traceback" not in err
    assert nothing_merged(world)


def test_a_refused_launch_names_the_missing_role(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    world = new_world(tmp_path / "work", "dataflow")
    double.deny("dataflow.jobs.create")

    with pytest.raises(DataflowCycleError) as refused:
        world.cycle(dataflow=on_dataflow(settings))

    message = str(refused.value)
    assert refused.value.reason == "PermissionDenied"
    assert "The consolidation CronJob's service account" in message
    assert "roles/dataflow.developer on project test-project (dataflow.jobs.create)" in message
    assert f"roles/iam.serviceAccountUser on the worker service account {WORKERS}" in message
    assert double.jobs == {}
    assert nothing_merged(world)


def test_a_job_past_its_timeout_is_cancelled_and_nothing_is_merged(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    world = new_world(tmp_path / "work", "dataflow")
    double.hold()

    with pytest.raises(DataflowCycleError) as timed_out:
        world.cycle(dataflow=on_dataflow(settings), job_timeout_seconds=2)

    job_id = next(iter(double.jobs))
    assert timed_out.value.reason == "DataflowJobTimedOut"
    assert "cancelled; nothing was merged" in str(timed_out.value)
    assert double.state(job_id) == "JOB_STATE_CANCELLED"
    assert nothing_merged(world)


def test_a_pod_told_to_stop_cancels_its_job(
    double: DataflowDouble, settings: DataflowSettings, tmp_path: Path
) -> None:
    world = new_world(tmp_path / "work", "dataflow")
    double.hold()

    proc = cycle_process(world, pod_env(settings))
    job_id = wait_for(lambda: next(iter(double.jobs), None))
    wait_for(lambda: any(m == "GET" and p.endswith(job_id) for m, p in double.requests))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)

    summary = json.loads(out)
    assert proc.returncode == 1
    assert (summary["status"], summary["reason"]) == ("Failed", "Cancelled")
    assert double.state(job_id) == "JOB_STATE_CANCELLED"
    assert "Traceback" not in err
    assert nothing_merged(world)


def test_job_names_are_one_per_source_and_window() -> None:
    name = consolidation_job_name("tests/ops", "0123456789abcdef")

    assert name == "dataops-consolidate-tests-ops-0123456789abcdef"
    assert consolidation_job_name("tests/ops", "0123456789abcdef") == name
    assert consolidation_job_name("other/ops", "0123456789abcdef") != name
