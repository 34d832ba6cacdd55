"""Which warehouse a stage writes to, and the BigQuery adapter's pure rules: job ids, labels, user errors."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc

from beam.adapters import WarehouseConfig, warehouse_config
from beam.warehouse import LineageRecord, WarehouseError
from beam.warehouse.bigquery_warehouse import explain, job_id_base, job_labels, retryable
from controller.spec import Warehouse

pytestmark = pytest.mark.unit

LINEAGE = LineageRecord(
    table="raw.items",
    run="Shop.Run/1",
    namespace="team-a",
    stage="load",
    source_uri="gs://landing/in/Items 2026.csv",
    generation=3,
    rows=0,
    written_at="2026-03-02T09:00:00+00:00",
)


def test_embedded_duckdb_is_the_default() -> None:
    assert warehouse_config({}) == WarehouseConfig()


def test_bigquery_takes_project_location_and_endpoint_from_the_environment() -> None:
    env = {
        "DATAOPS_WAREHOUSE": "BigQuery",
        "DATAOPS_BIGQUERY_PROJECT": "p",
        "DATAOPS_BIGQUERY_LOCATION": "EU",
        "DATAOPS_BIGQUERY_ENDPOINT": "http://127.0.0.1:9050",
    }

    assert warehouse_config(env) == WarehouseConfig("bigquery", "p", "EU", "http://127.0.0.1:9050")


def test_a_runs_spec_wins_over_the_environment_field_by_field() -> None:
    env = {
        "DATAOPS_WAREHOUSE": "duckdb",
        "DATAOPS_BIGQUERY_PROJECT": "p-env",
        "DATAOPS_BIGQUERY_LOCATION": "EU",
    }

    chosen = warehouse_config(env, Warehouse(type="bigquery", location="US"))

    assert chosen == WarehouseConfig("bigquery", "p-env", "US")
    assert (
        warehouse_config(
            {"DATAOPS_WAREHOUSE": "bigquery", "DATAOPS_BIGQUERY_PROJECT": "p"}, Warehouse(type="duckdb")
        )
        == WarehouseConfig()
    )


def test_bigquery_project_falls_back_to_google_cloud_project() -> None:
    env = {"DATAOPS_WAREHOUSE": "bigquery", "GOOGLE_CLOUD_PROJECT": "from-gcp"}

    assert warehouse_config(env).project == "from-gcp"


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"DATAOPS_WAREHOUSE": "snowflake"}, "choose one of duckdb, bigquery"),
        ({"DATAOPS_WAREHOUSE": "bigquery"}, "set DATAOPS_BIGQUERY_PROJECT"),
    ],
)
def test_a_wrong_choice_says_what_to_set(env: dict[str, str], complaint: str) -> None:
    with pytest.raises(WarehouseError, match=complaint):
        warehouse_config(env)


def test_job_ids_are_the_same_for_every_attempt_of_a_run_and_differ_between_runs() -> None:
    again = job_id_base(LINEAGE, "append", "raw.items")
    recreated = job_id_base(
        LineageRecord(**{**LINEAGE.__dict__, "written_at": "2026-03-03T09:00:00+00:00"}),
        "append",
        "raw.items",
    )

    assert job_id_base(LINEAGE, "append", "raw.items") == again
    assert again.startswith("dataops-team-a-Shop_Run_1-load-append-raw-items-g3-")
    assert recreated != again


def test_labels_follow_bigquerys_label_rule() -> None:
    assert job_labels(LINEAGE) == {
        "run": "shop_run_1",
        "stage": "load",
        "namespace": "team-a",
        "source": "items_2026_csv",
    }


def test_serialization_conflicts_quota_and_backend_errors_are_retryable() -> None:
    assert retryable(gexc.BadRequest("Could not serialize access to table p:d.t due to concurrent update"))
    assert retryable(gexc.Forbidden("Quota exceeded", errors=[{"reason": "quotaExceeded"}]))
    assert retryable(gexc.InternalServerError("Backend error"))
    assert not retryable(gexc.BadRequest("Unrecognized name: fee", errors=[{"reason": "invalidQuery"}]))


def test_a_denied_table_permission_names_the_role_to_grant() -> None:
    denied = gexc.Forbidden(
        "Access Denied: Table p:raw.items: Permission bigquery.tables.getData denied on table p:raw.items"
        " (or it may not exist).",
        errors=[{"reason": "accessDenied"}],
    )

    message = str(explain(denied, "reading raw.items", "p", None))

    assert "grant roles/bigquery.dataViewer on table p:raw.items" in message
