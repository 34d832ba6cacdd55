"""`dataops run --report` and `dataops report` on a known input, the page checked in a real browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli, write_spec
from tests.report.report_browser import open_report

pytestmark = pytest.mark.e2e

CSV = """id,grp,region,amount,day
1,a,north,10,2026-01-01
2,a,south,5,2026-01-01
3,b,north,7,2026-01-02
4,b,north,-1,2026-01-02
5,c,south,x,2026-01-03
6,c,south,3,2026-01-03
"""
COLUMNS = [
    {"name": "id", "type": "INT64", "required": True},
    {"name": "grp", "type": "STRING"},
    {"name": "region", "type": "STRING"},
    {"name": "amount", "type": "NUMERIC"},
    {"name": "day", "type": "DATE"},
]


def _spec(folder: Path, on_failure: str) -> dict[str, Any]:
    (folder / "items.csv").write_text(CSV, encoding="utf-8")
    metrics = [{"name": "items", "agg": "count"}, {"name": "total", "agg": "sum", "column": "amount"}]
    return {
        "source": {"uri": "items.csv", "columns": COLUMNS},
        "validate": {
            "onFailure": on_failure,
            "expectations": [
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {"column": "amount", "min_value": 0},
                },
                {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "grp"}},
            ],
        },
        "load": {"table": "shop_raw.items"},
        "transform": {"output": {"table": "shop_tds.items"}},
        "aggregate": [
            {"name": "by-group", "output": "shop_bds.by_group", "groupBy": ["grp"], "metrics": metrics},
            {
                "name": "by-region",
                "output": "shop_bds.by_region",
                "groupBy": ["grp", "region"],
                "metrics": metrics,
            },
            {"name": "by-day", "output": "shop_bds.by_day", "groupBy": ["day"], "metrics": metrics},
        ],
    }


def test_report_of_a_run_draws_a_bar_per_kpi_row_and_loads_without_errors(
    tmp_path: Path, workdir: Path
) -> None:
    spec = write_spec(tmp_path, _spec(tmp_path, "quarantine"), name="shop")

    result = run_cli("run", str(spec), "--workdir", str(workdir), "--output", "json", "--report")

    assert result.code == 0, result.stderr
    report = Path(result.summary["report"])
    assert report == workdir / "runs" / "default" / "shop" / "report.html"
    status = json.loads((report.parent / "status.json").read_text(encoding="utf-8"))
    assert status["report"] == str(report)
    opened = open_report(report, tmp_path / "report-run.png")
    assert opened.errors == []
    assert opened.bars["kpi:shop_bds.by_group:items"] == 3  # a, b, c
    assert opened.bars["kpi:shop_bds.by_group:total"] == 3
    assert opened.bars["kpi:shop_bds.by_region:items"] == 4  # a/north, a/south, b/north, c/south
    assert opened.lines["kpi:shop_bds.by_day:total"] == 1  # a date as first column: a line
    assert opened.bars["rejects"] == 2  # the expectation on amount, the NUMERIC type
    assert opened.bars["timeline"] == 4  # validate, load, transform, aggregate
    text = report.read_text(encoding="utf-8")
    assert "expect_column_values_to_be_between" in text
    assert 'href="validate/data_docs.html"' in text
    assert (report.parent / "validate" / "data_docs.html").is_file()
    looker = (report.parent / "looker-studio.md").read_text(encoding="utf-8")
    assert "| `grp` | STRING | Text | Dimension | - |" in looker
    assert "| `day` | DATE | Date | Dimension | - |" in looker
    assert "| `items` | INT64 | Number | Metric | Sum | Number of rows per grp, region. |" in looker
    assert "| `total` | NUMERIC | Number | Metric | Sum | Sum of amount per grp. |" in looker


def test_failed_run_has_a_report_saying_which_expectation_failed(tmp_path: Path, workdir: Path) -> None:
    spec = write_spec(tmp_path, _spec(tmp_path, "fail"), name="shop-strict")

    result = run_cli("run", str(spec), "--workdir", str(workdir), "--output", "json")

    assert result.code == 1
    run_dir = workdir / "runs" / "default" / "shop-strict"
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    assert status["phase"] == "Failed"
    assert status["report"] == str(run_dir / "report.html")
    again = run_cli("report", str(spec), "--workdir", str(workdir), "--output", str(tmp_path / "strict.html"))
    assert again.code == 0, again.stderr
    assert again.stdout.strip() == str(tmp_path / "strict.html")
    opened = open_report(tmp_path / "strict.html", tmp_path / "report-failed-run.png")
    assert opened.errors == []
    text = (tmp_path / "strict.html").read_text(encoding="utf-8")
    assert '<span class="badge Failed">Failed</span>' in text
    assert "1 of 2 expectations passed" in text
    assert "Not in the warehouse" in text  # the KPI tables were never written


def test_report_of_a_folder_that_is_not_a_run_names_the_missing_file(tmp_path: Path, workdir: Path) -> None:
    result = run_cli("report", str(tmp_path), "--workdir", str(workdir))

    assert result.code == 2
    assert f"{tmp_path / 'run.json'}: missing" in result.stderr
    assert "Traceback" not in result.stderr
