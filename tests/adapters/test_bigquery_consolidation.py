"""The consolidation's MERGE script (beam/consolidation/bigquery.py) on the BigQuery double, with the real
client: MERGE and watermarks commit together or not at all; serialization conflicts are retried with
backoff under new ids; a lost insert answer is re-attached, never run twice."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from beam.consolidation import MergeRefused
from beam.consolidation.bigquery import job_config, merge_on_bigquery
from beam.consolidation.plan import Position
from beam.consolidation.sql import Sql, lock_take_sql, meta_ddl
from tests.consolidation.helpers import NOW, plan, transaction
from tests.doubles.bigquery_api import BigQueryDouble

pytestmark = pytest.mark.integration

STAGED = [
    {"op_id": 12, "tx_id": "T9", "amount": 40, "status": "ok", "updated_at": "2026-03-02T08:10:00", "fee": 2},
    {"op_id": 8, "tx_id": "T1", "amount": 5, "status": "ok", "updated_at": "2026-03-02T08:01:00", "fee": 1},
]
STAGING_SCHEMA = [
    bigquery.SchemaField("op_id", "INT64"),
    bigquery.SchemaField("tx_id", "STRING"),
    bigquery.SchemaField("amount", "INT64"),
    bigquery.SchemaField("status", "STRING"),
    bigquery.SchemaField("updated_at", "DATETIME"),
    bigquery.SchemaField("fee", "INT64"),
    bigquery.SchemaField("channel", "STRING"),
]
WATERMARK_ROW = (
    "INSERT INTO `_dataops`.`consolidation_watermarks` (source_name, stream, table_name, cursor_text, key_json,"
    " cycle_id, updated_at) VALUES ('tests/ops', 'source:ops.operations', 'ops.operations',"
    " '2026-03-02 08:00:00', '[\"7\"]', 'c-0', TIMESTAMP '2026-03-02 08:00:00+00')"
)


def run(client: bigquery.Client, sql: Sql) -> Any:
    return client.query(sql.text, job_config=job_config(sql.params)).result()


def world(double: BigQueryDouble, watermarks_ddl: str | None = None) -> bigquery.Client:
    """The cycle's state as the cycle leaves it before its merge: meta tables, the lock, the source's
    watermark at (08:00, 7), and the staged rows."""
    client = double.client()
    for sql in meta_ddl():
        run(client, sql)
    if watermarks_ddl:
        double.engine.sql("DROP TABLE _dataops.consolidation_watermarks")
        double.engine.sql(watermarks_ddl)
    run(client, lock_take_sql("consolidation:tests/ops", "c-1", "h", 1, NOW, NOW + timedelta(hours=1), None))
    client.query(WATERMARK_ROW).result()
    data = "\n".join(json.dumps(r) for r in STAGED).encode()
    config = bigquery.LoadJobConfig(source_format="NEWLINE_DELIMITED_JSON", schema=STAGING_SCHEMA)
    client.load_table_from_file(io.BytesIO(data), "_dataops.staging_tests_ops", job_config=config).result()
    return client


def watermarks(double: BigQueryDouble) -> list[tuple[Any, ...]]:
    return double.engine.sql(
        "SELECT stream, cursor_text, key_json FROM _dataops.consolidation_watermarks ORDER BY stream"
    )


def merged(double: BigQueryDouble) -> list[tuple[Any, ...]]:
    return double.engine.sql("SELECT op_id, amount, fee FROM cons.operations ORDER BY op_id")


def test_merge_and_watermarks_commit_in_one_transaction(bigquery_double: BigQueryDouble) -> None:
    client = world(bigquery_double)

    merge_on_bigquery(client, plan(), transaction(plan()))

    assert merged(bigquery_double) == [(8, 5, 1), (12, 40, 2)]
    assert watermarks(bigquery_double) == [
        ("join:ops.transactions", "2026-03-02 08:11:00", '["T9"]'),
        ("source:ops.operations", "2026-03-02 08:10:00", '["12"]'),
    ]
    assert bigquery_double.engine.sql("SELECT cycle_id, inserted FROM _dataops.consolidation_cycles") == [
        ("c-1", 2)
    ]
    [job] = [
        j for j in bigquery_double.job_list("QUERY") if j["jobReference"]["jobId"].startswith("dataops-")
    ]
    assert job["statistics"]["query"]["statementType"] == "SCRIPT"
    assert int(job["statistics"]["query"]["totalBytesBilled"]) >= 10 * 1024 * 1024


def test_failure_after_the_merge_rolls_the_merge_back_with_the_watermarks(
    bigquery_double: BigQueryDouble,
) -> None:
    strict = (
        "CREATE TABLE _dataops.consolidation_watermarks (source_name VARCHAR NOT NULL, stream VARCHAR NOT NULL,"
        " table_name VARCHAR, cursor_text VARCHAR, key_json VARCHAR, cycle_id VARCHAR, updated_at TIMESTAMPTZ,"
        " note VARCHAR DEFAULT 'x' CHECK (stream <> 'join:ops.transactions'))"
    )
    client = world(bigquery_double, watermarks_ddl=strict)  # the join stream's watermark cannot be written

    with pytest.raises(gexc.BadRequest, match="CHECK constraint"):
        merge_on_bigquery(client, plan(), transaction(plan()), sleep=lambda _: None)

    assert merged(bigquery_double) == []
    assert watermarks(bigquery_double) == [("source:ops.operations", "2026-03-02 08:00:00", '["7"]')]
    assert bigquery_double.engine.sql("SELECT count(*) FROM _dataops.consolidation_cycles") == [(0,)]


def test_moved_watermark_refuses_the_merge_and_changes_nothing(bigquery_double: BigQueryDouble) -> None:
    client = world(bigquery_double)
    tx = transaction(plan())
    moved = replace(
        tx, before={**tx.before, "source:ops.operations": Position("2026-03-02 07:00:00", ("1",))}
    )

    with pytest.raises(MergeRefused, match="another cycle moved the watermark"):
        merge_on_bigquery(client, plan(), moved)

    assert merged(bigquery_double) == []
    assert watermarks(bigquery_double) == [("source:ops.operations", "2026-03-02 08:00:00", '["7"]')]


def test_serialization_conflict_is_retried_with_backoff_under_new_ids(
    bigquery_double: BigQueryDouble,
) -> None:
    client = world(bigquery_double)
    bigquery_double.faults.serialization_conflict(r"MERGE `cons`", times=2)
    sleeps: list[float] = []

    merge_on_bigquery(client, plan(), transaction(plan()), sleep=sleeps.append)

    jobs = [j for j in bigquery_double.job_list("QUERY") if j["jobReference"]["jobId"].startswith("dataops-")]
    assert [j["jobReference"]["jobId"][-2:] for j in jobs] == ["-0", "-1", "-2"]
    assert (
        "Could not serialize access to table dataops-test:cons.operations due to concurrent update"
        in (jobs[0]["status"]["errorResult"]["message"])
    )
    assert jobs[0]["status"]["errorResult"]["reason"] == "invalidQuery"
    assert sleeps == [2.0, 4.0]
    assert merged(bigquery_double) == [(8, 5, 1), (12, 40, 2)]


def test_lost_insert_answer_is_reattached_by_job_id_not_run_twice(bigquery_double: BigQueryDouble) -> None:
    client = world(bigquery_double)
    bigquery_double.faults.lose_insert_responses(1)

    merge_on_bigquery(client, plan(), transaction(plan()))

    jobs = [j for j in bigquery_double.job_list("QUERY") if j["jobReference"]["jobId"].startswith("dataops-")]
    assert [j["jobReference"]["jobId"] for j in jobs] == ["dataops-consolidate-tests_ops-c_1-0"]
    assert bigquery_double.engine.sql("SELECT count(*) FROM _dataops.consolidation_cycles") == [(1,)]
    assert merged(bigquery_double) == [(8, 5, 1), (12, 40, 2)]
