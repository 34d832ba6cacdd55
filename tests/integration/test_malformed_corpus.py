"""A corpus of malformed inputs, each through the real `dataops` command: a clear error naming the file,
the row or YAML field, and the rule; exit 1 or 2, never a traceback; no table half-written.

CSV cases run `dataops run` over a small spec (validate, then load): a file the reader refuses leaves no
table at all; rows set aside leave only the rejects table beside the raw table (written by validate, as
documented), never the raw table. A few cases are dirt that must be read, not refused (a UTF-8 BOM, mixed
line endings, a 20 MB cell): for them the values that arrive are checked. Spec cases run `dataops run`
(exit 2, nothing written) and, all at once, `dataops check`.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.conftest import query, run_cli, table_names

pytestmark = pytest.mark.integration

COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "INT64", "required": True},
    {"name": "name"},
    {"name": "qty", "type": "INT64"},
]
RAW = "raw.items"
REJECTS = "raw.items_rejects"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
)


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("sheet.xml", "<x/>")
    return buf.getvalue()


def _rows(n: int) -> bytes:
    return b"id,name,qty\n" + b"".join(b"%d,n%d,%d\n" % (i, i, i) for i in range(1, n + 1))


@dataclass(frozen=True)
class CsvCase:
    id: str
    data: bytes | Callable[[], bytes]
    says: tuple[str, ...]  # each in the run's message; empty for a file that must be read
    tables: frozenset[str] = frozenset()  # what the warehouse holds afterwards
    columns: list[dict[str, Any]] = field(default_factory=lambda: COLUMNS)
    source: dict[str, Any] = field(default_factory=dict)
    check: str | None = None  # for a file that is read: SQL over raw.items
    expect: list[tuple[Any, ...]] | None = None

    def content(self) -> bytes:
        return self.data() if callable(self.data) else self.data


def typed(type_: str) -> list[dict[str, Any]]:
    return [{"name": "id", "type": "INT64"}, {"name": "v", "type": type_}]


ROWS_SET_ASIDE = frozenset({REJECTS})
LOADED = frozenset({RAW, REJECTS})

CSV_CASES = [
    CsvCase(
        "latin1-bytes-in-utf8",
        "id,name,qty\n1,ok,1\n2,café,2\n".encode("latin-1"),
        ("data.csv: row 2: not valid utf-8", "spec.source.encoding"),
    ),
    CsvCase(
        "utf16-with-bom",
        "id,name,qty\n1,a,2\n".encode("utf-16"),
        ("data.csv: row 1 (header)", "utf-16 byte order mark", "spec.source.encoding: utf-16"),
    ),
    CsvCase(
        "invalid-utf8-mid-file",
        b"id,name,qty\n" + b"1,a,1\n" * 500 + b"2,\xff\xfe,2\n3,c,3\n",
        ("data.csv: row 501: not valid utf-8", "spec.source.encoding"),
    ),
    CsvCase(
        "utf8-bom-is-read",
        b"\xef\xbb\xbfid,name,qty\n1,a,2\n",
        (),
        LOADED,
        check="SELECT id, name, qty FROM raw.items",
        expect=[(1, "a", 2)],
    ),
    CsvCase(
        "nul-byte-in-a-cell",
        b"id,name,qty\n1,a\x00b,2\n2,c,3\n",
        ("data.csv row 1 column name: nul_byte", "NUL byte"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "nul-bytes-in-the-header",
        b"i\x00d,name,qty\n1,a,2\n",
        ("data.csv: row 1 (header)", "NUL byte"),
    ),
    CsvCase(
        "unclosed-quote",
        b'id,name,qty\n1,a,1\n2,"b,2\n3,c,3\n',
        ("data.csv row 2: unquoted_value", "quoted value is not closed"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "text-after-closing-quote",
        b'id,name,qty\n1,a,1\n2,"b"x,2\n3,c,3\n',
        ("data.csv row 2: unquoted_value", "text follows its closing quote"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "quote-inside-unquoted-field-is-data",
        b'id,name,qty\n1,b"x,2\n',
        (),
        LOADED,
        check="SELECT name FROM raw.items",
        expect=[('b"x',)],
    ),
    CsvCase(
        "too-few-fields",
        b"id,name,qty\n1,a,1\n2,b\n3,c,3\n",
        ("data.csv row 2: missing_columns", "Expected Number of Columns: 3 Found: 2"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "too-many-fields",
        b"id,name,qty\n1,a,1\n2,b,2,extra\n",
        ("data.csv row 2: too_many_columns", "Found: 4"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "20mb-cell-is-read",
        lambda: b"id,name,qty\n1," + b"x" * (20 * 1024 * 1024) + b",2\n",
        (),
        LOADED,
        check="SELECT id, length(name) FROM raw.items",
        expect=[(1, 20 * 1024 * 1024)],
    ),
    CsvCase(
        "40mb-line-over-the-limit",
        lambda: b"id,name,qty\n1," + b"x" * (40 * 1024 * 1024) + b",2\n2,b,3\n",
        ("data.csv row 1: line_size_over_maximum", "Maximum line size"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "200k-rows-one-bad-at-the-end",
        lambda: _rows(200_000) + b"200001,z,abc\n",
        ("data.csv row 200001 column qty: type:INT64", "'abc' is not a valid INT64"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "crlf-and-lf-mixed-are-read",
        b"id,name,qty\r\n1,a,1\n2,b,2\r\n3,c,3\n",
        (),
        LOADED,
        check="SELECT id, name, qty FROM raw.items ORDER BY id",
        expect=[(1, "a", 1), (2, "b", 2), (3, "c", 3)],
    ),
    CsvCase("empty-file", b"", ("data.csv: the file is empty",)),
    CsvCase("header-only", b"id,name,qty\n", ("data.csv", "no data rows")),
    CsvCase("whitespace-only", b"   \n \t \n\n", ("data.csv: row 1 (header): is blank",)),
    CsvCase(
        "duplicate-header-names",
        b"id,name,name,qty\n1,a,b,2\n",
        ("data.csv: wrong header", "headers 'name' and 'name' both map to 'name'"),
    ),
    CsvCase(
        "blank-header-name-of-a-needed-column",
        b"id,,qty\n1,a,2\n",
        ("data.csv: wrong header", "spec.source.columns[1].name", "'name'"),
    ),
    CsvCase(
        "blank-header-name-of-an-unused-column-is-read",
        b"id,name,qty,\n1,a,2,\n",
        (),
        LOADED,
        check="SELECT id, name, qty FROM raw.items",
        expect=[(1, "a", 2)],
    ),
    CsvCase("gzip-renamed-csv", gzip.compress(b"id,name,qty\n1,a,2\n"), ("data.csv", "gzip-compressed")),
    CsvCase("png-renamed-csv", PNG, ("data.csv: row 1 (header)", "PNG image")),
    CsvCase("xlsx-zip-renamed-csv", _zip(), ("data.csv", "ZIP archive")),
    CsvCase(
        "int64-overflow",
        b"id,name,qty\n1,a,99999999999999999999\n",
        ("data.csv row 1 column qty: type:INT64", "'99999999999999999999'"),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "numeric-too-many-digits",
        b"id,v\n1,1.5\n2,123456789012345678901234567890123\n",
        ("data.csv row 2 column v: type:NUMERIC",),
        ROWS_SET_ASIDE,
        columns=typed("NUMERIC"),
    ),
    CsvCase(
        "invalid-date",
        b"id,v\n1,2024-02-30\n",
        ("data.csv row 1 column v: type:DATE", "'2024-02-30'"),
        ROWS_SET_ASIDE,
        columns=typed("DATE"),
    ),
    CsvCase(
        "invalid-timestamp",
        b"id,v\n1,2024-01-01T25:00:00\n",
        ("data.csv row 1 column v: type:TIMESTAMP", "'2024-01-01T25:00:00'"),
        ROWS_SET_ASIDE,
        columns=typed("TIMESTAMP"),
    ),
    CsvCase(
        "bool-maybe",
        b"id,v\n1,true\n2,maybe\n",
        ("data.csv row 2 column v: type:BOOL", "'maybe'"),
        ROWS_SET_ASIDE,
        columns=typed("BOOL"),
    ),
    CsvCase(
        "required-cell-empty",
        b"id,name,qty\n,a,2\n",
        ("data.csv row 1 column id: required",),
        ROWS_SET_ASIDE,
    ),
    CsvCase(
        "delimiter-mismatch",
        b"id;name;qty\n1;a;2\n",
        ("data.csv: wrong header", "delimited by ';'", "spec.source.delimiter"),
    ),
]


def _spec(uri: str, columns: list[dict[str, Any]], source: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "corpus"},
        "spec": {
            "source": {"uri": uri, "columns": columns, **source},
            "load": {"table": RAW},
            "retries": {"limit": 0},
        },
    }


@pytest.mark.parametrize("case", CSV_CASES, ids=[c.id for c in CSV_CASES])
def test_malformed_csv_gets_a_clear_error_and_no_half_written_table(
    case: CsvCase, tmp_path: Path, workdir: Path
) -> None:
    (tmp_path / "data.csv").write_bytes(case.content())
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(_spec("data.csv", case.columns, case.source)), encoding="utf-8")

    result = run_cli("run", str(spec), "--workdir", str(workdir), "--output", "json")

    assert "Traceback" not in result.stderr + result.stdout
    summary = result.summary
    if case.says:
        assert result.code == 1, result.stderr
        assert summary["reason"] != "InternalError"
        for part in case.says:
            assert part in summary["message"], summary["message"]
        assert "data.csv" in result.stderr
    else:
        assert result.code == 0, summary["message"]
        assert query(workdir, str(case.check)) == case.expect
    assert table_names(workdir) == set(case.tables)


SPEC_OK = {
    "apiVersion": "dataops.io/v1alpha1",
    "kind": "PipelineRun",
    "metadata": {"name": "corpus"},
    "spec": {
        "source": {"uri": "data.csv", "columns": COLUMNS},
        "load": {"table": RAW},
        "transform": {"output": {"table": "tds.items"}},
    },
}


def _with(path: str, value: Any) -> str:
    """The sound spec with one field set (dotted path; a trailing '-' deletes it), as YAML."""
    doc = yaml.safe_load(yaml.safe_dump(SPEC_OK))
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if last.endswith("-"):
        del node[last[:-1]]
    else:
        node[last] = value
    return yaml.safe_dump(doc, sort_keys=False, width=1_000_000)


BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    + yaml.safe_dump(SPEC_OK)
)


@dataclass(frozen=True)
class SpecCase:
    id: str
    text: str | bytes
    says: tuple[str, ...]  # each in the error output
    where: str  # the YAML path, or "" for the document as a whole
    has_line: bool = True  # the message names the YAML line (not for a whole-file problem)
    run_only: bool = False  # `dataops check` accepts it (a GitOps file may hold several runs)


SPEC_CASES = [
    SpecCase(
        "string-where-a-bool-goes",
        _with("spec.source.header", "yes please"),
        ("valid boolean",),
        "spec.source.header",
    ),
    SpecCase(
        "string-where-an-int-goes",
        _with("spec.retries.limit", "many"),
        ("valid integer",),
        "spec.retries.limit",
    ),
    SpecCase(
        "typo-in-a-key",
        _with("spec.laod", {"table": "raw.x"}),
        ("unknown field 'laod'", "did you mean 'load'?"),
        "spec.laod",
    ),
    SpecCase("missing-required-field", _with("spec.load-", None), ("Field required",), "spec.load"),
    SpecCase(
        "injection-looking-table-name",
        _with("spec.load.table", "raw.x; DROP TABLE y"),
        ("'raw.x; DROP TABLE y' must be 'dataset.table'",),
        "spec.load.table",
    ),
    SpecCase(
        "invalid-column-name",
        _with("spec.source.columns", [*COLUMNS, {"name": 'na me"; DROP'}]),
        ("is not a valid identifier",),
        "spec.source.columns[3].name",
    ),
    SpecCase(
        "derives-in-a-cycle",
        _with("spec.transform.derive", [{"name": "a", "expr": "b + 1"}, {"name": "b", "expr": "a + 1"}]),
        ("spec.transform.derive[1] ('b'), which comes later", "no cycles"),
        "spec.transform.derive[0].expr",
    ),
    SpecCase(
        "derive-reads-itself",
        _with("spec.transform.derive", [{"name": "a", "expr": "a + 1"}]),
        ("reads itself",),
        "spec.transform.derive[0].expr",
    ),
    SpecCase(
        "derive-reads-an-unknown-column",
        _with("spec.transform.derive", [{"name": "a", "expr": "ghost + 1"}]),
        ("unknown column 'ghost'",),
        "spec.transform.derive[0].expr",
    ),
    SpecCase(
        "1mb-string",
        _with("spec.source.uri", "x" * 1_000_000),
        ("a 1,000,000-character value",),
        "spec.source.uri",
    ),
    SpecCase(
        "10k-element-list",
        _with("spec.source.nullMarkers", [str(i) for i in range(10_000)]),
        ("a list of 10,000 items",),
        "spec.source.nullMarkers",
    ),
    SpecCase(
        "yaml-list-not-a-mapping", "- a\n- b\n", ("document 1 is a list, not a mapping",), "", has_line=False
    ),
    SpecCase("yaml-syntax-error", "spec: [1, 2\nkind: x\n", ("not valid YAML",), ""),
    SpecCase(
        "two-documents",
        yaml.safe_dump(SPEC_OK) + "---\n" + yaml.safe_dump(SPEC_OK),
        ("more than one PipelineRun",),
        "kind",
        has_line=False,
        run_only=True,
    ),
    SpecCase("billion-laughs", BILLION_LAUGHS, ("refused: more than 100,000 values", "aliases"), ""),
    SpecCase("nested-too-deep", "a: " + "[" * 3000 + "]" * 3000 + "\n", ("nested more than 64",), ""),
    SpecCase(
        "duplicate-key",
        yaml.safe_dump(SPEC_OK) + "kind: PipelineRun\n",
        ("key 'kind' appears twice",),
        "",
    ),
    SpecCase(
        "python-object-tag",
        "!!python/object/apply:os.system ['true']\n",
        ("not valid YAML", "could not determine a constructor"),
        "",
    ),
    SpecCase(
        "not-utf8",
        yaml.safe_dump(SPEC_OK).encode() + "# caf\xe9\n".encode("latin-1"),
        ("not UTF-8 text",),
        "",
        has_line=False,
    ),
    SpecCase("empty-spec", "", ("no document",), "", has_line=False),
    SpecCase(
        "statement-in-a-filter",
        _with("spec.transform.filter", "qty > 0; DROP TABLE keep.sentinel"),
        ("one expression only",),
        "spec.transform.filter",
    ),
    SpecCase(
        "quote-is-the-delimiter",
        _with("spec.source.quote", ","),
        ("is also the delimiter",),
        "spec.source",
    ),
    SpecCase(
        "codec-that-is-not-a-text-encoding",
        _with("spec.source.encoding", "rot13"),
        ("'rot13' is a codec, not a text encoding",),
        "spec.source.encoding",
    ),
    SpecCase(
        "expectation-column-list-not-a-list",
        _with(
            "spec.validate",
            {
                "expectations": [
                    {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": 5}}
                ]
            },
        ),
        ("must be a list of column names",),
        "spec.validate.expectations[0].kwargs.column_list",
    ),
    SpecCase(
        "unclosed-quote-in-a-filter",
        _with("spec.transform.filter", "name = 'abc"),
        ("does not parse", "is not closed"),
        "spec.transform.filter",
    ),
    SpecCase(
        "file-function-in-a-derive",
        _with("spec.transform.derive", [{"name": "x", "expr": "read_csv('/etc/passwd')"}]),
        ("read_csv is not allowed",),
        "spec.transform.derive[0].expr",
    ),
    SpecCase(
        "subquery-in-a-metric",
        _with(
            "spec.aggregate",
            [{"output": "bds.x", "metrics": [{"name": "n", "agg": "sum", "expr": "(SELECT 1)"}]}],
        ),
        ("SUBQUERY is not allowed",),
        "spec.aggregate[0].metrics[0].expr",
    ),
]


def _write(folder: Path, case: SpecCase) -> Path:
    path = folder / f"{case.id}.yaml"
    if isinstance(case.text, bytes):
        path.write_bytes(case.text)
    else:
        path.write_text(case.text, encoding="utf-8")
    (folder / "data.csv").write_bytes(b"id,name,qty\n1,a,2\n")
    return path


def _sentinel(workdir: Path) -> None:
    con = duckdb.connect(str(workdir / "warehouse.duckdb"))
    con.execute("CREATE SCHEMA keep; CREATE TABLE keep.sentinel AS SELECT 42 AS answer")
    con.close()


@pytest.mark.parametrize("case", SPEC_CASES, ids=[c.id for c in SPEC_CASES])
def test_malformed_spec_is_refused_before_anything_runs(
    case: SpecCase, tmp_path: Path, workdir: Path
) -> None:
    spec = _write(tmp_path, case)
    _sentinel(workdir)

    result = run_cli("run", str(spec), "--workdir", str(workdir))

    assert result.code == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert f"{case.id}.yaml" in result.stderr
    if case.has_line:
        assert re.search(rf"{case.id}\.yaml:[0-9]+: ", result.stderr), result.stderr
    assert case.where in result.stderr
    for part in case.says:
        assert part in result.stderr
    assert table_names(workdir) == {"keep.sentinel"}
    assert query(workdir, "SELECT answer FROM keep.sentinel") == [(42,)]


def test_check_reports_every_malformed_spec_with_its_path(tmp_path: Path) -> None:
    paths = [_write(tmp_path, case) for case in SPEC_CASES]

    result = run_cli("check", *map(str, paths))

    assert result.code == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stdout.splitlines()
    for case, path in zip(SPEC_CASES, paths, strict=True):
        mine = [line for line in lines if line.startswith(f"{path}:")]
        if case.run_only:
            assert mine == [f"{path}: ok"]
            continue
        assert any(case.where in line and case.says[0] in line for line in mine), mine


def test_failure_in_a_later_stage_keeps_only_the_finished_stages_tables(
    tmp_path: Path, workdir: Path
) -> None:
    (tmp_path / "data.csv").write_bytes(b"id,name,qty\n1,abc,2\n")
    doc = _spec("data.csv", COLUMNS, {})
    doc["spec"]["transform"] = {
        "derive": [{"name": "n", "expr": "CAST(name AS INT64)"}],
        "output": {"table": "tds.items"},
    }
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")

    result = run_cli("run", str(spec), "--workdir", str(workdir), "--output", "json")

    assert result.code == 1
    assert "Traceback" not in result.stderr + result.stdout
    stages = {s["name"]: s["state"] for s in result.summary["stages"]}
    assert stages["load"] == "Succeeded" and stages["transform"] == "Failed"
    assert result.summary["reason"] == "ExpressionFailed"
    assert "spec.transform.derive[0].expr: failed on the data" in result.summary["message"]
    assert "'abc'" in result.summary["message"]
    assert table_names(workdir) == {RAW, REJECTS}
