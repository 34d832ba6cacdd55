"""The controller as the chart deploys it, on the real control plane: its own ServiceAccount and RBAC,
deletion of a running run, files discovered once across restarts, SIGKILL between every pair of stages.

The chart is rendered by the real ``helm template``; everything but the Deployment is applied, and the
controller runs as a local process with the Deployment's own arguments and environment and a token of
the chart's ServiceAccount, so a verb missing from the chart's Role fails these tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.controlplane.cluster import Cluster, free_port, wait_until
from tests.controlplane.node_agent import NodeAgent

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "inventory"
CHART = ROOT / "helm" / "dataops-operator"
RELEASE = "dataops"
SKIP_KINDS = {"Deployment", "Service"}  # the controller runs here as a process; no pods for it


def kc(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    done = cluster.kubectl(*args, stdin=stdin)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


@dataclass
class Controller:
    """The controller process, started and killed at will, always with the chart's identity."""

    cluster: Cluster
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        path = self.log.with_suffix(f".{self.starts}.log")
        self.logs.append(path)
        with path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last status write."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def forbidden(self) -> list[str]:
        """Lines where the API server refused the controller (403): a verb the chart's RBAC lacks."""
        lines = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if "403" in line and ("Forbidden" in line or "forbidden" in line):
                    lines.append(line[:400])
        return lines


