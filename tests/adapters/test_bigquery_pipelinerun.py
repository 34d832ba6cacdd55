"""A PipelineRun's validate and load stages, run by the real ``dataops run``, write to BigQuery when the
environment selects it: rows land in the BigQuery double, by load jobs with the run's labels, the raw table
partitioned and clustered as the spec says, and the bytes billed of each stage in the run's status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli, table_names, write_spec
from tests.doubles.bigquery_api import BigQueryDouble

pytestmark = pytest.mark.e2e

CSV = "id,name,qty,day\n1,apple,3,2026-03-01\n2,pear,,2026-03-01\n,plum,4,2026-03-02\n4,fig,1,2026-03-02\n"
SPEC = {
    "source": {
        "uri": "items.csv",
        "columns": [
            {"name": "id", "type": "INT64", "required": True},
            {"name": "name"},
            {"name": "qty", "type": "INT64"},
            {"name": "day", "type": "DATE"},
        ],
    },
    "validate": {"onFailure": "quarantine", "maxRejectedPercent": 50},
    "load": {"table": "shop_raw.items", "partitionBy": "day", "clusterBy": ["name"]},
}


def bigquery_env(monkeypatch: pytest.MonkeyPatch, double: BigQueryDouble) -> None:
    monkeypatch.setenv("DATAOPS_WAREHOUSE", "bigquery")
    monkeypatch.setenv("DATAOPS_BIGQUERY_PROJECT", double.project)
    monkeypatch.setenv("DATAOPS_BIGQUERY_ENDPOINT", double.endpoint)


def test_run_selected_onto_bigquery_loads_into_the_double(
    bigquery_double: BigQueryDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workdir: Path
) -> None:
    bigquery_double.client().create_dataset("shop_raw")
    (tmp_path / "items.csv").write_text(CSV, encoding="utf-8")
    bigquery_env(monkeypatch, bigquery_double)

    result = run_cli(
        "run", str(write_spec(tmp_path, SPEC, name="shop-1")), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 0, result.stderr
    summary = result.summary
    assert summary["phase"] == "Succeeded"
    assert bigquery_double.engine.sql("SELECT id, name, qty FROM shop_raw.items ORDER BY id") == [
        (1, "apple", 3),
        (2, "pear", None),
        (4, "fig", 1),
    ]
    assert bigquery_double.engine.sql("SELECT run, count(*) FROM shop_raw.items_rejects GROUP BY run") == [
        ("shop-1", 1)
    ]
    table = bigquery_double.client().get_table("shop_raw.items")
    assert (table.time_partitioning.field, table.clustering_fields) == ("day", ["name"])
    loads = bigquery_double.job_list("LOAD")
    assert {(j["configuration"]["labels"]["run"], j["configuration"]["labels"]["stage"]) for j in loads} == {
        ("shop-1", "validate"),
        ("shop-1", "load"),
    }
    billed = {s["name"]: s["bytesBilled"] for s in summary["stages"]}
    assert billed == {"validate": 10 * 1024 * 1024, "load": 0}  # the rejects swap is a query; loads are free
    assert table_names(workdir) == set()  # nothing went to the local DuckDB warehouse


def test_run_selecting_bigquery_in_its_spec_onto_a_missing_dataset_says_how_to_create_it(
    bigquery_double: BigQueryDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workdir: Path
) -> None:
    (tmp_path / "items.csv").write_text(CSV, encoding="utf-8")
    monkeypatch.delenv("DATAOPS_WAREHOUSE", raising=False)
    monkeypatch.setenv("DATAOPS_BIGQUERY_ENDPOINT", bigquery_double.endpoint)
    spec = SPEC | {"warehouse": {"type": "bigquery", "project": bigquery_double.project}}

    result = run_cli(
        "run", str(write_spec(tmp_path, spec, name="shop-2")), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 1
    [validate] = [s for s in result.summary["stages"] if s["name"] == "validate"]
    assert validate["reason"] == "WriteRefused"
    assert "dataset dataops-test:shop_raw does not exist" in validate["message"]
    assert "bq mk --dataset dataops-test:shop_raw" in validate["message"]


def test_whole_run_transforms_and_aggregates_on_bigquery(
    bigquery_double: BigQueryDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workdir: Path
) -> None:
    client = bigquery_double.client()
    for dataset in ("shop_raw", "shop_tds", "shop_bds"):
        client.create_dataset(dataset)
    (tmp_path / "items.csv").write_text(CSV + "4,fig,7,2026-03-03\n", encoding="utf-8")
    spec = SPEC | {
        "transform": {
            "standardize": [{"column": "name", "case": "upper"}],
            "dedupe": {"key": ["id"], "orderBy": "day"},
            "output": {"table": "shop_tds.items", "partitionBy": {"column": "day", "granularity": "MONTH"}},
        },
        "aggregate": [
            {
                "output": {"table": "shop_bds.qty_by_day", "clusterBy": ["day"]},
                "groupBy": ["day"],
                "metrics": [{"name": "qty", "agg": "sum", "column": "qty"}],
            }
        ],
    }
    bigquery_env(monkeypatch, bigquery_double)

    result = run_cli(
        "run", str(write_spec(tmp_path, spec, name="shop-3")), "--workdir", str(workdir), "--output", "json"
    )

    assert result.code == 0, result.stdout + result.stderr
    assert bigquery_double.engine.sql("SELECT id, name, qty FROM shop_tds.items ORDER BY id") == [
        (1, "APPLE", 3),
        (2, "PEAR", None),
        (4, "FIG", 7),
    ]
    assert bigquery_double.engine.sql(
        "SELECT CAST(day AS VARCHAR), qty FROM shop_bds.qty_by_day ORDER BY 1"
    ) == [
        ("2026-03-01", 3),
        ("2026-03-03", 7),
    ]
    assert client.get_table("shop_tds.items").time_partitioning.type_ == "MONTH"
    assert client.get_table("shop_bds.qty_by_day").clustering_fields == ["day"]
    stages = {j["configuration"]["labels"]["stage"] for j in bigquery_double.job_list("LOAD")}
    assert stages == {"validate", "load", "transform", "aggregate"}
    assert table_names(workdir) == set()


def run_stage(stage: str, spec: Path, workdir: Path) -> dict[str, object]:
    """One stage as the worker image runs it, with the run's fixed start time (the same in every attempt)."""
    result = workdir / f"{stage}-result.json"
    command = [sys.executable, "-m", "beam.stages", stage, "--spec", str(spec), "--workdir", str(workdir)]
    subprocess.run(
        [*command, "--started-at", "2026-03-02T09:00:00+00:00", "--result-file", str(result)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
        timeout=300,
    )
    data: dict[str, object] = json.loads(result.read_text(encoding="utf-8"))
    return data


def test_append_stage_run_again_after_a_crash_appends_nothing_twice(
    bigquery_double: BigQueryDouble, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workdir: Path
) -> None:
    bigquery_double.client().create_dataset("shop_raw")
    (tmp_path / "items.csv").write_text(CSV, encoding="utf-8")
    spec = write_spec(
        tmp_path, SPEC | {"load": {"table": "shop_raw.items", "writeMode": "append"}}, name="shop-4"
    )
    bigquery_env(monkeypatch, bigquery_double)
    run_stage("validate", spec, workdir)

    first = run_stage("load", spec, workdir)
    again = run_stage("load", spec, workdir)  # the stage's next attempt: its Job was lost after the load ran

    assert first["rows_out"] == again["rows_out"] == 3
    assert bigquery_double.engine.sql("SELECT count(*) FROM shop_raw.items") == [(3,)]
    assert [j["configuration"]["load"]["writeDisposition"] for j in bigquery_double.job_list("LOAD")].count(
        "WRITE_APPEND"
    ) == 1
