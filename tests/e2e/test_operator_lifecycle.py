"""The controller as the chart deploys it, on the real control plane: its own ServiceAccount and RBAC,
deletion of a running run, files discovered once across restarts, SIGKILL between every pair of stages,
two replicas at once.

The fixtures and helpers are in ``tests/e2e/chart_controller.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.controlplane.cluster import Cluster, free_port
from tests.controlplane.node_agent import NodeAgent
from tests.e2e.chart_controller import EXAMPLE, Controller, get_run, job_names, kc, run_phase, wait_for

pytestmark = pytest.mark.e2e


def test_the_controller_with_the_charts_rbac_survives_sigkill_between_every_pair_of_stages(
    control_plane: Cluster, chart_controller: tuple[Controller, Path], kube_namespace: str
) -> None:
    controller, workdir = chart_controller
    kc(control_plane, "apply", "-n", kube_namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
    seen: list[str] = []
    deadline = time.monotonic() + 600
    while True:
        control_plane.check_alive()
        run = get_run(control_plane, kube_namespace, "inventory-demo") or {}
        status = run.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        stage = status.get("currentStage")
        if stage and stage not in seen:
            # A new stage has just started: kill the controller with no warning, start a new one.
            seen.append(stage)
            controller.kill()
            controller.start()
        assert time.monotonic() < deadline, f"the run did not finish: {json.dumps(status)[:2000]}"
        time.sleep(0.5)
    assert status["phase"] == "Succeeded", status.get("message")
    assert seen == ["validate", "load", "transform", "aggregate"]
    assert controller.starts == 5
    assert job_names(control_plane, kube_namespace) == [
        "inventory-demo-aggregate-1",
        "inventory-demo-load-1",
        "inventory-demo-transform-1",
        "inventory-demo-validate-1",
    ]
    assert [s["attempt"] for s in status["stages"]] == [1, 1, 1, 1]
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        # Loaded once (a second load would double it), deduplicated once.
        assert con.sql("SELECT count(*) FROM inventory_raw.resources").fetchall()[0][0] == 2991
        tds = con.sql("SELECT count(*), count(DISTINCT resource_id) FROM inventory_tds.resources").fetchall()[
            0
        ]
        assert tds == (2543, 2543)
    finally:
        con.close()
    # Nothing grows with updates: kopf keeps a marker and one copy of the spec (its diff base), whatever
    # the number of stages, restarts and status writes.
    annotations = dict(run["metadata"].get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    assert set(annotations) <= {"dataops.io/kopf-managed", "dataops.io/last-handled-configuration"}
    handled = json.loads(annotations.get("dataops.io/last-handled-configuration", "{}"))
    assert handled.get("spec", run["spec"]) == run["spec"]
    assert len(json.dumps(status)) < 64 * 1024
    assert controller.forbidden() == []


def test_deleting_a_running_run_cancels_it_and_leaves_nothing_behind(
    control_plane: Cluster,
    chart_controller: tuple[Controller, Path],
    node_agent: NodeAgent,
    kube_namespace: str,
) -> None:
    controller, _ = chart_controller
    node_agent.stop()  # the validate pod stays Pending: the run is caught mid-stage
    try:
        kc(control_plane, "apply", "-n", kube_namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
        wait_for(
            control_plane,
            "the validate Job",
            lambda: job_names(control_plane, kube_namespace) == ["inventory-demo-validate-1"],
        )
        run = get_run(control_plane, kube_namespace, "inventory-demo") or {}
        assert run["status"]["phase"] == "Validating"
        # Its stages all run as Jobs, owned by the run: no finalizer, the garbage collector removes them.
        assert "dataops.io/cleanup" not in (run["metadata"].get("finalizers") or [])
        kc(control_plane, "delete", "pipelinerun", "inventory-demo", "-n", kube_namespace, "--wait=false")
        wait_for(
            control_plane,
            "the run to go",
            lambda: get_run(control_plane, kube_namespace, "inventory-demo") is None,
            timeout=120,
        )
        wait_for(control_plane, "its Job to go", lambda: job_names(control_plane, kube_namespace) == [], 120)
        wait_for(
            control_plane,
            "its pods to go",
            lambda: (
                not json.loads(kc(control_plane, "get", "pods", "-n", kube_namespace, "-o", "json"))["items"]
            ),
            120,
        )
    finally:
        node_agent.start()
    assert controller.forbidden() == []


def test_a_dropped_file_is_one_run_across_controller_restarts(
    control_plane: Cluster,
    chart_controller: tuple[Controller, Path],
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    controller, _ = chart_controller
    drop = tmp_path / "drop"
    drop.mkdir()
    run_spec = yaml.safe_load((EXAMPLE / "pipelinerun.yaml").read_text())["spec"]
    template = {**run_spec, "source": {k: v for k, v in run_spec["source"].items() if k != "uri"}}
    source = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "drops", "namespace": kube_namespace},
        "spec": {"files": {"prefix": str(drop), "pattern": "*.csv", "template": template, "pollSeconds": 5}},
    }
    kc(control_plane, "apply", "-f", "-", stdin=json.dumps(source))

    def runs() -> list[str]:
        out = kc(control_plane, "get", "pipelineruns", "-n", kube_namespace, "-o", "json")
        return sorted(r["metadata"]["name"] for r in json.loads(out)["items"])

    (drop / "inventory.csv").write_bytes((EXAMPLE / "inventory.csv").read_bytes())
    wait_for(control_plane, "a run for the dropped file", lambda: len(runs()) == 1, 120)
    first = runs()
    controller.kill()
    controller.start()
    time.sleep(15)  # three listings of the prefix by the new controller
    controller.stop()
    controller.start()
    time.sleep(15)
    assert runs() == first
    done = wait_for(
        control_plane,
        "the file's run to finish",
        lambda: run_phase(control_plane, kube_namespace, first[0]) in ("Succeeded", "Failed"),
    )
    assert done
    assert run_phase(control_plane, kube_namespace, first[0]) == "Succeeded"
    assert controller.forbidden() == []


def test_two_replicas_acting_at_once_never_duplicate_a_stage(
    control_plane: Cluster, chart_controller: tuple[Controller, Path], kube_namespace: str, tmp_path: Path
) -> None:
    """The worst case of a rolling update: peering lost, both replicas act on every event; then the old
    one goes and the new one finishes. Status writes carry the resourceVersion they were planned from."""
    first, workdir = chart_controller
    # Its own liveness port: two processes cannot bind one.
    argv = [a for a in first.argv if not a.startswith("http://127.0.0.1:")]
    argv[argv.index("--liveness") + 1 : argv.index("--liveness") + 1] = [
        f"http://127.0.0.1:{free_port()}/healthz"
    ]
    second = Controller(
        control_plane,
        [*argv, "--standalone"],
        {**first.env, "POD_ID": "controller-new"},
        tmp_path / "second",
    )
    first.stop()
    first.argv = [*first.argv, "--standalone"]
    first.start()
    second.start()
    try:
        kc(control_plane, "apply", "-n", kube_namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
        wait_for(
            control_plane,
            "the transform stage",
            lambda: (
                ((get_run(control_plane, kube_namespace, "inventory-demo") or {}).get("status") or {}).get(
                    "currentStage"
                )
                in ("transform", "aggregate")
            ),
        )
        for replica in (first, second):
            assert replica.proc is not None and replica.proc.poll() is None, replica.logs[-1].read_text()[
                -3000:
            ]
        first.stop()  # the old replica goes; the new one carries on alone
        wait_for(
            control_plane,
            "the run to finish",
            lambda: run_phase(control_plane, kube_namespace, "inventory-demo") in ("Succeeded", "Failed"),
        )
    finally:
        second.stop()
    run = get_run(control_plane, kube_namespace, "inventory-demo") or {}
    assert run["status"]["phase"] == "Succeeded", run["status"].get("message")
    assert [s["attempt"] for s in run["status"]["stages"]] == [1, 1, 1, 1]
    assert job_names(control_plane, kube_namespace) == [
        "inventory-demo-aggregate-1",
        "inventory-demo-load-1",
        "inventory-demo-transform-1",
        "inventory-demo-validate-1",
    ]
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        assert con.sql("SELECT count(*) FROM inventory_raw.resources").fetchall()[0][0] == 2991
    finally:
        con.close()
    assert first.forbidden() == [] and second.forbidden() == []
