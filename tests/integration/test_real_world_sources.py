"""Real-world sources: mapped headers, several files, gzip, JSON cells, run metadata, replays, checks.

Each file is made in the test; each expected table is written in the test, not computed by the code.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import query, run_cli, table_names, write_spec

pytestmark = pytest.mark.integration


def run_json(spec_path: Path, workdir: Path) -> dict[str, Any]:
    result = run_cli("run", str(spec_path), "--workdir", str(workdir), "--output", "json")
    assert "Traceback" not in result.stderr
    return result.summary


def test_pascal_case_headers_map_to_snake_case_columns_and_from_overrides(
    tmp_path: Path, workdir: Path
) -> None:
    (tmp_path / "export.csv").write_text(
        "ResourceGroup,Resource ID,subscriptionId,Monthly Cost (EUR)\nWeb-Prod,r1,s-1,10.5\nData,r2,s-2,3\n",
        encoding="utf-8",
    )
    spec = {
        "source": {
            "uri": "export.csv",
            "headerCase": "snake",
            "columns": [
                {"name": "resource_group"},
                {"name": "resource_id"},
                {"name": "subscription_id"},
                {"name": "cost", "type": "NUMERIC", "from": "Monthly Cost (EUR)"},
            ],
        },
        "load": {"table": "raw.resources"},
    }
    summary = run_json(write_spec(tmp_path, spec), workdir)
    assert summary["phase"] == "Succeeded", summary["message"]
    rows = query(
        workdir,
        "SELECT resource_group, resource_id, subscription_id, cost::DOUBLE FROM raw.resources "
        "ORDER BY resource_id",
    )
    assert rows == [("Web-Prod", "r1", "s-1", 10.5), ("Data", "r2", "s-2", 3.0)]


def test_two_headers_mapping_to_one_name_fail_before_anything_is_loaded(
    tmp_path: Path, workdir: Path
) -> None:
    (tmp_path / "export.csv").write_text("ResourceID,Resource ID\nr1,r2\n", encoding="utf-8")
    spec = {
        "source": {"uri": "export.csv", "headerCase": "snake", "columns": [{"name": "resource_id"}]},
        "load": {"table": "raw.resources"},
    }
    summary = run_json(write_spec(tmp_path, spec), workdir)
    assert summary["phase"] == "Failed"
    assert "'ResourceID' and 'Resource ID' both map to 'resource_id'" in summary["message"]
    assert "raw.resources" not in table_names(workdir)


def test_a_glob_over_three_files_is_one_input_and_rejects_name_file_and_row(
    tmp_path: Path, workdir: Path
) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "a.csv").write_text("id,qty\n1,10\n2,20\n", encoding="utf-8")
    (exports / "b.csv").write_text("qty,id\n30,3\nxx,4\n", encoding="utf-8")
    (exports / "c.csv.gz").write_bytes(gzip.compress(b"id,qty\n5,50\n"))
    spec = {
        "source": {
            "uri": "exports/*.csv*",
            "columns": [{"name": "id", "type": "INT64"}, {"name": "qty", "type": "INT64"}],
        },
        "validate": {"onFailure": "quarantine"},
        "load": {"table": "raw.items"},
    }
    summary = run_json(write_spec(tmp_path, spec), workdir)
    assert summary["phase"] == "Succeeded", summary["message"]
    assert query(workdir, "SELECT id, qty FROM raw.items ORDER BY id") == [(1, 10), (2, 20), (3, 30), (5, 50)]
    rejects = query(
        workdir, "SELECT file, row_number, column_name, rule, value, line_text FROM raw.items_rejects"
    )
    assert rejects == [(str(exports / "b.csv"), 2, "qty", "type:INT64", "xx", "xx,4")]


def test_a_malformed_json_cell_gives_null_not_a_failed_run(tmp_path: Path, workdir: Path) -> None:
    (tmp_path / "data.csv").write_text(
        'id,tags\n1,"{""env"": ""prod"", ""team"": {""name"": ""data""}}"\n2,"{not json"\n3,\n',
        encoding="utf-8",
    )
    spec = {
        "source": {"uri": "data.csv", "columns": [{"name": "id", "type": "INT64"}, {"name": "tags"}]},
        "load": {"table": "raw.items"},
        "transform": {
            "derive": [
                {"name": "env", "expr": "JSON_VALUE(tags, '$.env')"},
                {"name": "team", "expr": "JSON_EXTRACT_SCALAR(tags, '$.team.name')"},
                {"name": "team_obj", "expr": "JSON_VALUE(tags, '$.team')"},
            ],
            "output": {"table": "tds.items"},
        },
    }
    summary = run_json(write_spec(tmp_path, spec), workdir)
    assert summary["phase"] == "Succeeded", summary["message"]
    rows = query(workdir, "SELECT id, env, team, team_obj FROM tds.items ORDER BY id")
    assert rows == [(1, "prod", "data", None), (2, None, None, None), (3, None, None, None)]


def test_run_metadata_columns_keep_their_value_when_the_run_is_repeated(
    tmp_path: Path, workdir: Path
) -> None:
    (tmp_path / "data.csv").write_text("id,grp\n1,a\n2,a\n3,b\n", encoding="utf-8")
    spec = {
        "source": {"uri": "data.csv", "columns": [{"name": "id", "type": "INT64"}, {"name": "grp"}]},
        "load": {"table": "raw.items"},
        "transform": {
            "output": {
                "table": "tds.items",
                "metadata": True,
                "partitionBy": {"column": "ingestion_timestamp", "granularity": "DAY"},
            }
        },
        "aggregate": [
            {
                "output": {"table": "bds.by_grp"},
                "groupBy": ["grp"],
                "reportDate": True,
                "metrics": [{"name": "n", "agg": "count"}],
            }
        ],
    }
    path = write_spec(tmp_path, spec)
    first = run_json(path, workdir)
    stamps = query(workdir, "SELECT DISTINCT ingestion_timestamp, source_uri FROM tds.items")
    second = run_json(path, workdir)
    assert first["phase"] == second["phase"] == "Succeeded"
    assert query(workdir, "SELECT DISTINCT ingestion_timestamp, source_uri FROM tds.items") == stamps
    assert len(stamps) == 1 and stamps[0][1] == str(tmp_path / "data.csv")
    report = query(workdir, "SELECT grp, n, CAST(report_date AS VARCHAR) FROM bds.by_grp ORDER BY grp")
    assert [(g, n) for g, n, _ in report] == [("a", 2), ("b", 1)]
    assert report[0][2] == first["startTime"][:10]


def test_fixed_rejects_replay_into_the_raw_table(tmp_path: Path, workdir: Path) -> None:
    (tmp_path / "data.csv").write_text("id,qty\n1,10\n2,oops\n3,30\n", encoding="utf-8")
    spec = {
        "source": {
            "uri": "data.csv",
            "columns": [{"name": "id", "type": "INT64"}, {"name": "qty", "type": "INT64"}],
        },
        "validate": {"onFailure": "quarantine"},
        "load": {"table": "raw.items"},
    }
    assert run_json(write_spec(tmp_path, spec, name="orders"), workdir)["phase"] == "Succeeded"
    export = workdir / "runs" / "default" / "orders" / "validate" / "rejects-export" / "rejects-000.csv"
    assert export.read_text(encoding="utf-8") == "id,qty\n2,oops\n"
    export.write_text("id,qty\n2,20\n", encoding="utf-8")
    replay = run_cli("replay-rejects", "orders", "--workdir", str(workdir), "--output", "json")
    assert replay.code == 0, replay.stderr
    assert replay.summary["name"] == "orders-replay-1"
    assert query(workdir, "SELECT id, qty FROM raw.items ORDER BY id") == [(1, 10), (2, 20), (3, 30)]


def test_check_names_each_problem_with_its_yaml_path_and_line(tmp_path: Path) -> None:
    base = {
        "source": {"uri": "x.csv", "columns": [{"name": "id", "type": "INT64"}]},
        "load": {"table": "raw.t"},
    }
    good = write_spec(tmp_path, base, name="good")
    wrong_type = write_spec(tmp_path, {**base, "retries": {"limit": "many"}}, name="wrongtype")
    bad_sql = write_spec(
        tmp_path,
        {
            **base,
            "transform": {
                "derive": [{"name": "d", "expr": "SUM(id)"}],
                "filter": "nope > 1",
                "output": {"table": "tds.t"},
            },
        },
        name="badsql",
    )
    result = run_cli("check", str(good), str(wrong_type), str(bad_sql))
    assert result.code == 1
    lines = result.stdout.splitlines()
    assert f"{good}: ok" in lines
    assert any(line.startswith(f"{wrong_type}:") and "spec.retries.limit" in line for line in lines)
    assert any(
        line.startswith(f"{bad_sql}:") and "spec.transform.derive[0].expr" in line and "SUM" in line
        for line in lines
    )
    assert any("spec.transform.filter" in line and "unknown column 'nope'" in line for line in lines)
    assert all(line.split(":")[1].strip().isdigit() for line in lines if not line.endswith(": ok"))
    assert run_cli("check", str(good)).code == 0
