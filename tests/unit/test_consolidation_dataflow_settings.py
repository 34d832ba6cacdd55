"""How a ``runner: dataflow`` consolidation reaches Dataflow: the controller's settings handed to the
CronJob's pod, read back there by the same parser, with the consolidation template in place of the
stage one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from beam.consolidation.dataflow import (
    DataflowCycleError,
    DataflowRun,
    launch_parameters,
    run_job,
    window_key,
)
from beam.consolidation.flex import PARAMETERS, REQUIRED, SOURCE_ENV, pipeline_command
from beam.consolidation.plan import Position
from controller.manifests import build_consolidation_cronjob
from controller.settings import DataflowSettings, Settings, consolidation_dataflow_env, dataflow_settings

pytestmark = pytest.mark.unit

METADATA = (
    Path(__file__).resolve().parents[2] / "images" / "dataflow-template" / "consolidation-metadata.json"
)

DATAFLOW = DataflowSettings(
    project="p",
    region="europe-west1",
    template="gs://b/templates/stage.json",
    consolidation_template="gs://b/templates/consolidation.json",
    service_account="workers@p.iam.gserviceaccount.com",
    network="dataops",
    subnetwork="regions/europe-west1/subnetworks/nodes",
    temp_location="gs://b/tmp",
    staging_location="gs://b/staging",
    labels={"team": "data"},
    max_workers=4,
)


def source(runner: str | None) -> dict[str, Any]:
    consolidation: dict[str, Any] = {
        "schedule": "*/20 * * * *",
        "source": {"table": "ops.operations", "id": "op_id", "cursor": "updated_at"},
        "target": {"table": "cons.operations", "key": ["op_id"]},
    }
    if runner:
        consolidation["runner"] = runner
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "IngestionSource",
        "metadata": {"name": "tx", "namespace": "team-a", "uid": "u1"},
        "spec": {"consolidation": consolidation},
    }


def pod_env(cronjob: dict[str, Any]) -> dict[str, str]:
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_pod_reads_back_the_controllers_settings_with_the_consolidation_template() -> None:
    env = consolidation_dataflow_env(Settings(dataflow=DATAFLOW, dataflow_poll_seconds=15))

    assert dataflow_settings(env) == replace(
        DATAFLOW, template=DATAFLOW.consolidation_template, consolidation_template=""
    )
    assert env["DATAOPS_DATAFLOW_POLL_SECONDS"] == "15"


def test_a_dataflow_consolidation_cronjob_carries_the_dataflow_settings() -> None:
    settings = Settings(dataflow=DATAFLOW, extra_env={"DATAOPS_DATAFLOW_NETWORK": "from-worker-env"})

    env = pod_env(build_consolidation_cronjob(source("dataflow"), settings))

    assert env["DATAOPS_DATAFLOW_TEMPLATE"] == "gs://b/templates/consolidation.json"
    assert env["DATAOPS_DATAFLOW_SERVICE_ACCOUNT"] == "workers@p.iam.gserviceaccount.com"
    assert env["DATAOPS_DATAFLOW_NETWORK"] == "from-worker-env"  # worker.env wins
    assert list(env).count("DATAOPS_DATAFLOW_NETWORK") == 1


@pytest.mark.parametrize("runner", [None, "direct"])
def test_a_consolidation_in_its_pod_gets_no_dataflow_settings(runner: str | None) -> None:
    env = pod_env(build_consolidation_cronjob(source(runner), Settings(dataflow=DATAFLOW)))

    assert not [name for name in env if name.startswith("DATAOPS_DATAFLOW_")]


def test_the_window_key_changes_with_what_the_cycle_merges_only() -> None:
    before = {"source:ops.operations": None}
    upto = {"source:ops.operations": {"cursor": "2026-03-02 08:00:01", "key": ["4"]}}

    key = window_key(before, upto, ["1", "2", "3", "4"])

    assert window_key(before, upto, ["4", "3", "2", "1"]) == key
    assert window_key(before, upto, ["1", "2", "3"]) != key
    assert window_key(upto, upto, ["1", "2", "3", "4"]) != key


def test_a_pod_without_dataflow_settings_is_told_which_to_set() -> None:
    with pytest.raises(DataflowCycleError) as refused:
        run_job(DataflowRun(DataflowSettings()), "team-a/tx", "c1", "w", {}, timeout_seconds=60)

    assert refused.value.reason == "DataflowNotConfigured"
    assert refused.value.bad_input
    assert "DATAOPS_DATAFLOW_PROJECT, DATAOPS_DATAFLOW_REGION, DATAOPS_DATAFLOW_TEMPLATE" in str(
        refused.value
    )


def test_the_cycle_sends_the_declared_template_parameters_and_the_entry_file_reads_them(
    tmp_path: Path,
) -> None:
    declared = json.loads(METADATA.read_text(encoding="utf-8"))["parameters"]
    upto = Position("2026-03-02 08:00:01", ("4",))

    sent = launch_parameters("{}", tmp_path, tmp_path / "ids.txt", tmp_path, upto, 8)
    argv, env = pipeline_command(sent)

    assert set(sent) == {p["name"] for p in declared} == set(PARAMETERS)
    assert {p["name"] for p in declared if not p["isOptional"]} == set(REQUIRED)
    assert argv[argv.index("--upto-cursor") + 1 :] == [
        "2026-03-02 08:00:01",
        "--upto-id",
        "4",
        "--buckets",
        "8",
    ]
    assert env == {SOURCE_ENV: "{}"}
