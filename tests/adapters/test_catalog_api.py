"""Lineage and table aspects written by a real stage, against loopback Data Lineage and Dataplex APIs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam.catalog import fqn
from beam.catalog.aspects import table_entry
from beam.stages.__main__ import main as run_stage
from tests.doubles.catalog_api import CatalogDouble, catalog_double
from tests.doubles.stage_runs import STARTED_AT, run_document, seed_raw_table

pytestmark = pytest.mark.integration

RAW_FQN = "bigquery:test-project.shop_raw.items"
TDS_FQN = "bigquery:test-project.shop_tds.items"
ASPECT = "test-project.europe-west1.dataops-table"


@pytest.fixture
def catalog() -> Iterator[CatalogDouble]:
    with catalog_double("test-project", "europe-west1") as c:
        yield c


def turn_on(monkeypatch: pytest.MonkeyPatch, catalog: CatalogDouble) -> None:
    for name, value in {
        "DATAOPS_CATALOG": "dataplex",
        "DATAOPS_CATALOG_PROJECT": "test-project",
        "DATAOPS_CATALOG_LOCATION": "europe-west1",
        "DATAOPS_LINEAGE_ENDPOINT": catalog.url,
        "DATAOPS_DATAPLEX_ENDPOINT": catalog.url,
        "DATAOPS_CATALOG_CREDENTIALS": "anonymous",
    }.items():
        monkeypatch.setenv(name, value)


def transform(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("DATAOPS_RUN", run_document("shop"))
    result_file = workdir / "result.json"
    code = run_stage(
        [
            "transform",
            "--spec",
            "env:DATAOPS_RUN",
            "--workdir",
            str(workdir),
            "--started-at",
            STARTED_AT,
            "--result-file",
            str(result_file),
        ]
    )
    return code, json.loads(result_file.read_text(encoding="utf-8"))


def test_fully_qualified_names_of_tables_and_objects() -> None:
    assert fqn("shop_raw.items", "p") == "bigquery:p.shop_raw.items"
    assert fqn("gs://landing/2026/items.csv", "p") == "gcs:landing.`2026/items.csv`"
    assert fqn("/data/items.csv", "p") is None


def test_a_transform_records_its_lineage_and_tags_the_table_it_wrote(
    catalog: CatalogDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_raw_table(tmp_path)
    turn_on(monkeypatch, catalog)

    code, result = transform(tmp_path, monkeypatch)

    assert code == 0
    assert [link["source"]["fullyQualifiedName"] for link in catalog.links_to(TDS_FQN)] == [RAW_FQN]
    [run] = catalog.runs.values()
    assert (run["state"], run["attributes"]["pipelineRun"], run["startTime"]) == (
        "COMPLETED",
        "shop",
        STARTED_AT,
    )
    entry = catalog.entries[table_entry("test-project", "europe-west1", "shop_tds.items")]
    assert entry["aspects"][ASPECT]["data"] == {
        "run": "default/shop",
        "stage": "transform",
        "generation": 1,
        "source_uri": "/data/items.csv",
        "inputs": "shop_raw.items",
        "rows": 3,
        "written_at": STARTED_AT,
    }
    assert result["details"]["catalog"].startswith(
        "lineage projects/test-project/locations/europe-west1/processes/"
    )


def test_a_stage_run_again_records_nothing_twice(
    catalog: CatalogDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_raw_table(tmp_path)
    turn_on(monkeypatch, catalog)

    first, _ = transform(tmp_path, monkeypatch)
    again, _ = transform(tmp_path, monkeypatch)

    assert (first, again) == (0, 0)
    assert (len(catalog.processes), len(catalog.runs), len(catalog.events)) == (1, 1, 1)
    assert len(catalog.links_to(TDS_FQN)) == 1
    assert len(catalog.aspect_types) == 1


def test_nothing_is_written_to_a_catalog_unless_configured(
    catalog: CatalogDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_raw_table(tmp_path)
    monkeypatch.delenv("DATAOPS_CATALOG", raising=False)

    code, result = transform(tmp_path, monkeypatch)

    assert code == 0
    assert catalog.requests == []
    assert "catalog" not in result["details"]


def test_a_missing_role_is_named_and_the_written_table_stays(
    catalog: CatalogDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_raw_table(tmp_path)
    turn_on(monkeypatch, catalog)
    catalog.deny("datalineage.events.create")

    code, result = transform(tmp_path, monkeypatch)

    assert code == 0
    assert "catalog not updated" in result["message"]
    assert "permission denied (datalineage.events.create)" in result["message"]
    assert "roles/datalineage.producer on the project" in result["message"]
    assert result["rows_out"] == 3


def test_quota_errors_are_retried_with_backoff(
    catalog: CatalogDouble, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_raw_table(tmp_path)
    turn_on(monkeypatch, catalog)
    catalog.throttle(2)

    code, result = transform(tmp_path, monkeypatch)

    assert code == 0
    assert [status for _, _, status in catalog.requests[:3]] == [429, 429, 200]
    assert "catalog not updated" not in result["message"]
    assert len(catalog.links_to(TDS_FQN)) == 1
