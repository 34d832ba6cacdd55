"""kmock's Kubernetes API emulator as the controller's cluster: no API server, no kubelet.

`cluster` (registered in tests/conftest.py) declares the resources the controller reads and writes and
points KUBECONFIG at the emulator; the helpers below create, read and finish objects on it the way the
Job controller and the kubelet would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kopf.testing import KopfRunner

RUNS = "/apis/dataops.io/v1alpha1/namespaces/default/pipelineruns"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
PODS = "/api/v1/namespaces/default/pods"

RESOURCES = [
    ("dataops.io/v1alpha1/pipelineruns", "PipelineRun"),
    ("dataops.io/v1alpha1/ingestionsources", "IngestionSource"),
    ("batch/v1/jobs", "Job"),
    ("batch/v1/cronjobs", "CronJob"),
    ("v1/pods", "Pod"),
    ("v1/events", "Event"),
    ("v1/namespaces", "Namespace"),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition"),
]


@pytest.fixture
async def cluster(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[kmock.KubernetesEmulator]:
    for res, kind in RESOURCES:
        kmock.resources[res] = {
            "kind": kind,
            "namespaced": kind not in ("Namespace", "CustomResourceDefinition"),
            "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
        }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "u", "namespace": "default"}}],
        "users": [{"name": "u", "user": {"token": "test"}}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("DATAOPS_WORKER_IMAGE", "worker:test")
    yield kmock


async def wait_for(probe: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)


async def get_json(k: kmock.KubernetesEmulator, url: str) -> dict[str, Any] | None:
    resp = await k.get(url)
    return await resp.json() if resp.status == 200 else None


async def list_runs(k: kmock.KubernetesEmulator) -> list[dict[str, Any]]:
    data = await get_json(k, RUNS)
    return [r for r in (data or {}).get("items", []) if r.get("metadata")]


async def post_run(
    k: kmock.KubernetesEmulator, name: str, spec: dict[str, Any], created: str | None = None
) -> None:
    """A PipelineRun in namespace default, as the API server would store it (uid ``uid-NAME``, version 1)."""
    metadata = {"name": name, "namespace": "default", "uid": f"uid-{name}", "resourceVersion": "1"}
    if created is not None:
        metadata["creationTimestamp"] = created
    await k.post(
        RUNS,
        json={"apiVersion": "dataops.io/v1alpha1", "kind": "PipelineRun", "metadata": metadata, "spec": spec},
    )


async def finish_job(k: kmock.KubernetesEmulator, name: str, exit_code: int, result: dict[str, Any]) -> None:
    """What the Job controller and the kubelet would write when the stage's process ends."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{name}-pod", "namespace": "default", "labels": {"job-name": name}},
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "stage",
                    "state": {"terminated": {"exitCode": exit_code, "message": json.dumps(result)}},
                }
            ],
        },
    }
    await k.post(PODS, json=pod)
    condition = "Complete" if exit_code == 0 else "Failed"
    await k.patch(
        f"{JOBS}/{name}/status",
        json={"status": {"conditions": [{"type": condition, "status": "True"}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )


@contextlib.asynccontextmanager
async def operator() -> AsyncIterator[KopfRunner]:
    """The controller in a thread of its own, stopped without blocking this loop, which serves kmock.

    KopfRunner's own ``__exit__`` joins the thread: called on the test's loop, it would freeze the
    emulator while the operator, stopping, may still be waiting for an answer from it.
    """
    runner = KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "controller.handlers"], timeout=120)
    runner.__enter__()
    try:
        yield runner
    except BaseException as exc:
        await asyncio.to_thread(runner.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await asyncio.to_thread(runner.__exit__, None, None, None)
