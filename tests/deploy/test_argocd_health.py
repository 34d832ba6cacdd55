"""helm/argocd: the Lua health checks run for real (Lua 5.1, as Argo CD's gopher-lua), the argocd-cm snippet
carries exactly those files, and the Applications deploy the chart before the custom resources of each
environment.
"""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from controller.planner import RunStatus
from controller.spec import IngestionSource, PipelineRun, parse_documents
from controller.stages import PHASES
from controller.status import to_dict
from tests.deploy.deploy_tools import ROOT

pytestmark = pytest.mark.unit

ARGOCD = ROOT / "helm" / "argocd"
HEALTH_KEYS = {
    "resource.customizations.health.dataops.io_PipelineRun": "pipelinerun.lua",
    "resource.customizations.health.dataops.io_IngestionSource": "ingestionsource.lua",
    "resource.customizations.health.argoproj.io_Application": "application.lua",
}
ENVIRONMENTS = ("dev", "staging", "prod")
EXPECTED_PIPELINERUN_HEALTH = {
    "Pending": "Progressing",
    "Validating": "Progressing",
    "Loading": "Progressing",
    "Transforming": "Progressing",
    "Aggregating": "Progressing",
    "Succeeded": "Healthy",
    "Failed": "Degraded",
    "Cancelled": "Suspended",
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    """Run a health script the way Argo CD does: `obj` a global, the chunk returns {status, message}."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute((ARGOCD / "health" / script).read_text(encoding="utf-8"))
    return str(result["status"]), str(result["message"])


def pipelinerun(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "run", "namespace": "dataops", "generation": generation},
        "spec": {"source": {"uri": "gs://b/x.csv"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ingestionsource(
    status: dict[str, Any] | None = None, suspend: bool = False, generation: int = 1
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "source", "namespace": "dataops", "generation": generation},
        "spec": {"suspend": suspend, "files": {"prefix": "gs://b/in/"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ready(status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}]}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def application(env: str, role: str) -> dict[str, Any]:
    [doc] = documents(ARGOCD / "environments" / env / f"{role}.yaml")
    return doc


def wave(app: dict[str, Any]) -> int:
    return int(app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])


# --- PipelineRun ---------------------------------------------------------------------------------------------------


def test_every_phase_of_the_state_machine_has_its_health() -> None:
    assert set(EXPECTED_PIPELINERUN_HEALTH) == set(PHASES)


@pytest.mark.parametrize("phase", PHASES)
def test_pipelinerun_health_follows_the_status_the_controller_writes(phase: str) -> None:
    status = to_dict(
        RunStatus(phase=phase, reason=phase, message="stage load running"), generation=1, now=NOW
    )
    assert health("pipelinerun.lua", pipelinerun(status))[0] == EXPECTED_PIPELINERUN_HEALTH[phase]


def test_pipelinerun_without_status_is_progressing() -> None:
    assert health("pipelinerun.lua", pipelinerun()) == (
        "Progressing",
        "Waiting for the controller to pick the run up",
    )


def test_pipelinerun_with_empty_status_is_progressing() -> None:
    assert health("pipelinerun.lua", pipelinerun({}))[0] == "Progressing"


def test_pipelinerun_status_older_than_the_spec_is_progressing() -> None:
    status = {"phase": "Succeeded", "observedGeneration": 1}
    assert health("pipelinerun.lua", pipelinerun(status, generation=2)) == (
        "Progressing",
        "Waiting for the controller to observe generation 2",
    )


def test_failed_pipelinerun_message_names_the_stage_and_the_error() -> None:
    status = {"phase": "Failed", "currentStage": "validate", "message": "3 rows failed expect_column_values"}
    assert health("pipelinerun.lua", pipelinerun(status)) == (
        "Degraded",
        "Failed (stage validate): 3 rows failed expect_column_values",
    )


def test_pipelinerun_in_an_unknown_phase_with_failed_condition_is_degraded() -> None:
    status = {"phase": "Exploding", "conditions": [{"type": "Failed", "status": "True", "reason": "Boom"}]}
    assert health("pipelinerun.lua", pipelinerun(status))[0] == "Degraded"


def test_pipelinerun_in_an_unknown_phase_with_ready_condition_is_healthy() -> None:
    status = {"phase": "Archived", "conditions": [{"type": "Ready", "status": "True", "reason": "Done"}]}
    assert health("pipelinerun.lua", pipelinerun(status))[0] == "Healthy"


def test_pipelinerun_in_an_unknown_phase_without_conditions_is_unknown() -> None:
    assert health("pipelinerun.lua", pipelinerun({"phase": "Exploding"})) == (
        "Unknown",
        "Unknown phase Exploding",
    )


# --- IngestionSource -----------------------------------------------------------------------------------------------


def test_suspended_source_is_suspended_whatever_its_status() -> None:
    status, message = health("ingestionsource.lua", ingestionsource(ready("False", "Failed"), suspend=True))
    assert status == "Suspended"
    assert message.startswith("Suspended")


def test_source_without_status_is_progressing() -> None:
    assert health("ingestionsource.lua", ingestionsource())[0] == "Progressing"


def test_ready_source_is_healthy() -> None:
    assert health("ingestionsource.lua", ingestionsource(ready("True", "Watching", "2 runs active"))) == (
        "Healthy",
        "Watching: 2 runs active",
    )


def test_source_not_ready_because_it_failed_is_degraded() -> None:
    status = ready("False", "Failed", "cannot list gs://b/in/: 403")
    assert health("ingestionsource.lua", ingestionsource(status)) == (
        "Degraded",
        "Failed: cannot list gs://b/in/: 403",
    )


@pytest.mark.parametrize("reason", ["InvalidSpec", "CronJobFailed"])
def test_source_not_ready_for_any_other_failure_reason_is_degraded(reason: str) -> None:
    assert health("ingestionsource.lua", ingestionsource(ready("False", reason)))[0] == "Degraded"


@pytest.mark.parametrize(
    "reason", ["Pending", "Reconciling", "Progressing", "Creating", "Initializing", "Waiting"]
)
def test_source_not_ready_on_its_way_is_progressing(reason: str) -> None:
    assert health("ingestionsource.lua", ingestionsource(ready("False", reason)))[0] == "Progressing"


def test_stalled_source_is_degraded_even_if_ready_was_true() -> None:
    status = {
        "conditions": [
            {"type": "Ready", "status": "True"},
            {"type": "Stalled", "status": "True", "reason": "X"},
        ]
    }
    assert health("ingestionsource.lua", ingestionsource(status))[0] == "Degraded"


def test_source_status_older_than_the_spec_is_progressing() -> None:
    status = {"observedGeneration": 3, **ready("True", "Watching")}
    assert health("ingestionsource.lua", ingestionsource(status, generation=4))[0] == "Progressing"


def test_source_with_failed_phase_and_no_conditions_is_degraded() -> None:
    assert health("ingestionsource.lua", ingestionsource({"phase": "Failed", "message": "bad"})) == (
        "Degraded",
        "bad",
    )


def test_source_with_a_status_but_no_ready_condition_is_progressing() -> None:
    assert health("ingestionsource.lua", ingestionsource({"activeRuns": 1}))[0] == "Progressing"


# --- Application (for the sync waves of the per-environment roots) --------------------------------------------------


@pytest.mark.parametrize("reported", ["Healthy", "Progressing", "Degraded", "Suspended", "Missing"])
def test_application_health_is_the_health_it_reports(reported: str) -> None:
    app = {"metadata": {"name": "a"}, "status": {"health": {"status": reported, "message": "m"}}}
    assert health("application.lua", app) == (reported, "m")


def test_application_without_health_is_progressing() -> None:
    assert health("application.lua", {"metadata": {"name": "a"}, "status": {}})[0] == "Progressing"


# --- argocd-cm -----------------------------------------------------------------------------------------------------


def test_argocd_cm_snippet_carries_exactly_the_lua_files() -> None:
    [configmap] = documents(ARGOCD / "argocd-cm.yaml")
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "argocd-cm"
    assert set(configmap["data"]) == set(HEALTH_KEYS)
    for key, script in HEALTH_KEYS.items():
        expected = (ARGOCD / "health" / script).read_text(encoding="utf-8")
        assert configmap["data"][key] == expected, (
            f"{key} differs from health/{script}: copy the file into it"
        )


# --- Applications --------------------------------------------------------------------------------------------------


def test_applicationset_makes_one_root_per_environment_folder() -> None:
    [appset] = documents(ARGOCD / "applicationset.yaml")
    [generator] = appset["spec"]["generators"]
    envs = [element["env"] for element in generator["list"]["elements"]]
    assert envs == list(ENVIRONMENTS)
    assert sorted(p.name for p in (ARGOCD / "environments").iterdir()) == sorted(ENVIRONMENTS)
    path = appset["spec"]["template"]["spec"]["source"]["path"]
    for env in envs:
        assert (ROOT / path.replace("{{.env}}", env)).is_dir()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_operator_application_installs_the_chart_with_the_environment_values(env: str) -> None:
    source = application(env, "operator")["spec"]["source"]
    assert source["path"] == "helm/dataops-operator"
    assert source["helm"]["valueFiles"] == [f"values-{env}.yaml"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_custom_resources_sync_after_the_operator_and_its_crds(env: str) -> None:
    operator, pipelines = application(env, "operator"), application(env, "pipelines")
    assert wave(operator) < wave(pipelines)
    assert "SkipDryRunOnMissingResource=true" in pipelines["spec"]["syncPolicy"]["syncOptions"]
    assert pipelines["spec"]["source"]["path"] == f"examples/environments/{env}"
    assert (
        operator["spec"]["destination"]["name"]
        == pipelines["spec"]["destination"]["name"]
        == f"dataops-{env}"
    )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_operator_application_keeps_crds_when_deleted(env: str) -> None:
    assert "finalizers" not in application(env, "operator")["metadata"]


def test_every_application_is_in_the_project_and_allowed_by_it() -> None:
    [project] = documents(ARGOCD / "project.yaml")
    [appset] = documents(ARGOCD / "applicationset.yaml")
    specs = [appset["spec"]["template"]["spec"]]
    specs += [application(env, role)["spec"] for env in ENVIRONMENTS for role in ("operator", "pipelines")]
    allowed = project["spec"]["destinations"]
    for spec in specs:
        assert spec["project"] == project["metadata"]["name"]
        assert spec["source"]["repoURL"] in project["spec"]["sourceRepos"]
        dest = spec["destination"]
        assert any(
            fnmatch.fnmatch(dest["name"], d["name"]) and fnmatch.fnmatch(dest["namespace"], d["namespace"])
            for d in allowed
        ), f"{dest} is not a destination of the project"


def test_application_names_are_unique() -> None:
    names = [
        application(env, role)["metadata"]["name"]
        for env in ENVIRONMENTS
        for role in ("operator", "pipelines")
    ]
    assert len(names) == len(set(names))


# --- the custom resources each environment syncs -------------------------------------------------------------------

MODELS: dict[str, type[PipelineRun] | type[IngestionSource]] = {
    "PipelineRun": PipelineRun,
    "IngestionSource": IngestionSource,
}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_resources_are_valid_custom_resources(env: str) -> None:
    files = sorted((ROOT / "examples" / "environments" / env).glob("*.yaml"))
    assert files
    for path in files:
        for doc, _ in parse_documents(path.read_text(encoding="utf-8"), str(path)):
            MODELS[doc["kind"]].model_validate(doc)
            assert "namespace" not in doc["metadata"], (
                f"{path}: the Application's destination sets the namespace"
            )
