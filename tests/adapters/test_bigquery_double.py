"""The BigQuery double answers as BigQuery does: resources, query results, scripts, and errors in BigQuery's
shape (HTTP status, ``reason``, ``status``), to the real client and on the wire."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from tests.doubles.bigquery_api import BigQueryDouble

pytestmark = pytest.mark.integration


def post(double: BigQueryDouble, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{double.endpoint}/bigquery/v2{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(double: BigQueryDouble, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{double.endpoint}/bigquery/v2{path}", timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def query_job(job_id: str, sql: str) -> dict[str, Any]:
    return {
        "jobReference": {"jobId": job_id},
        "configuration": {"query": {"query": sql, "useLegacySql": False}},
    }


def test_duplicate_job_id_is_409_duplicate_in_bigquerys_shape(bigquery_double: BigQueryDouble) -> None:
    post(bigquery_double, "/projects/dataops-test/jobs", query_job("j1", "SELECT 1"))

    status, body = post(bigquery_double, "/projects/dataops-test/jobs", query_job("j1", "SELECT 1"))

    assert status == 409
    assert body == {
        "error": {
            "code": 409,
            "message": "Already Exists: Job dataops-test:US.j1",
            "errors": [
                {
                    "reason": "duplicate",
                    "message": "Already Exists: Job dataops-test:US.j1",
                    "domain": "global",
                }
            ],
            "status": "ALREADY_EXISTS",
        }
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/projects/dataops-test/datasets/nope", "Not found: Dataset dataops-test:nope"),
        ("/projects/dataops-test/jobs/nope", "Not found: Job dataops-test:US.nope"),
    ],
)
def test_missing_resources_are_404_not_found(
    bigquery_double: BigQueryDouble, path: str, message: str
) -> None:
    status, body = get(bigquery_double, path)

    assert (status, body["error"]["errors"][0]["reason"], body["error"]["status"]) == (
        404,
        "notFound",
        "NOT_FOUND",
    )
    assert body["error"]["message"] == message


def test_query_on_a_missing_table_fails_the_job_not_found(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    client.create_dataset("d")

    with pytest.raises(gexc.NotFound, match=r"Not found: Table dataops-test:d\.missing"):
        client.query("SELECT * FROM d.missing").result()


def test_bad_sql_is_400_invalid_query(bigquery_double: BigQueryDouble) -> None:
    status, body = post(bigquery_double, "/projects/dataops-test/jobs", query_job("j2", "SELEC 1"))

    assert status == 200  # the job is created, and fails
    assert body["status"]["errorResult"]["reason"] == "invalidQuery"
    with pytest.raises(gexc.BadRequest):
        bigquery_double.client().get_job("j2").result()


def test_quota_and_rate_limits_are_403_with_their_reason(bigquery_double: BigQueryDouble) -> None:
    bigquery_double.faults.quota("quotaExceeded")

    status, body = post(bigquery_double, "/projects/dataops-test/jobs", query_job("j3", "SELECT 1"))

    assert status == 403
    assert body["error"]["errors"][0]["reason"] == "quotaExceeded"
    assert body["error"]["message"].startswith("Quota exceeded:")
    assert get(bigquery_double, "/projects/dataops-test/jobs/j3")[0] == 404  # no job was created


def test_denied_permission_is_403_access_denied_naming_it(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    client.create_dataset("d")
    client.query("CREATE TABLE d.t (x INT64)").result()
    bigquery_double.faults.deny("d.t", "bigquery.tables.get")

    with pytest.raises(gexc.Forbidden) as caught:
        client.get_table("d.t")

    assert caught.value.errors[0]["reason"] == "accessDenied"
    assert "Permission bigquery.tables.get denied on table dataops-test:d.t" in caught.value.message


def test_named_parameters_types_and_pages_of_results(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("n", "INT64", 5),
            bigquery.ScalarQueryParameter("tag", "STRING", "x"),
        ]
    )

    job = client.query(
        "SELECT i, @tag AS tag, i * 1.5 AS f, DATE '2026-03-02' AS d, i > 2 AS big "
        "FROM UNNEST(GENERATE_ARRAY(1, @n)) AS i ORDER BY i",
        job_config=config,
    )
    rows = [tuple(r.values()) for r in job.result(page_size=2)]

    assert len(rows) == 5
    assert rows[0][:3] == (1, "x", 1.5) and rows[4][4] is True
    assert str(rows[0][3]) == "2026-03-02"
    assert [f.field_type for f in job.result().schema] == ["INTEGER", "STRING", "FLOAT", "DATE", "BOOLEAN"]


def test_script_rolls_back_what_its_transaction_did(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    client.create_dataset("d")
    client.query("CREATE TABLE d.t (x INT64); INSERT INTO d.t (x) VALUES (1)").result()

    client.query(
        "BEGIN TRANSACTION; INSERT INTO d.t (x) VALUES (2); DELETE FROM d.t WHERE x = 1; ROLLBACK TRANSACTION;"
    ).result()
    with pytest.raises(gexc.BadRequest, match="boom"):
        client.query(
            "BEGIN\n BEGIN TRANSACTION; INSERT INTO d.t (x) VALUES (3);\n"
            " IF (SELECT COUNT(*) FROM d.t) > 1 THEN RAISE USING MESSAGE = 'boom'; END IF;\n"
            " COMMIT TRANSACTION;\nEXCEPTION WHEN ERROR THEN\n ROLLBACK TRANSACTION;\n"
            " RAISE USING MESSAGE = @@error.message;\nEND;"
        ).result()

    assert bigquery_double.engine.sql("SELECT x FROM d.t") == [(1,)]


def test_dml_counts_affected_rows_and_bills_at_least_ten_mib(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    client.create_dataset("d")
    client.query("CREATE TABLE d.t AS SELECT 1 AS x UNION ALL SELECT 2").result()

    job = client.query("UPDATE d.t SET x = x + 10 WHERE TRUE")
    job.result()

    assert job.num_dml_affected_rows == 2
    assert job.total_bytes_processed == 16
    assert job.total_bytes_billed == 10 * 1024 * 1024
    assert job.statement_type == "UPDATE"


def test_table_rows_are_listed_to_arrow(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    client.create_dataset("d")
    client.query(
        "CREATE TABLE d.t AS SELECT 'a' AS s, TIMESTAMP '2026-03-02 09:00:00+00' AS ts, CAST(1.25 AS NUMERIC) AS n"
    ).result()

    table = client.list_rows("d.t").to_arrow(create_bqstorage_client=False)

    assert table.to_pylist()[0]["s"] == "a"
    assert table.to_pylist()[0]["ts"].isoformat() == "2026-03-02T09:00:00+00:00"
    assert str(table.to_pylist()[0]["n"]) == "1.250000000"


def test_streamed_rows_block_a_merge_on_their_table(bigquery_double: BigQueryDouble) -> None:
    client = bigquery_double.client()
    client.create_dataset("d")
    client.query("CREATE TABLE d.target (k INT64, v STRING)").result()
    assert client.insert_rows_json("d.target", [{"k": 1, "v": "streamed"}]) == []

    merge = client.query(
        "MERGE d.target AS T USING (SELECT 1 AS k, 'new' AS v) AS S ON T.k = S.k"
        " WHEN MATCHED THEN UPDATE SET v = S.v WHEN NOT MATCHED THEN INSERT (k, v) VALUES (S.k, S.v)"
    )

    with pytest.raises(gexc.BadRequest, match="would affect rows in the streaming buffer"):
        merge.result()
    assert client.get_table("d.target").streaming_buffer.estimated_rows == 1
