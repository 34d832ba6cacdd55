"""The bytes a stage's warehouse jobs were billed travel from the stage's result (a pod's termination message)
into the run's status as ``bytesBilled``, and back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from beam.stages.context import StageResult
from controller.observe import outcome_of
from controller.planner import StageRows, StageStatus
from controller.status import stage_from_dict, stage_to_dict

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_a_succeeded_pods_result_carries_its_bytes_billed() -> None:
    result = StageResult(stage="load", rows_in=3, rows_out=3, bytes_billed=20_971_520)
    job = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    pod = {
        "status": {
            "containerStatuses": [{"state": {"terminated": {"exitCode": 0, "message": result.to_json()}}}]
        }
    }

    outcome = outcome_of("load", 1, job, [pod], NOW, 300)

    assert outcome.rows == StageRows(3, 3, 0, 20_971_520)


def test_status_shows_bytes_billed_per_stage_and_reads_it_back() -> None:
    stage = StageStatus(name="transform", state="Succeeded", rows=StageRows(10, 8, 0, 10_485_760))

    written = stage_to_dict(stage)

    assert written["bytesBilled"] == 10_485_760
    assert stage_from_dict(json.loads(json.dumps(written))).rows.bytes_billed == 10_485_760
    assert stage_from_dict({"name": "validate"}).rows.bytes_billed == 0  # a status written before the field
