"""The operator on the real control plane: CRDs admitted by the API server, the example run to Succeeded.

The controller runs as its own process (`python -m controller controller`); stage Jobs go through the
real Job controller, their Pods through the node agent (local processes in this environment).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.controlplane.cluster import Cluster, free_port
from tests.e2e.chart_controller import EXAMPLE, ROOT, kc

pytestmark = pytest.mark.e2e


@pytest.fixture
def operator(
    control_plane: Cluster, node_agent: Any, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    kc(control_plane, "apply", "-f", str(ROOT / "crds"))
    kc(control_plane, "create", "serviceaccount", "dataops-worker", "-n", kube_namespace)
    workdir = tmp_path / "work"
    env = dict(
        os.environ,
        KUBECONFIG=str(control_plane.kubeconfig),
        PYTHONPATH=str(ROOT),
        DATAOPS_WORKER_IMAGE="dataops-worker:e2e",
        DATAOPS_PYTHON=sys.executable,
        DATAOPS_WORKDIR=str(workdir),
        DATAOPS_RESYNC_SECONDS="5",
        DATAOPS_STAGE_ENV=json.dumps({"DATAOPS_SOURCE_BASE": str(EXAMPLE), "PYTHONPATH": str(ROOT)}),
    )
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controller",
            "controller",
            "--namespace",
            kube_namespace,
            "--standalone",
            "--metrics-port",
            "0",
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        yield kube_namespace, workdir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _run(control_plane: Cluster, namespace: str, name: str) -> dict[str, Any]:
    out = kc(control_plane, "get", "pipelinerun", name, "-n", namespace, "-o", "json")
    data: dict[str, Any] = json.loads(out)
    return data


def _wait_phase(
    control_plane: Cluster, namespace: str, name: str, phases: set[str], timeout: float = 420.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = _run(control_plane, namespace, name)
        if (run.get("status") or {}).get("phase") in phases:
            return run
        time.sleep(1)
    raise AssertionError(f"run {name} did not reach {phases}: {json.dumps(run.get('status'))[:2000]}")


def test_the_example_run_succeeds_on_the_real_control_plane(
    control_plane: Cluster, operator: tuple[str, Path]
) -> None:
    namespace, workdir = operator
    kc(control_plane, "apply", "-n", namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
    run = _wait_phase(control_plane, namespace, "inventory-demo", {"Succeeded", "Failed"})
    assert run["status"]["phase"] == "Succeeded", run["status"]["message"]
    assert [s["name"] for s in run["status"]["stages"]] == ["validate", "load", "transform", "aggregate"]
    jobs = json.loads(kc(control_plane, "get", "jobs", "-n", namespace, "-o", "json"))["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [
        "inventory-demo-aggregate-1",
        "inventory-demo-load-1",
        "inventory-demo-transform-1",
        "inventory-demo-validate-1",
    ]
    table = kc(control_plane, "get", "pipelineruns", "-n", namespace)
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "STAGE", "ROWS", "AGE"]
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM inventory_raw.resources").fetchall()[0][0] == 2991
        assert con.sql("SELECT count(*) FROM inventory_bds.cost_by_group").fetchall()[0][0] > 0
    finally:
        con.close()


def test_the_api_server_refuses_an_invalid_spec_with_the_schema_or_cel_message(
    control_plane: Cluster, kube_namespace: str, tmp_path: Path
) -> None:
    kc(control_plane, "apply", "-f", str(ROOT / "crds"))
    bad = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "bad"},
        "spec": {
            "source": {"uri": "x.csv", "columns": [{"name": "id"}]},
            "load": {"table": "raw.t"},
            "aggregate": [{"output": {"table": "bds.t"}, "metrics": [{"name": "n", "agg": "count"}]}],
        },
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    refused = control_plane.kubectl("apply", "-n", kube_namespace, "-f", str(path))
    assert refused.returncode != 0
    assert "aggregate reads the transform's output table" in refused.stderr


def test_an_ingestion_source_cronjob_catches_up_after_a_long_outage(
    control_plane: Cluster, operator: tuple[str, Path]
) -> None:
    import yaml

    from beam.warehouse import open_warehouse
    from examples.transactions.demo import arrive

    namespace, workdir = operator
    arrive(open_warehouse(workdir), None, "2026-03-02 08:20:00")
    source = yaml.safe_load((ROOT / "examples" / "transactions" / "ingestionsource.yaml").read_text())
    source["metadata"]["namespace"] = namespace
    # Every minute, so that the latest missed tick is always within startingDeadlineSeconds.
    source["spec"]["consolidation"]["schedule"] = "* * * * *"
    done = control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(source))
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    while control_plane.kubectl(
        "get", "cronjob", "ussd-transactions-consolidate", "-n", namespace
    ).returncode:
        assert time.monotonic() < deadline, "the CronJob was not created"
        time.sleep(1)
    # A controller-manager outage of 110 schedule periods (more than the 100 missed schedules after which
    # a CronJob without startingDeadlineSeconds stops starting): ours sets it, so the next cycle runs and
    # its watermark catches up every window that was missed.
    control_plane.make_cronjob_due(namespace, "ussd-transactions-consolidate", missed_since=110 * 60.0)
    deadline = time.monotonic() + 480
    cycle: dict[str, Any] = {}
    while not cycle:
        if time.monotonic() > deadline:
            jobs = control_plane.kubectl("get", "jobs,pods", "-n", namespace, "-o", "wide").stdout
            raise AssertionError(f"no consolidation cycle was reported; jobs and pods:\n{jobs}")
        status = (
            json.loads(
                kc(
                    control_plane,
                    "get",
                    "ingestionsource",
                    "ussd-transactions",
                    "-n",
                    namespace,
                    "-o",
                    "json",
                )
            ).get("status")
            or {}
        )
        cycle = status.get("lastCycle") or {}
        time.sleep(2)
    assert cycle["outcome"] == "Succeeded", cycle
    cron = json.loads(
        kc(control_plane, "get", "cronjob", "ussd-transactions-consolidate", "-n", namespace, "-o", "json")
    )
    assert cron["spec"]["startingDeadlineSeconds"] >= 10
    assert _rows_when_unlocked(workdir / "warehouse.duckdb", "consolidated.transactions") == 8


def _rows_when_unlocked(path: Path, table: str, timeout: float = 120.0) -> int:
    """The table's row count, read once no cycle holds the warehouse: the schedule runs every minute, so
    the next cycle's pod may have the file locked when the first one's result is read."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con = duckdb.connect(str(path), read_only=True)
        except duckdb.IOException as exc:
            if "lock" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
            continue
        try:
            return int(con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])
        finally:
            con.close()
