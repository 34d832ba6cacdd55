"""The controller's handlers against kmock's Kubernetes API emulator: fast, no cluster.

The proof on a real API server is in tests/e2e; here the handlers' behaviour is pinned: stage order,
deterministic Job names, retries, cancellation, restarts without duplicates.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import pytest

from tests.kmock_cluster import (
    JOBS,
    PODS,
    RUNS,
    finish_job,
    get_json,
    list_runs,
    operator,
    post_run,
    wait_for,
)

pytestmark = pytest.mark.integration

SPEC: dict[str, Any] = {
    "source": {"uri": "/data/in.csv", "columns": [{"name": "id", "type": "INT64"}]},
    "load": {"table": "raw.items"},
    "transform": {"output": {"table": "tds.items"}},
    "retries": {"limit": 1, "backoffSeconds": 0},
}


async def test_a_run_goes_through_its_stages_one_job_each(cluster: kmock.KubernetesEmulator) -> None:
    await post_run(cluster, "demo", SPEC)
    async with operator() as runner:
        job = await wait_for(lambda: get_json(cluster, f"{JOBS}/demo-validate-1"))
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "validate"
        assert job["metadata"]["ownerReferences"][0]["name"] == "demo"
        await finish_job(cluster, "demo-validate-1", 0, {"rows_in": 3, "rows_out": 3, "message": "ok"})
        await wait_for(lambda: get_json(cluster, f"{JOBS}/demo-load-1"))
        await finish_job(cluster, "demo-load-1", 0, {"rows_in": 3, "rows_out": 3})
        await wait_for(lambda: get_json(cluster, f"{JOBS}/demo-transform-1"))
        await finish_job(cluster, "demo-transform-1", 0, {"rows_in": 3, "rows_out": 2})

        async def succeeded() -> bool:
            run = await get_json(cluster, f"{RUNS}/demo")
            return bool(run and run.get("status", {}).get("phase") == "Succeeded")

        await wait_for(succeeded)
    assert runner.exception is None
    run = await get_json(cluster, f"{RUNS}/demo")
    assert run is not None
    assert [s["state"] for s in run["status"]["stages"]] == ["Succeeded"] * 3
    assert run["status"]["stages"][2]["rowsOut"] == 2


async def test_a_pod_that_cannot_pull_its_image_fails_its_attempt_when_the_grace_ends_with_no_resync(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAOPS_IMAGE_PULL_GRACE_SECONDS", "3")
    monkeypatch.setenv("DATAOPS_RESYNC_SECONDS", "3600")  # only the pod's event and the grace's end act
    await post_run(cluster, "pull", SPEC)
    async with operator() as runner:
        job = await wait_for(lambda: get_json(cluster, f"{JOBS}/pull-validate-1"))
        # What the Job controller and the kubelet write for a pod whose image cannot be pulled.
        labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": "pull-validate-1"}
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "pull-validate-1-x7k2q",
                "namespace": "default",
                "labels": labels,
                "creationTimestamp": now,
            },
            "status": {"phase": "Pending"},
        }
        await cluster.post(PODS, json=pod)
        await asyncio.sleep(1)
        waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "worker:test"'}
        await cluster.patch(
            f"{PODS}/{pod['metadata']['name']}/status",
            json={"status": {"containerStatuses": [{"name": "stage", "state": {"waiting": waiting}}]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await wait_for(lambda: get_json(cluster, f"{JOBS}/pull-validate-2"), timeout=30)
    assert runner.exception is None
    run = await get_json(cluster, f"{RUNS}/pull")
    assert run is not None
    validate = run["status"]["stages"][0]
    assert (validate["attempt"], validate["infraFailures"], validate["appFailures"]) == (2, 1, 0)


async def test_bad_input_fails_the_run_without_a_second_attempt(cluster: kmock.KubernetesEmulator) -> None:
    await post_run(cluster, "bad", SPEC)
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/bad-validate-1"))
        await finish_job(
            cluster, "bad-validate-1", 65, {"message": "data.csv: row 3: abc", "reason": "RowsRejected"}
        )

        async def failed() -> dict[str, Any] | None:
            run = await get_json(cluster, f"{RUNS}/bad")
            return run if run and run.get("status", {}).get("phase") == "Failed" else None

        run = await wait_for(failed)
    assert "row 3: abc" in run["status"]["message"]
    assert await get_json(cluster, f"{JOBS}/bad-validate-2") is None


async def test_an_application_failure_is_retried_with_a_new_job(cluster: kmock.KubernetesEmulator) -> None:
    await post_run(cluster, "flaky", SPEC)
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/flaky-validate-1"))
        await finish_job(
            cluster, "flaky-validate-1", 1, {"message": "connection reset", "reason": "InternalError"}
        )
        retry = await wait_for(lambda: get_json(cluster, f"{JOBS}/flaky-validate-2"))
    assert retry["metadata"]["labels"]["dataops.io/attempt"] == "2"


async def test_an_invalid_spec_fails_with_the_problem_named(cluster: kmock.KubernetesEmulator) -> None:
    spec = {**SPEC, "transform": {"dedupe": {"key": ["nope"], "orderBy": "id"}, "output": {"table": "tds.x"}}}
    await post_run(cluster, "wrong", spec)
    async with operator():

        async def failed() -> dict[str, Any] | None:
            run = await get_json(cluster, f"{RUNS}/wrong")
            return run if run and run.get("status", {}).get("phase") == "Failed" else None

        run = await wait_for(failed)
    assert "spec.transform.dedupe.key[0]: unknown column 'nope'" in run["status"]["message"]
    assert await get_json(cluster, f"{JOBS}/wrong-validate-1") is None


SOURCES = "/apis/dataops.io/v1alpha1/namespaces/default/ingestionsources"
CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"


def ingestion_source(prefix: Path) -> dict[str, Any]:
    template = {k: v for k, v in SPEC.items() if k != "source"}
    template["source"] = {"columns": SPEC["source"]["columns"]}
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "drops", "namespace": "default", "uid": "s1", "resourceVersion": "1"},
        "spec": {
            "files": {
                "prefix": str(prefix),
                "pattern": "*.csv",
                "template": template,
                "maxConcurrentRuns": 5,
                "pollSeconds": 5,
            },
            "consolidation": {
                "schedule": "*/20 * * * *",
                "timeZone": "Europe/Paris",
                "source": {"table": "ops.ussd_operations", "id": "id", "cursor": "ts"},
                "target": {"table": "cons.consolidated", "key": ["id"]},
            },
        },
    }


async def test_a_source_owns_a_forbid_cronjob_and_runs_each_new_file_once(
    cluster: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text("id\n1\n", encoding="utf-8")
    (drop / "b.csv").write_text("id\n2\n", encoding="utf-8")
    (drop / "notes.txt").write_text("not a csv", encoding="utf-8")
    await cluster.post(SOURCES, json=ingestion_source(drop))
    async with operator():
        cron = await wait_for(lambda: get_json(cluster, f"{CRONJOBS}/drops-consolidate"))

        async def two_runs() -> list[dict[str, Any]]:
            runs = await list_runs(cluster)
            return runs if len(runs) == 2 else []

        runs = await wait_for(two_runs)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["timeZone"] == "Europe/Paris"
    assert sorted(r["spec"]["source"]["uri"] for r in runs) == [str(drop / "a.csv"), str(drop / "b.csv")]
    assert all(
        r["metadata"]["annotations"]["argocd.argoproj.io/compare-options"] == "IgnoreExtraneous" for r in runs
    )
    names = sorted(r["metadata"]["name"] for r in runs)
    async with operator():
        await asyncio.sleep(3)
    assert sorted(r["metadata"]["name"] for r in await list_runs(cluster)) == names


async def wait_status(k: kmock.KubernetesEmulator, name: str, **want: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        run = await get_json(k, f"{RUNS}/{name}")
        status = (run or {}).get("status") or {}
        return run if run and all(status.get(key) == value for key, value in want.items()) else None

    found: dict[str, Any] = await wait_for(probe)
    return found


async def test_runs_beyond_the_namespace_limit_wait_queued_in_creation_order(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAOPS_MAX_RUNNING_PER_NAMESPACE", "1")
    await post_run(cluster, "second", SPEC, created="2026-01-01T00:00:02Z")
    await post_run(cluster, "first", SPEC, created="2026-01-01T00:00:01Z")
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/first-validate-1"))
        queued = await wait_status(cluster, "second", reason="Queued")
        assert queued["status"]["phase"] == "Pending"
        assert "at most 1 at once" in queued["status"]["message"]
        assert await get_json(cluster, f"{JOBS}/second-validate-1") is None
        await finish_job(cluster, "first-validate-1", 65, {"message": "bad rows", "reason": "RowsRejected"})
        await wait_status(cluster, "first", phase="Failed")
        await wait_for(lambda: get_json(cluster, f"{JOBS}/second-validate-1"))
    run = await get_json(cluster, f"{RUNS}/second")
    assert run is not None and run["status"]["phase"] == "Validating"


async def test_a_stage_over_its_timeout_is_stopped_and_the_run_fails(
    cluster: kmock.KubernetesEmulator,
) -> None:
    await post_run(cluster, "slow", {**SPEC, "timeouts": {"stageSeconds": 2}})
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/slow-validate-1"))
        run = await wait_status(cluster, "slow", phase="Failed")

        async def job_gone() -> bool:
            return await get_json(cluster, f"{JOBS}/slow-validate-1") is None

        await wait_for(job_gone)
    assert run["status"]["reason"] == "Timeout"
    assert "stageSeconds=2" in run["status"]["message"]


async def test_cancel_stops_the_running_stage(cluster: kmock.KubernetesEmulator) -> None:
    await post_run(cluster, "stop", SPEC)
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/stop-validate-1"))
        await cluster.patch(
            f"{RUNS}/stop",
            json={"spec": {"cancel": True}, "metadata": {"resourceVersion": "2", "generation": 2}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        run = await wait_status(cluster, "stop", phase="Cancelled")

        async def job_gone() -> bool:
            return await get_json(cluster, f"{JOBS}/stop-validate-1") is None

        await wait_for(job_gone)
    assert [s["state"] for s in run["status"]["stages"]] == ["Cancelled", "Cancelled", "Cancelled"]


async def test_a_rerun_starts_again_from_the_failed_stage(cluster: kmock.KubernetesEmulator) -> None:
    await post_run(cluster, "again", {**SPEC, "retries": {"limit": 0, "backoffSeconds": 0}})
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/again-validate-1"))
        await finish_job(cluster, "again-validate-1", 0, {"rows_in": 3, "rows_out": 3})
        await wait_for(lambda: get_json(cluster, f"{JOBS}/again-load-1"))
        await finish_job(cluster, "again-load-1", 1, {"message": "warehouse locked"})
        await wait_status(cluster, "again", phase="Failed")
        await cluster.patch(
            f"{RUNS}/again",
            json={"spec": {"rerun": 1}, "metadata": {"resourceVersion": "3", "generation": 2}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        await wait_for(lambda: get_json(cluster, f"{JOBS}/again-load-2"))
        await finish_job(cluster, "again-load-2", 0, {"rows_in": 3, "rows_out": 3})
        await wait_for(lambda: get_json(cluster, f"{JOBS}/again-transform-1"))
        await finish_job(cluster, "again-transform-1", 0, {"rows_in": 3, "rows_out": 3})
        run = await wait_status(cluster, "again", phase="Succeeded")
    assert await get_json(cluster, f"{JOBS}/again-validate-2") is None
    assert [s["attempt"] for s in run["status"]["stages"]] == [1, 2, 1]


async def test_a_finished_run_is_deleted_when_its_ttl_passes(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAOPS_FINISHED_TTL_SECONDS", "1")
    await post_run(cluster, "brief", SPEC)
    async with operator():
        await wait_for(lambda: get_json(cluster, f"{JOBS}/brief-validate-1"))
        await finish_job(cluster, "brief-validate-1", 65, {"message": "bad rows", "reason": "RowsRejected"})

        async def gone() -> bool:
            return await get_json(cluster, f"{RUNS}/brief") is None

        await wait_for(gone)


async def test_a_run_reaching_outside_its_namespace_grants_is_refused_before_any_job(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAOPS_GRANTS", json.dumps({"default": {"datasets": ["raw"], "paths": ["/data"]}}))
    await post_run(cluster, "outside", SPEC)  # tds.items: dataset tds is not granted
    await post_run(cluster, "inside", {k: v for k, v in SPEC.items() if k != "transform"})
    async with operator():
        run = await wait_status(cluster, "outside", phase="Failed")
        await wait_for(lambda: get_json(cluster, f"{JOBS}/inside-validate-1"))
    assert run["status"]["reason"] == "NotGranted"
    assert (
        "spec.transform.output.table: namespace default is not granted dataset 'tds'"
        in run["status"]["message"]
    )
    assert await get_json(cluster, f"{JOBS}/outside-validate-1") is None


async def test_a_run_refused_for_a_dataset_is_admitted_once_an_ingestion_source_grants_it(
    cluster: kmock.KubernetesEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATAOPS_GRANTS", json.dumps({"default": {"datasets": ["raw"], "paths": ["/data"]}}))
    await post_run(cluster, "before", SPEC)  # tds.items: dataset tds is granted by nobody yet
    async with operator() as runner:
        refused = await wait_status(cluster, "before", phase="Failed")
        granting = ingestion_source(tmp_path / "empty")
        granting["spec"]["grants"] = {"datasets": ["tds"]}
        await cluster.post(SOURCES, json=granting)
        await wait_for(lambda: get_json(cluster, f"{CRONJOBS}/drops-consolidate"))
        await post_run(cluster, "after", SPEC)
        await wait_for(lambda: get_json(cluster, f"{JOBS}/after-validate-1"))
    assert runner.exception is None
    assert refused["status"]["reason"] == "NotGranted"
    assert refused["status"]["message"] == (
        "spec.transform.output.table: namespace default is not granted dataset 'tds' (grant it in the Helm"
        " value tenancy.grants.default.datasets, or spec.grants.datasets of an IngestionSource in namespace"
        " default)"
    )
    assert await get_json(cluster, f"{JOBS}/before-validate-1") is None
    after = await get_json(cluster, f"{RUNS}/after")
    assert after is not None and after["status"]["phase"] == "Validating"
