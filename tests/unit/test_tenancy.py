"""Tenancy: a run reaches only what its namespace is granted; stage pods run as the namespace's account."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller.manifests import build_stage_job
from controller.settings import Settings, SettingsError, settings_from_env
from controller.source_grants import SourceGrants
from controller.spec import PipelineRunSpec
from controller.tenancy import Grant, Grants, parse_grants, problems

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
        " (grant it in the Helm value tenancy.grants.team-a.buckets,"
        " or spec.grants.buckets of an IngestionSource in namespace team-a)",
        "spec.load.table: namespace team-a is not granted dataset 'team_b_raw'"
        " (grant it in the Helm value tenancy.grants.team-a.datasets,"
        " or spec.grants.datasets of an IngestionSource in namespace team-a)",
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


# -- grants declared by IngestionSources ----------------------------------------------------------------------

OUTSIDE = {"load": {"table": "finance_raw.items"}}


def source(
    name: str, grants: dict[str, Any] | None, namespace: str = "team-a", **meta: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {"consolidation": CONSOLIDATION}
    if grants is not None:
        spec["grants"] = grants
    return {"metadata": {"name": name, "namespace": namespace, **meta}, "spec": spec}


CONSOLIDATION = {
    "schedule": "*/20 * * * *",
    "source": {"table": "ops.operations", "id": "id", "cursor": "ts"},
    "target": {"table": "cons.consolidated", "key": ["id"]},
}


def test_a_sources_grants_add_to_the_helm_grants_of_its_namespace() -> None:
    index = SourceGrants()
    index.observe(source("finance", {"datasets": ["finance_*"]}))
    run = spec(**OUTSIDE)

    assert len(problems(run, "team-a", parse_grants(GRANTS))) == 1
    assert problems(run, "team-a", parse_grants(GRANTS), index.known("team-a")) == []
    assert len(problems(run, "team-a", parse_grants(GRANTS), index.known("team-b"))) == 1


def test_tenancy_enabled_without_helm_grants_takes_every_grant_from_sources() -> None:
    grants = settings_from_env({"DATAOPS_TENANCY_ENABLED": "true"}).grants
    everything = Grant(
        datasets=("team_a_*", "shared_ref"), buckets=("landing-team-a",), paths=("/data/team-a",)
    )

    assert grants.enabled is True
    assert len(problems(spec(), "team-a", grants)) == 5
    assert problems(spec(), "team-a", grants, everything) == []


def test_with_source_grants_off_only_the_helm_value_counts_and_is_named() -> None:
    grants = settings_from_env(
        {"DATAOPS_GRANTS": json.dumps(GRANTS), "DATAOPS_SOURCE_GRANTS": "false"}
    ).grants
    found = problems(spec(**OUTSIDE), "team-a", grants, Grant(datasets=("finance_*",)))

    assert found == [
        "spec.load.table: namespace team-a is not granted dataset 'finance_raw'"
        " (grant it in the Helm value tenancy.grants.team-a.datasets)"
    ]


def test_a_deleted_invalid_or_vanishing_source_grants_nothing() -> None:
    index = SourceGrants()
    index.observe(source("a", {"datasets": ["a_*"]}))
    index.observe(source("b", {"datasets": ["b_*"]}))
    index.observe(source("c", {"datasets": ["c_*"]}))
    index.observe(source("a", {"datasets": ["a_*"]}), "DELETED")
    index.observe(source("b", {"datasets": ["b_*"]}, deletionTimestamp="2026-01-01T00:00:00Z"))
    index.observe({**source("c", {"datasets": ["c_*"]}), "spec": {"grants": {"datasets": ["c_*"]}}})

    assert index.known("team-a") == Grant()


async def test_the_index_lists_a_namespace_once_then_again_only_when_asked_fresh() -> None:
    listings: list[str] = []
    stored = [source("finance", {"datasets": ["finance_*"], "buckets": ["fin-*"]})]

    async def lister(namespace: str) -> list[dict[str, Any]]:
        listings.append(namespace)
        return [s for s in stored if s["metadata"]["namespace"] == namespace]

    index = SourceGrants()
    first = await index.of("team-a", lister)
    stored.append(source("late", {"projects": ["fin-prod"]}))
    cached = await index.of("team-a", lister)
    fresh = await index.of("team-a", lister, fresh=True)

    assert first == cached == Grant(datasets=("finance_*",), buckets=("fin-*",))
    assert fresh.projects == ("fin-prod",)
    assert listings == ["team-a", "team-a"]


def test_malformed_tenancy_switches_name_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"DATAOPS_TENANCY_ENABLED='yes'"):
        settings_from_env({"DATAOPS_TENANCY_ENABLED": "yes"})
    with pytest.raises(SettingsError, match=r"DATAOPS_SOURCE_GRANTS"):
        settings_from_env({"DATAOPS_SOURCE_GRANTS": "0"})
