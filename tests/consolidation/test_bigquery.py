"""The BigQuery job that runs a cycle's transaction: deterministic ids, re-attached on 409, retried on
serialization conflicts under a new id, never retried when a guard refused the merge."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from beam.consolidation import MergeRefused
from beam.consolidation.bigquery import job_id, merge_on_bigquery, query_parameters, run_script
from beam.consolidation.sql import Sql, Value
from tests.consolidation.helpers import plan, transaction

pytestmark = pytest.mark.unit

SERIALIZE = "Could not serialize access to table p:cons.operations due to concurrent update"


class FakeJob:
    def __init__(self, outcome: Exception | None) -> None:
        self.outcome = outcome

    def result(self) -> Any:
        if self.outcome is not None:
            raise self.outcome
        return "done"


class FakeBigQuery:
    """Jobs by id; ``inserts`` says what each ``query`` call does: create a job ending with an error or
    not, or (``"lost"``) create it and then lose the response (the client sees 409 on its retry)."""

    def __init__(self, inserts: list[Exception | str | None]) -> None:
        self.inserts = list(inserts)
        self.jobs: dict[str, FakeJob] = {}
        self.queries: list[str] = []
        self.attached: list[str] = []

    def query(self, query: str, *, job_id: str, job_config: Any, job_retry: Any = None) -> FakeJob:
        self.queries.append(job_id)
        outcome = self.inserts.pop(0)
        if outcome == "lost":
            self.jobs[job_id] = FakeJob(None)
            raise gexc.Conflict(f"Already Exists: Job p:US.{job_id}")
        self.jobs[job_id] = FakeJob(outcome if isinstance(outcome, Exception) else None)
        return self.jobs[job_id]

    def get_job(self, job_id: str) -> FakeJob:
        self.attached.append(job_id)
        return self.jobs[job_id]


def no_config(params: Mapping[str, Value]) -> Any:
    return params


def run(client: FakeBigQuery, sleeps: list[float]) -> Any:
    return run_script(client, Sql("SELECT 1"), lambda a: f"job-{a}", config=no_config, sleep=sleeps.append)


def test_job_whose_insert_response_was_lost_is_reattached_not_run_twice() -> None:
    client, sleeps = FakeBigQuery(["lost"]), list[float]()

    assert run(client, sleeps) == "done"
    assert (client.queries, client.attached, sleeps) == (["job-0"], ["job-0"], [])


def test_serialization_conflict_is_retried_with_backoff_under_a_new_job_id() -> None:
    client, sleeps = (
        FakeBigQuery([gexc.BadRequest(SERIALIZE), gexc.BadRequest(SERIALIZE), None]),
        list[float](),
    )

    assert run(client, sleeps) == "done"
    assert client.queries == ["job-0", "job-1", "job-2"]
    assert sleeps == [2.0, 4.0]


def test_failed_guard_is_a_refused_merge_not_retried() -> None:
    refused = gexc.BadRequest("dataops: the cycle stopped: another cycle moved the watermark")
    client, sleeps = FakeBigQuery([refused]), list[float]()

    with pytest.raises(MergeRefused, match="another cycle moved the watermark"):
        run(client, sleeps)
    assert client.queries == ["job-0"]


def test_error_that_will_not_pass_is_raised_at_once() -> None:
    client, sleeps = FakeBigQuery([gexc.BadRequest("Unrecognized name: fee")]), list[float]()

    with pytest.raises(gexc.BadRequest, match="Unrecognized name"):
        run(client, sleeps)
    assert sleeps == []


def test_merge_job_ids_are_deterministic_per_source_cycle_and_attempt() -> None:
    client = FakeBigQuery([None])

    merge_on_bigquery(client, plan(), transaction(plan()), config=no_config)

    assert client.queries == ["dataops-consolidate-tests_ops-c_1-0"]
    assert (
        job_id(plan(), "20260302T090000z-ab12", 3) == "dataops-consolidate-tests_ops-20260302T090000z_ab12-3"
    )


def test_parameters_get_bigquery_types() -> None:
    stamp = datetime(2026, 3, 2, tzinfo=UTC)

    assert query_parameters({"b": 3, "a": "x", "c": stamp}) == [
        ("a", "STRING", "x"),
        ("b", "INT64", 3),
        ("c", "TIMESTAMP", stamp),
    ]
