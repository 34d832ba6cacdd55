"""BigQuery's side of the merge: the cycle's transaction script run as one query job, exactly once.

- The job id is deterministic: ``dataops-consolidate-<source>-<cycle>-<attempt>``. When the response to
  a job insert is lost and the insert is sent again, BigQuery answers 409: the job is re-attached by
  its id and awaited, never run twice.
- "Could not serialize access ... due to concurrent update" (another DML on the target committed
  first), rate limits and backend errors are retried with exponential backoff, under the next
  attempt's id (a failed job id cannot be reused).
- A failed guard inside the script (the lock was lost, the watermark moved) raises
  :class:`~beam.consolidation.merge.MergeRefused`: the transaction rolled back, nothing to retry.
- The target is only written by this MERGE (DML), never by streaming inserts: rows in the streaming
  buffer would block the MERGE.

``client`` is a ``google.cloud.bigquery.Client`` (:func:`bigquery_client`) or anything with the same
``query``/``get_job`` methods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from google.api_core import exceptions as gexc

from beam.consolidation.merge import MergeRefused
from beam.consolidation.plan import ConsolidationPlan, safe_name
from beam.consolidation.sql import Sql, TransactionPlan, Value, bigquery_cycle_script

log = logging.getLogger("dataops.consolidation")

ATTEMPTS = 5
BACKOFF_SECONDS = 2.0
MAX_BACKOFF_SECONDS = 60.0
RETRYABLE_MESSAGES = ("could not serialize access", "ratelimitexceeded", "backenderror", "internal error")
GUARD_MESSAGE = "dataops: the cycle stopped"


class QueryJob(Protocol):
    def result(self) -> Any: ...


class JobClient(Protocol):
    def query(self, query: str, *, job_id: str, job_config: Any, job_retry: Any = None) -> QueryJob: ...

    def get_job(self, job_id: str) -> QueryJob: ...


def job_id(plan: ConsolidationPlan, cycle_id: str, attempt: int) -> str:
    """Letters, digits, dashes and underscores, at most 1,024 characters: BigQuery's job id rule."""
    return f"dataops-consolidate-{safe_name(plan.source_name)}-{safe_name(cycle_id)}-{attempt}"[:1024]


def query_parameters(params: Mapping[str, Value]) -> list[tuple[str, str, Any]]:
    """``(name, BigQuery type, value)`` of each parameter: STRING, INT64 or TIMESTAMP."""
    out = []
    for name, value in sorted(params.items()):
        if isinstance(value, bool) or value is None:
            raise TypeError(f"parameter {name}: {value!r} has no BigQuery type here")
        kind = (
            "TIMESTAMP" if isinstance(value, datetime) else ("INT64" if isinstance(value, int) else "STRING")
        )
        out.append((name, kind, value))
    return out


def job_config(params: Mapping[str, Value]) -> Any:
    from google.cloud import bigquery  # the production extra: google-cloud-bigquery

    return bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(n, t, v) for n, t, v in query_parameters(params)]
    )


def bigquery_client(project: str | None = None) -> JobClient:
    from google.cloud import bigquery

    client: JobClient = bigquery.Client(project=project)
    return client


def retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, gexc.ServerError | gexc.TooManyRequests) or any(
        m in text for m in RETRYABLE_MESSAGES
    )


def run_script(
    client: JobClient,
    script: Sql,
    job_ids: Callable[[int], str],
    *,
    config: Callable[[Mapping[str, Value]], Any] = job_config,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Run ``script`` as one job; re-attach on 409, retry what may pass later under a new job id."""
    for attempt in range(attempts):
        jid = job_ids(attempt)
        try:
            # job_retry=None: the client cannot rerun a job under the same id; this loop retries under the next
            job = client.query(script.text, job_id=jid, job_config=config(script.params), job_retry=None)
        except gexc.Conflict:  # the insert reached BigQuery before: wait for that job, do not run another
            log.info("job %s exists already: re-attached", jid)
            job = client.get_job(jid)
        try:
            return job.result()
        except gexc.GoogleAPICallError as exc:
            if GUARD_MESSAGE in str(exc):
                raise MergeRefused(str(exc)) from None
            if not retryable(exc) or attempt == attempts - 1:
                raise
            delay = min(BACKOFF_SECONDS * 2**attempt, MAX_BACKOFF_SECONDS)
            log.warning("job %s failed (%s); retrying in %.0fs under a new id", jid, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def merge_on_bigquery(client: JobClient, plan: ConsolidationPlan, tx: TransactionPlan, **kwargs: Any) -> Any:
    """The merge transaction of ``tx`` on BigQuery (see :func:`bigquery_cycle_script`)."""
    script = bigquery_cycle_script(plan, tx)
    return run_script(client, script, lambda attempt: job_id(plan, tx.cycle_id, attempt), **kwargs)
