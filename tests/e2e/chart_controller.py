"""The controller as the chart deploys it, run as a local process on the real control plane.

The chart is rendered by the real ``helm template``; everything but the Deployment is applied, and the
controller runs with the Deployment's own arguments and environment and a token of the chart's
ServiceAccount, so a verb missing from the chart's Role shows as a 403 (``Controller.forbidden``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.manifests import LABEL_RUN
from tests.controlplane.cluster import Cluster, free_port, wait_until
from tests.controlplane.node_agent import NodeAgent

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
    account: str = ""  # the chart's ServiceAccount the controller authenticates as
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

    def restart(self, **env: str) -> None:
        """Stopped, then started again with these environment variables changed."""
        self.stop()
        self.env.update(env)
        self.start()

    def forbidden(self) -> list[str]:
        """Lines where the API server refused the controller (403): a verb the chart's RBAC lacks."""
        lines = []
        for path in self.logs:
            for line in path.read_text(errors="replace").splitlines():
                if "403" in line and ("Forbidden" in line or "forbidden" in line):
                    lines.append(line[:400])
        return lines


def render_chart(cluster: Cluster, system: str, watched: str) -> list[dict[str, Any]]:
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
    docs = render_chart(control_plane, system_namespace, kube_namespace)
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
        control_plane, [sys.executable, "-m", "controller", *args], env, tmp_path / "controller", account
    )
    controller.start()
    try:
        yield controller, workdir
    finally:
        controller.stop()


def get_run(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The PipelineRun as the API server holds it, or None when it is gone."""
    done = cluster.kubectl("get", "pipelinerun", name, "-n", namespace, "-o", "json")
    if done.returncode != 0:
        return None
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def wait_for(cluster: Cluster, what: str, probe: Callable[[], Any], timeout: float = 420.0) -> Any:
    """``probe``'s first truthy value; gives up early if the control plane died, else after ``timeout``."""
    return wait_until(probe, timeout, what, cluster.check_alive)


def job_names(cluster: Cluster, namespace: str) -> list[str]:
    """The names of the namespace's stage Jobs (those of runs), sorted.

    A CronJob's consolidation cycles are not counted: an IngestionSource's schedule may fire during any
    test that has one (the wall clock decides), and its Jobs say nothing about the runs.
    """
    items = json.loads(kc(cluster, "get", "jobs", "-n", namespace, "-l", LABEL_RUN, "-o", "json"))["items"]
    return sorted(j["metadata"]["name"] for j in items)


def run_phase(cluster: Cluster, namespace: str, name: str) -> str:
    """The run's ``status.phase``; empty while it has none or when the run is gone."""
    run = get_run(cluster, namespace, name) or {}
    return str((run.get("status") or {}).get("phase", ""))
