"""The chart's ``warehouse`` values reach stage pods as the variables the stages read to pick their warehouse."""

from __future__ import annotations

import pytest

from beam.adapters import WarehouseConfig, warehouse_config
from controller.settings import settings_from_env
from tests.deploy.helm_chart import render

pytestmark = pytest.mark.unit


def test_warehouse_values_select_bigquery_for_stage_pods() -> None:
    rendered = render(
        sets=(
            "warehouse.type=bigquery",
            "warehouse.bigquery.project=p-data",
            "warehouse.bigquery.location=EU",
        )
    )

    stage_env = settings_from_env(rendered.controller_env).extra_env

    assert warehouse_config(stage_env) == WarehouseConfig("bigquery", "p-data", "EU")


def test_bigquery_project_defaults_to_the_gcp_project() -> None:
    rendered = render(sets=("warehouse.type=bigquery", "gcp.projectId=p-env"))

    assert warehouse_config(settings_from_env(rendered.controller_env).extra_env).project == "p-env"


def test_default_chart_leaves_stages_on_their_default_warehouse() -> None:
    stage_env = settings_from_env(render().controller_env).extra_env

    assert warehouse_config(stage_env) == WarehouseConfig()


@pytest.mark.parametrize("environment", ["dev", "staging", "prod"])
def test_every_gcp_environment_writes_to_bigquery_in_its_region(environment: str) -> None:
    stage_env = settings_from_env(render(environment).controller_env).extra_env

    config = warehouse_config(stage_env)

    assert (config.kind, config.project, config.location) == (
        "bigquery",
        "my-dataops-project",
        "europe-west1",
    )