def _render_chart(cluster: Cluster, system: str, watched: str) -> list[dict[str, Any]]:
    done = cluster.helm(
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        system,
        "--include-crds",
        "--set",
        f"watchNamespaces={{{watched}}}",
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _apply(cluster: Cluster, docs: list[dict[str, Any]]) -> None:
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    rest = [d for d in docs if d["kind"] not in SKIP_KINDS and d not in crds]
    kc(cluster, "apply", "--server-side", "--force-conflicts", "-f", "-", stdin=yaml.safe_dump_all(crds))
    for crd in crds:
        kc(cluster, "wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}", "--timeout=60s")
    kc(cluster, "apply", "-f", "-", stdin=yaml.safe_dump_all(rest))


@pytest.fixture
def system_namespace(control_plane: Cluster) -> Iterator[str]:
    name = f"ops-{uuid.uuid4().hex[:8]}"
    kc(control_plane, "create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def chart_controller(
    control_plane: Cluster, node_agent: NodeAgent, kube_namespace: str, system_namespace: str, tmp_path: Path
) -> Iterator[tuple[Controller, Path]]:
    docs = _render_chart(control_plane, system_namespace, kube_namespace)
    _apply(control_plane, docs)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = control_plane.service_account_kubeconfig(system_namespace, account)
    args = [
        a
        for a in container["args"]
        if not a.startswith(("--liveness", "--metrics-port")) and a != "--standalone"
    ]
    args += ["--metrics-port", "0", "--liveness", f"http://127.0.0.1:{free_port()}/healthz"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    workdir = tmp_path / "work"
    env.update(
        KUBECONFIG=str(kubeconfig),
        PYTHONPATH=str(ROOT),
        POD_ID=f"controller-{uuid.uuid4().hex[:6]}",
        DATAOPS_WORKER_IMAGE="dataops-worker:e2e",
        DATAOPS_PYTHON=sys.executable,
        DATAOPS_WORKDIR=str(workdir),
        DATAOPS_RESYNC_SECONDS="5",
        DATAOPS_STAGE_ENV=json.dumps({"DATAOPS_SOURCE_BASE": str(EXAMPLE), "PYTHONPATH": str(ROOT)}),
        PATH=os.environ.get("PATH", ""),
        HOME=os.environ.get("HOME", str(tmp_path)),
    )
    controller = Controller(
        control_plane, [sys.executable, "-m", "controller", *args], env, tmp_path / "controller"
    )
    controller.start()
    try:
        yield controller, workdir
    finally:
        controller.stop()


def _run(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    done = cluster.kubectl("get", "pipelinerun", name, "-n", namespace, "-o", "json")
    if done.returncode != 0:
        return None
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _wait(cluster: Cluster, what: str, probe: Callable[[], Any], timeout: float = 420.0) -> Any:
    return wait_until(probe, timeout, what, cluster.check_alive)


def _jobs(cluster: Cluster, namespace: str) -> list[str]:
    items = json.loads(kc(cluster, "get", "jobs", "-n", namespace, "-o", "json"))["items"]
    return sorted(j["metadata"]["name"] for j in items)


def _phase(cluster: Cluster, namespace: str, name: str) -> str:
    run = _run(cluster, namespace, name) or {}
    return str((run.get("status") or {}).get("phase", ""))


def test_the_controller_with_the_charts_rbac_survives_sigkill_between_every_pair_of_stages(
    control_plane: Cluster, chart_controller: tuple[Controller, Path], kube_namespace: str
) -> None:
    controller, workdir = chart_controller
    kc(control_plane, "apply", "-n", kube_namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
    seen: list[str] = []
    deadline = time.monotonic() + 600
    while True:
        control_plane.check_alive()
        run = _run(control_plane, kube_namespace, "inventory-demo") or {}
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
    assert _jobs(control_plane, kube_namespace) == [
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
        _wait(
            control_plane,
            "the validate Job",
            lambda: _jobs(control_plane, kube_namespace) == ["inventory-demo-validate-1"],
        )
        run = _run(control_plane, kube_namespace, "inventory-demo") or {}
        assert run["status"]["phase"] == "Validating"
        assert "dataops.io/finalizer" in run["metadata"]["finalizers"]
        kc(control_plane, "delete", "pipelinerun", "inventory-demo", "-n", kube_namespace, "--wait=false")
        _wait(
            control_plane,
            "the run to go",
            lambda: _run(control_plane, kube_namespace, "inventory-demo") is None,
            timeout=120,
        )
        _wait(control_plane, "its Job to go", lambda: _jobs(control_plane, kube_namespace) == [], 120)
        _wait(
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
    _wait(control_plane, "a run for the dropped file", lambda: len(runs()) == 1, 120)
    first = runs()
    controller.kill()
    controller.start()
    time.sleep(15)  # three listings of the prefix by the new controller
    controller.stop()
    controller.start()
    time.sleep(15)
    assert runs() == first
    done = _wait(
        control_plane,
        "the file's run to finish",
        lambda: _phase(control_plane, kube_namespace, first[0]) in ("Succeeded", "Failed"),
    )
    assert done
    assert _phase(control_plane, kube_namespace, first[0]) == "Succeeded"
    assert controller.forbidden() == []


def test_two_replicas_acting_at_once_never_duplicate_a_stage(
    control_plane: Cluster, chart_controller: tuple[Controller, Path], kube_namespace: str, tmp_path: Path
) -> None:
    """The worst case of a rolling update: peering lost, both replicas act on every event; then the old
    one goes and the new one finishes. Status writes carry the resourceVersion they were planned from."""
    first, workdir = chart_controller
    second = Controller(
        control_plane,
        [*first.argv, "--standalone"],
        {**first.env, "POD_ID": "controller-new"},
        tmp_path / "second",
    )
    first.stop()
    first.argv = [*first.argv, "--standalone"]
    first.start()
    second.start()
    try:
        kc(control_plane, "apply", "-n", kube_namespace, "-f", str(EXAMPLE / "pipelinerun.yaml"))
        _wait(
            control_plane,
            "the transform stage",
            lambda: (
                ((_run(control_plane, kube_namespace, "inventory-demo") or {}).get("status") or {}).get(
                    "currentStage"
                )
                in ("transform", "aggregate")
            ),
        )
        first.stop()  # the old replica goes; the new one carries on alone
        _wait(
            control_plane,
            "the run to finish",
            lambda: _phase(control_plane, kube_namespace, "inventory-demo") in ("Succeeded", "Failed"),
        )
    finally:
        second.stop()
    run = _run(control_plane, kube_namespace, "inventory-demo") or {}
    assert run["status"]["phase"] == "Succeeded", run["status"].get("message")
    assert [s["attempt"] for s in run["status"]["stages"]] == [1, 1, 1, 1]
    assert _jobs(control_plane, kube_namespace) == [
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
