"""The stage flex template: its declared parameters, the controller's launch and the entry file agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from beam.stages.flex import PARAMETERS, RUN_ENV, stage_command
from controller.dataflow_stage import template_parameters
from controller.manifests import RUN_ENV as CONTROLLER_RUN_ENV
from controller.settings import Settings
from controller.stages import DATAFLOW_STAGES

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
