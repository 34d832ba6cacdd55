"""The stage flex template: its declared parameters, the controller's launch and the entry file agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from beam.stages.flex import PARAMETERS, RUN_ENV, stage_command
from controller.cli import app
from controller.dataflow_stage import template_parameters
from controller.manifests import RUN_ENV as CONTROLLER_RUN_ENV
from controller.settings import Settings
from controller.stages import DATAFLOW_STAGES
from tests.doubles.stage_runs import SPEC

pytestmark = pytest.mark.unit

METADATA = Path(__file__).resolve().parents[2] / "images" / "dataflow-template" / "stage-metadata.json"
RUN = {
    "metadata": {"name": "items", "namespace": "shop", "generation": 2, "uid": "u"},
    "spec": {"runner": "dataflow"},
}


def declared() -> dict[str, dict[str, object]]:
    return {p["name"]: p for p in json.loads(METADATA.read_text(encoding="utf-8"))["parameters"]}


@pytest.mark.parametrize("stage", sorted(DATAFLOW_STAGES))
def test_the_controller_sends_exactly_the_declared_parameters_and_each_matches_its_regex(stage: str) -> None:
    sent = template_parameters(RUN, stage, "2026-02-03T04:05:06+00:00", Settings(workdir="gs://b/work"))

    assert set(sent) == set(declared()) == set(PARAMETERS)
    for name, value in sent.items():
        for regex in declared()[name].get("regexes", []):  # type: ignore[union-attr]
            assert re.fullmatch(str(regex), value), (name, value)


def test_the_entry_file_runs_the_stage_command_with_the_run_in_its_variable() -> None:
    sent = template_parameters(RUN, "transform", "2026-02-03T04:05:06+00:00", Settings(workdir="/work"))

    argv, env = stage_command(sent)

    assert argv == [
        "transform",
        "--spec",
        f"env:{RUN_ENV}",
        "--workdir",
        "/work",
        "--started-at",
        sent["started_at"],
    ]
    assert RUN_ENV == CONTROLLER_RUN_ENV
    assert json.loads(env[RUN_ENV])["metadata"] == {"name": "items", "namespace": "shop", "generation": 2}


def test_a_launch_without_its_required_parameters_is_refused_naming_them() -> None:
    with pytest.raises(ValueError, match="run, workdir"):
        stage_command({"stage": "transform"})


def test_render_prints_the_launch_request_of_stages_that_run_on_dataflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tmp_path / "shop.yaml"
    doc = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "shop"},
        "spec": SPEC,
    }
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    monkeypatch.setenv("DATAOPS_DATAFLOW_PROJECT", "my-project")
    monkeypatch.setenv("DATAOPS_DATAFLOW_REGION", "europe-west1")
    monkeypatch.setenv("DATAOPS_DATAFLOW_TEMPLATE", "gs://b/templates/stage.json")

    out = CliRunner().invoke(app, ["render", str(spec)])

    assert out.exit_code == 0, out.output
    docs = list(yaml.safe_load_all(out.stdout))
    assert [d.get("kind") for d in docs] == ["Job", "Job", None, None]
    launch = docs[2]["dataflowLaunch"]
    assert launch["url"] == (
        "https://dataflow.googleapis.com/v1b3/projects/my-project/locations/europe-west1/flexTemplates:launch"
    )
    assert launch["body"]["launchParameter"]["jobName"] == "default-shop-transform-1"
    assert launch["body"]["launchParameter"]["parameters"]["stage"] == "transform"
    assert docs[3]["dataflowLaunch"]["body"]["launchParameter"]["jobName"] == "default-shop-aggregate-1"
