"""The BigQuery warehouse with the real google-cloud-bigquery client against the BigQuery double:
load jobs with deterministic ids, re-attached on 409, retried under a new id, clear errors, bytes billed."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from google.cloud import bigquery

from beam.warehouse import LineageRecord, WarehouseError, open_warehouse
from beam.warehouse.bigquery_warehouse import (
    BigQueryPermissionError,
    BigQueryWarehouse,
    MissingDatasetError,
    job_id_base,
)
from controller.spec import Partition
from tests.doubles.bigquery_api import BigQueryDouble
from tests.emulators import GcsServer

pytestmark = pytest.mark.integration

ROWS = pa.table(
    {
        "resource_id": ["r1", "r2", "r3"],
        "resource_group": ["web", "db", "web"],
        "monthly_cost": pa.array([10.5, 200.0, 33.25]),
        "created_date": pa.array([19000, 19031, 19062], pa.date32()),
    }
)


def lineage(stage: str = "load", run: str = "inv-1", generation: int = 1) -> LineageRecord:
    return LineageRecord(
        table="inv_raw.resources",
        run=run,
        namespace="team-a",
        stage=stage,
        source_uri="gs://landing/in/inventory.csv",
        generation=generation,
        rows=0,
        written_at="2026-03-02T09:00:00+00:00",
    )


def warehouse(double: BigQueryDouble, sleeps: list[float] | None = None) -> BigQueryWarehouse:
    return BigQueryWarehouse(double.client(), sleep=(sleeps if sleeps is not None else []).append)


def with_dataset(double: BigQueryDouble, *names: str) -> BigQueryDouble:
    for name in names:
        double.client().create_dataset(name)
    return double


def test_replace_loads_by_a_load_job_with_schema_partitioning_clustering_and_labels(
    bigquery_double: BigQueryDouble,
) -> None:
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"))

    rows = wh.replace_table(
        "inv_raw.resources",
        ROWS,
        lineage(),
        partition_by=Partition(column="created_date", granularity="MONTH"),
        cluster_by=["resource_group"],
        declared={"monthly_cost": "NUMERIC"},
    )

    table = bigquery_double.client().get_table("inv_raw.resources")
    assert rows == 3 and table.num_rows == 3
    assert [(f.name, f.field_type) for f in table.schema] == [
        ("resource_id", "STRING"),
        ("resource_group", "STRING"),
        ("monthly_cost", "NUMERIC"),
        ("created_date", "DATE"),
    ]
    assert (table.time_partitioning.type_, table.time_partitioning.field) == ("MONTH", "created_date")
    assert table.clustering_fields == ["resource_group"]
    [job] = bigquery_double.job_list("LOAD")
    assert job["configuration"]["labels"] == {
        "run": "inv-1",
        "stage": "load",
        "namespace": "team-a",
        "source": "inventory_csv",
    }
    assert job["configuration"]["load"]["writeDisposition"] == "WRITE_TRUNCATE"
    assert not [r for r in bigquery_double.requests if r[1].endswith("/insertAll")]
    assert wh.lineage("inv_raw.resources") == replace(lineage(), rows=3)


def test_load_from_gcs_reads_the_object_through_the_gcs_api(
    bigquery_double: BigQueryDouble, gcs_server: GcsServer
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(
        project=gcs_server.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    bucket = gcs.create_bucket(f"landing-{uuid.uuid4().hex[:8]}")
    bucket.blob("in/items.csv").upload_from_string("id,name,day\n1,a,2026-03-01\n2,b,2026-03-02\n")
    client = with_dataset(bigquery_double, "inv_raw").client()
    config = bigquery.LoadJobConfig(
        source_format="CSV",
        skip_leading_rows=1,
        schema=[
            bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
            bigquery.SchemaField("name", "STRING"),
            bigquery.SchemaField("day", "DATE"),
        ],
        time_partitioning=bigquery.TimePartitioning(type_="DAY", field="day"),
        clustering_fields=["name"],
    )

    job = client.load_table_from_uri(f"gs://{bucket.name}/in/*.csv", "inv_raw.items", job_config=config)
    job.result()

    table = client.get_table("inv_raw.items")
    assert (job.output_rows, table.num_rows) == (2, 2)
    assert (table.schema[0].name, table.schema[0].field_type, table.schema[0].mode) == (
        "id",
        "INTEGER",
        "REQUIRED",
    )
    assert table.time_partitioning.field == "day" and table.clustering_fields == ["name"]
    assert [
        tuple(r.values()) for r in client.query("SELECT id, name FROM inv_raw.items ORDER BY id").result()
    ] == [
        (1, "a"),
        (2, "b"),
    ]


def test_replace_from_gcs_loads_the_objects_with_the_specs_schema(
    bigquery_double: BigQueryDouble, gcs_server: GcsServer
) -> None:
    import io

    import pyarrow.parquet as pq
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = storage.Client(
        project=gcs_server.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    bucket = gcs.create_bucket(f"staging-{uuid.uuid4().hex[:8]}")
    for n in range(2):
        part = io.BytesIO()
        pq.write_table(ROWS.slice(n, 1), part)
        bucket.blob(f"runs/inv-1/part-{n}.parquet").upload_from_string(part.getvalue())
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"))
    declared = {
        "resource_id": "STRING",
        "resource_group": "STRING",
        "monthly_cost": "NUMERIC",
        "created_date": "DATE",
    }

    rows = wh.replace_table(
        "inv_raw.resources", f"gs://{bucket.name}/runs/inv-1/part-*.parquet", lineage(), declared=declared
    )

    table = bigquery_double.client().get_table("inv_raw.resources")
    assert rows == 2 and table.num_rows == 2
    assert [f.field_type for f in table.schema] == ["STRING", "STRING", "NUMERIC", "DATE"]
    [job] = bigquery_double.job_list("LOAD")
    assert job["configuration"]["load"]["sourceUris"] == [f"gs://{bucket.name}/runs/inv-1/part-*.parquet"]


def test_append_run_again_reattaches_by_job_id_and_loads_nothing_twice(
    bigquery_double: BigQueryDouble,
) -> None:
    with_dataset(bigquery_double, "inv_raw")
    warehouse(bigquery_double).append_table("inv_raw.resources", ROWS, lineage())

    again = warehouse(bigquery_double)  # the stage's next attempt: a new process, the same ids
    added = again.append_table("inv_raw.resources", ROWS, lineage())

    assert added == 3
    assert again.row_count("inv_raw.resources") == 3
    assert len(bigquery_double.job_list("LOAD")) == 1
    assert again.job_ids == [job_id_base(lineage(), "append", "inv_raw.resources") + "-0"]


def test_load_whose_insert_answer_was_lost_is_reattached_not_run_twice(
    bigquery_double: BigQueryDouble,
) -> None:
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"))
    bigquery_double.faults.lose_insert_responses(1)

    wh.append_table("inv_raw.resources", ROWS, lineage())

    assert wh.row_count("inv_raw.resources") == 3
    assert [j["jobReference"]["jobId"] for j in bigquery_double.job_list("LOAD")] == wh.job_ids
    assert wh.job_ids[0].endswith("-0")


def test_failed_job_is_retried_with_backoff_under_the_next_id(bigquery_double: BigQueryDouble) -> None:
    sleeps: list[float] = []
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"), sleeps)
    bigquery_double.faults.fail_jobs(
        "inv_raw.resources", "backendError", "Backend error. Please try again.", 2
    )

    wh.append_table("inv_raw.resources", ROWS, lineage())

    ids = [j["jobReference"]["jobId"] for j in bigquery_double.job_list("LOAD")]
    base = job_id_base(lineage(), "append", "inv_raw.resources")
    assert ids == [f"{base}-0", f"{base}-1", f"{base}-2"]
    assert [j["status"].get("errorResult", {}).get("reason") for j in bigquery_double.job_list("LOAD")] == [
        "backendError",
        "backendError",
        None,
    ]
    assert sleeps == [2.0, 4.0]
    assert wh.row_count("inv_raw.resources") == 3


def test_quota_refusal_is_retried_with_exponential_backoff(bigquery_double: BigQueryDouble) -> None:
    sleeps: list[float] = []
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"), sleeps)
    bigquery_double.faults.quota("quotaExceeded", times=3)

    wh.replace_table("inv_raw.resources", ROWS, lineage())

    assert sleeps == [2.0, 4.0, 8.0]
    assert wh.row_count("inv_raw.resources") == 3


def test_denied_permission_names_the_role_and_the_resource(bigquery_double: BigQueryDouble) -> None:
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"))
    bigquery_double.faults.deny("inv_raw.resources", "bigquery.tables.updateData")

    with pytest.raises(BigQueryPermissionError) as caught:
        wh.replace_table("inv_raw.resources", ROWS, lineage())

    message = str(caught.value)
    assert "roles/bigquery.dataEditor" in message
    assert "bigquery.tables.updateData" in message
    assert "dataops-test:inv_raw.resources" in message


def test_missing_job_permission_names_the_job_user_role(bigquery_double: BigQueryDouble) -> None:
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"))
    bigquery_double.faults.deny("project", "bigquery.jobs.create")

    with pytest.raises(BigQueryPermissionError, match=r"roles/bigquery\.jobUser on project dataops-test"):
        wh.replace_table("inv_raw.resources", ROWS, lineage())


def test_missing_dataset_is_named_with_how_to_create_it(bigquery_double: BigQueryDouble) -> None:
    wh = warehouse(bigquery_double)

    with pytest.raises(MissingDatasetError) as caught:
        wh.replace_table("inv_raw.resources", ROWS, lineage())

    assert "dataset dataops-test:inv_raw does not exist" in str(caught.value)
    assert "bq mk --dataset dataops-test:inv_raw" in str(caught.value)


def test_run_rows_are_swapped_in_one_transaction_and_queries_are_billed(
    bigquery_double: BigQueryDouble,
) -> None:
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"))
    rejects = pa.table({"row": [1, 2], "run": ["inv-1", "inv-1"]})
    other = pa.table({"row": [9], "run": ["inv-0"]})
    warehouse(bigquery_double).replace_run_rows("inv_raw.rejects", other, lineage(run="inv-0"))

    wh.replace_run_rows("inv_raw.rejects", rejects, lineage(stage="validate"))
    wh.replace_run_rows("inv_raw.rejects", rejects, lineage(stage="validate", generation=2))

    assert bigquery_double.engine.sql(
        "SELECT run, count(*) FROM inv_raw.rejects GROUP BY run ORDER BY run"
    ) == [
        ("inv-0", 1),
        ("inv-1", 2),
    ]
    assert wh.bytes_billed == 2 * 10 * 1024 * 1024  # two swap scripts, each billed BigQuery's 10 MiB minimum
    assert not bigquery_double.engine.table_exists("inv_raw", "_dataops_staging_inv_1_rejects")


def test_configuration_selects_bigquery_from_the_environment(
    bigquery_double: BigQueryDouble, tmp_path: Path
) -> None:
    env = {
        "DATAOPS_WAREHOUSE": "bigquery",
        "DATAOPS_BIGQUERY_PROJECT": bigquery_double.project,
        "DATAOPS_BIGQUERY_ENDPOINT": bigquery_double.endpoint,
    }
    with_dataset(bigquery_double, "inv_raw")

    wh = open_warehouse(tmp_path, env)
    wh.replace_table("inv_raw.resources", ROWS, lineage())

    assert isinstance(wh, BigQueryWarehouse)
    assert bigquery_double.engine.sql("SELECT count(*) FROM inv_raw.resources") == [(3,)]
    assert not (tmp_path / "warehouse.duckdb").exists()
    with pytest.raises(WarehouseError, match="DATAOPS_BIGQUERY_PROJECT"):
        open_warehouse(tmp_path, {"DATAOPS_WAREHOUSE": "bigquery"})


def test_quota_that_does_not_pass_leaves_the_stage_retryable(bigquery_double: BigQueryDouble) -> None:
    sleeps: list[float] = []
    wh = warehouse(with_dataset(bigquery_double, "inv_raw"), sleeps)
    bigquery_double.faults.quota("quotaExceeded", times=wh.attempts)

    with pytest.raises(WarehouseError) as caught:
        wh.replace_table("inv_raw.resources", ROWS, lineage())

    assert caught.value.retryable
    assert "Quota exceeded" in str(caught.value)
    assert len(sleeps) == wh.attempts - 1
