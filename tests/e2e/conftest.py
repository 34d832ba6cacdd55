"""Fixtures for end-to-end tests on a real Kubernetes control plane (tests/controlplane/).

- `control_plane` (session): a started `Cluster` (etcd, kube-apiserver with RBAC, kube-controller-manager),
  with `.api` (admin client), `.kubeconfig` (admin), `.kubectl()`, `.helm()`,
  `.service_account_kubeconfig(ns, name)`; stopped after the session.
- `node_agent`: the session's `NodeAgent`, running (started again if a test stopped it), so Pods that
  Jobs and CronJobs create run as local processes.
- `kube_namespace`: a fresh namespace for one test (its default ServiceAccount exists), deleted after it.

Tests that use `control_plane` or `control_plane_bin` (directly or through the others) get the
`controlplane` marker: `pytest -m controlplane` runs exactly those. The binaries come from
tests/controlplane/build.sh (run it first: a cold build takes minutes). Without Go, these tests are skipped
on a laptop and fail under CI=true, saying what to install; a failed build or start always fails them.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.controlplane.cluster import (
    Cluster,
    ControlPlaneError,
    ControlPlaneUnavailable,
    build_control_plane,
    wait_until,
)
from tests.controlplane.node_agent import NodeAgent
from tests.e2e.chart_controller import chart_controller, system_namespace  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
STARTUP = pytest.StashKey[str]()
MARKER = "controlplane"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    """The folder holding etcd, kube-apiserver, kube-controller-manager, kubectl and helm."""
    try:
        return build_control_plane()
    except ControlPlaneUnavailable as error:  # no Go: a laptop may skip, CI may not
        problem, fatal = str(error), _in_ci()
    except ControlPlaneError as error:
        problem, fatal = str(error), True
    # Outside the except blocks, so that the report is the message alone, not a chain of tracebacks.
    if fatal:
        pytest.fail(problem, pytrace=False)
    pytest.skip(problem)


@pytest.fixture(scope="session")
def control_plane(
    control_plane_bin: Path, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[Cluster]:
    cluster = Cluster(control_plane_bin, tmp_path_factory.mktemp("controlplane"))
    problem = ""
    try:
        cluster.start()  # on failure, it has stopped whatever it started
    except (ControlPlaneError, TimeoutError) as error:
        problem = f"the test control plane did not start: {error}"
    if problem:
        pytest.fail(problem, pytrace=False)
    pytestconfig.stash[STARTUP] = (
        f"test control plane: kube-apiserver ready in {cluster.apiserver_ready_seconds:.1f} s"
        f" (logs in {cluster.workdir / 'logs'})"
    )
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def _session_node_agent(
    control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgent]:
    # The project's environment stands in for the images: `python` is this interpreter, with the repo importable.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    agent = NodeAgent(control_plane.api, tmp_path_factory.mktemp("node-agent"), env=env)
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture
def node_agent(_session_node_agent: NodeAgent) -> NodeAgent:
    _session_node_agent.start()
    return _session_node_agent


@pytest.fixture
def kube_namespace(control_plane: Cluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    control_plane.api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    wait_until(
        lambda: control_plane.api.exists(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        30,
        f"the default ServiceAccount of namespace {name}",
        control_plane.check_alive,
    )
    yield name
    control_plane.api.delete(f"/api/v1/namespaces/{name}", propagation="Background")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}: runs on the real control plane (tests/controlplane); `make e2e`"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the control plane is marked, so that `pytest -m controlplane` selects them all."""
    for item in items:
        if {"control_plane", "control_plane_bin"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(MARKER)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if STARTUP in config.stash:
        terminalreporter.write_line(config.stash[STARTUP])
