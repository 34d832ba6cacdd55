"""Bad input: a clear message naming the file, row, column and rule; a Failed phase; no table half-written."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli, table_names, write_spec

pytestmark = pytest.mark.integration

COLUMNS = [
    {"name": "id", "type": "INT64", "required": True},
    {"name": "name"},
    {"name": "qty", "type": "INT64"},
]


def spec_for(uri: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"uri": uri, "columns": COLUMNS}, "load": {"table": "raw.items"}}
    spec.update(extra)
    return spec


def run_failing(tmp_path: Path, workdir: Path, content: bytes, **extra: Any) -> tuple[dict[str, Any], str]:
    (tmp_path / "data.csv").write_bytes(content)
    result = run_cli(
        "run",
        str(write_spec(tmp_path, spec_for("data.csv", **extra))),
        "--workdir",
        str(workdir),
        "--output",
        "json",
    )
    assert result.code != 0
    assert "Traceback" not in result.stderr
    assert "raw.items" not in table_names(workdir)
    return result.summary, result.stderr


def test_missing_file_names_the_file(tmp_path: Path, workdir: Path) -> None:
    result = run_cli(
        "run",
        str(write_spec(tmp_path, spec_for("nowhere.csv"))),
        "--workdir",
        str(workdir),
        "--output",
        "json",
    )
    assert result.code == 1
    assert result.summary["phase"] == "Failed"
    assert "nowhere.csv: no such file" in result.summary["message"]
    assert "nowhere.csv" in result.stderr


def test_empty_file_is_refused(tmp_path: Path, workdir: Path) -> None:
    summary, _ = run_failing(tmp_path, workdir, b"")
    assert "data.csv: the file is empty" in summary["message"]


def test_header_only_file_is_refused(tmp_path: Path, workdir: Path) -> None:
    summary, _ = run_failing(tmp_path, workdir, b"id,name,qty\n")
    assert "no data rows" in summary["message"]


def test_wrong_header_names_the_missing_column(tmp_path: Path, workdir: Path) -> None:
    summary, _ = run_failing(tmp_path, workdir, b"id,label,qty\n1,a,2\n")
    assert "wrong header" in summary["message"]
    assert "'name'" in summary["message"]
    assert "spec.source.columns[1]" in summary["message"]


def test_bad_encoding_names_the_row_and_the_setting(tmp_path: Path, workdir: Path) -> None:
    summary, _ = run_failing(tmp_path, workdir, "id,name,qty\n1,ok,1\n2,café,2\n".encode("latin-1"))
    assert "row 2" in summary["message"]
    assert "spec.source.encoding" in summary["message"]


def test_latin1_file_reads_when_the_spec_says_so(tmp_path: Path, workdir: Path) -> None:
    (tmp_path / "data.csv").write_bytes("id,name,qty\n1,café,2\n".encode("latin-1"))
    spec = spec_for("data.csv")
    spec["source"]["encoding"] = "latin-1"
    result = run_cli("run", str(write_spec(tmp_path, spec)), "--workdir", str(workdir), "--output", "json")
    assert result.summary["phase"] == "Succeeded", result.stderr


def test_type_error_and_too_many_columns_are_rejected_with_row_and_rule(
    tmp_path: Path, workdir: Path
) -> None:
    content = b"id,name,qty\n1,a,10\n2,b,abc\n3,c,30,extra\n4,d,40\n"
    summary, stderr = run_failing(tmp_path, workdir, content)
    assert summary["stages"][0]["rowsRejected"] == 2
    assert "row 2 column qty: type:INT64" in summary["message"]
    assert "row 3: too_many_columns" in summary["message"]
    assert "abc" in stderr


def test_gzip_file_reads_without_unpacking(tmp_path: Path, workdir: Path) -> None:
    (tmp_path / "data.csv.gz").write_bytes(gzip.compress(b"id,name,qty\n1,a,10\n2,b,20\n"))
    result = run_cli(
        "run",
        str(write_spec(tmp_path, spec_for("data.csv.gz"))),
        "--workdir",
        str(workdir),
        "--output",
        "json",
    )
    assert result.summary["phase"] == "Succeeded", result.stderr
    assert result.summary["stages"][1]["rowsOut"] == 2


def test_unknown_column_in_the_spec_fails_before_anything_is_read(tmp_path: Path, workdir: Path) -> None:
    spec = spec_for(
        "data.csv",
        transform={"dedupe": {"key": ["nope"], "orderBy": "qty"}, "output": {"table": "tds.items"}},
    )
    (tmp_path / "data.csv").write_bytes(b"id,name,qty\n1,a,10\n")
    result = run_cli("run", str(write_spec(tmp_path, spec)), "--workdir", str(workdir), "--output", "json")
    assert result.code == 2
    assert result.summary["phase"] == "Failed"
    assert result.summary["problems"][0]["path"] == "spec.transform.dedupe.key[0]"
    assert "unknown column 'nope'" in result.stderr
    assert table_names(workdir) == set()


def test_malformed_expression_names_its_yaml_path_and_line(tmp_path: Path, workdir: Path) -> None:
    spec = spec_for(
        "data.csv",
        transform={"derive": [{"name": "x", "expr": "qty +* 2"}], "output": {"table": "tds.items"}},
    )
    (tmp_path / "data.csv").write_bytes(b"id,name,qty\n1,a,10\n")
    result = run_cli("run", str(write_spec(tmp_path, spec)), "--workdir", str(workdir), "--output", "json")
    assert result.code == 2
    problem = result.summary["problems"][0]
    assert problem["path"] == "spec.transform.derive[0].expr"
    assert problem["line"] is not None
    assert "does not parse" in problem["message"]
