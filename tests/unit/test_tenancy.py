"""Tenancy: a run reaches only what its namespace is granted; stage pods run as the namespace's account."""

from __future__ import annotations

from typing import Any

import pytest

from controller.manifests import build_stage_job
from controller.settings import Settings, SettingsError, settings_from_env
from controller.spec import PipelineRunSpec
from controller.tenancy import Grants, parse_grants, problems

pytestmark = pytest.mark.unit

SPEC: dict[str, Any] = {
    "source": {"uri": "gs://landing-team-a/in/items.csv", "columns": [{"name": "id", "type": "INT64"}]},
    "load": {"table": "team_a_raw.items"},
    "transform": {
        "lookups": [{"table": "shared_ref.sites", "on": ["id"], "columns": ["name"]}],
        "output": {"table": "team_a_tds.items"},
    },
    "aggregate": [{"output": "team_a_bds.kpi", "metrics": [{"name": "n", "agg": "count"}]}],
}
GRANTS = {
    "team-a": {
        "datasets": ["team_a_*", "shared_ref"],
        "buckets": ["landing-team-a"],
        "paths": ["/data/team-a"],
    }
}


def spec(**changes: Any) -> PipelineRunSpec:
    return PipelineRunSpec.model_validate({**SPEC, **changes})


def test_without_grants_nothing_is_checked() -> None:
    assert problems(spec(), "anyone", Grants()) == []


def test_a_run_inside_its_grants_is_allowed() -> None:
    assert problems(spec(), "team-a", parse_grants(GRANTS)) == []


def test_each_reach_outside_is_named_with_its_field_and_the_grant_it_lacks() -> None:
    run = spec(
        source={"uri": "gs://landing-team-b/x.csv", "columns": [{"name": "id", "type": "INT64"}]},
        load={"table": "team_b_raw.items"},
    )
    found = problems(run, "team-a", parse_grants(GRANTS))
    assert found == [
        "spec.source.uri: namespace team-a is not granted bucket 'landing-team-b'"
        " (Helm value tenancy.grants.team-a.buckets)",
        "spec.load.table: namespace team-a is not granted dataset 'team_b_raw'"
        " (Helm value tenancy.grants.team-a.datasets)",
    ]


def test_an_unlisted_namespace_is_granted_nothing_and_paths_are_prefixes() -> None:
    grants = parse_grants(GRANTS)
    assert len(problems(spec(), "team-c", grants)) == 5
    local = {"uri": "/data/team-a/in.csv", "columns": [{"name": "id", "type": "INT64"}]}
    assert problems(spec(source=local), "team-a", grants) == []
    sneaky = {"uri": "/data/team-a-other/in.csv", "columns": [{"name": "id", "type": "INT64"}]}
    assert "spec.source.uri" in problems(spec(source=sneaky), "team-a", grants)[0]
    elsewhere = spec(warehouse={"type": "bigquery", "project": "team-b-prod"})
    assert "spec.warehouse.project" in problems(elsewhere, "team-a", grants)[0]


def test_malformed_grants_name_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"DATAOPS_GRANTS.team-a.datasets"):
        settings_from_env({"DATAOPS_GRANTS": '{"team-a": {"datasets": "team_a_*"}}'})
    with pytest.raises(SettingsError, match=r"DATAOPS_GRANTS.team-a"):
        settings_from_env({"DATAOPS_GRANTS": '{"team-a": {"tables": []}}'})
    assert settings_from_env({"DATAOPS_GRANTS": "{}"}).grants.enabled is False


def test_stage_pods_run_as_the_runs_namespace_account_never_the_controllers() -> None:
    body = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "r", "namespace": "team-a", "uid": "u1"},
        "spec": SPEC,
    }
    job = build_stage_job(body, "validate", 1, "2026-01-01T00:00:00Z", Settings())
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "team-a"
    assert pod["serviceAccountName"] == "dataops-worker"
