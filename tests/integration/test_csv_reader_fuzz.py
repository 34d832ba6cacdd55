"""Fuzzing the CSV reader: any bytes give a typed table and rejects, or one SourceError naming the file;
a random well-formed CSV comes back cell for cell, each bad row rejected with its number and rule, and
rows in = rows out + rows rejected."""

from __future__ import annotations

import csv
import io
import itertools
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from beam.io.csv_source import FILE_COL, ROW_COL, CsvRead, CsvSource, SourceError
from controller.spec import Source

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
COLUMNS = [{"name": "s"}, {"name": "n", "type": "INT64"}]
_count = itertools.count()


def read(folder: Path, data: bytes, **source: Any) -> CsvRead:
    n = next(_count)
    path = folder / f"f{n}.csv"
    path.write_bytes(data)
    spec = Source.model_validate({"uri": str(path), "columns": COLUMNS, **source})
    with CsvSource(spec, folder / f"tmp{n}") as src:
        return src.read()


def bad_rows(result: CsvRead) -> set[int]:
    return set(result.rejects.column("row_number").to_pylist())


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_are_read_or_refused_naming_the_file(tmp_path: Path, data: bytes) -> None:
    try:
        result = read(tmp_path, b"s,n\n" + data)
    except SourceError as exc:
        assert ".csv" in str(exc)
        return

    assert result.rows_total == result.typed.num_rows + len(bad_rows(result))
    assert all(r["rule"] and r["row_number"] >= 1 for r in result.rejects.to_pylist())


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]))
def test_any_bytes_in_any_encoding_are_read_or_refused(tmp_path: Path, data: bytes, encoding: str) -> None:
    try:
        result = read(tmp_path, data, encoding=encoding)
    except SourceError as exc:
        assert ".csv" in str(exc)
        return

    assert result.rows_total == result.typed.num_rows + len(bad_rows(result))


TEXT = st.text(alphabet=st.sampled_from([*"abcXYZ019 ,;\"'\n\t|\\", "é", "日", "\u00a0", "😀"]), max_size=12)
GOOD_INT = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str)
BAD_INT = st.sampled_from(["1.5", "abc", "9223372036854775808", "-9223372036854775809", "1e3", "0x10", "--1"])
ROW = st.one_of(
    st.tuples(st.just("good"), TEXT, GOOD_INT),
    st.tuples(st.just("null"), TEXT, st.just("")),
    st.tuples(st.just("bad"), TEXT, BAD_INT),
    st.tuples(st.just("extra"), TEXT, GOOD_INT),
    st.tuples(st.just("short"), TEXT, st.just("")),
)


def _csv(rows: list[tuple[str, str, str]], line_end: str) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=line_end)
    writer.writerow(["s", "n"])
    for kind, text, number in rows:
        if kind == "extra":
            writer.writerow([text, number, "surplus"])
        elif kind == "short":
            writer.writerow([text or "x"])
        else:
            writer.writerow([text, number])
    return buf.getvalue().encode("utf-8")


def _expected_text(text: str) -> str | None:
    """A cell of only spaces (any Unicode space separator, as DuckDB's trim) is the null marker ''."""
    return None if all(unicodedata.category(c) == "Zs" for c in text) else text


@FUZZ
@given(st.lists(ROW, min_size=1, max_size=25), st.sampled_from(["\n", "\r\n"]))
def test_random_csv_comes_back_cell_for_cell(
    tmp_path: Path, rows: list[tuple[str, str, str]], line_end: str
) -> None:
    result = read(tmp_path, _csv(rows, line_end))

    got = {r[ROW_COL]: r for r in result.typed.to_pylist()}
    rejected = {r["row_number"]: r["rule"] for r in result.rejects.to_pylist()}
    assert result.rows_total == len(rows) == len(got) + len(rejected)
    for number, (kind, text, value) in enumerate(rows, start=1):
        if kind in ("good", "null"):
            assert got[number]["s"] == _expected_text(text), (number, text)
            assert got[number]["n"] == (int(value) if value else None)
            assert got[number][FILE_COL].endswith(".csv")
        elif kind == "bad":
            assert rejected[number] == "type:INT64", (number, value)
        elif kind == "extra":
            assert rejected[number] == "too_many_columns"
        else:
            assert rejected[number] == "missing_columns"


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "delimiter": st.sampled_from([",", ";", "\t", "|", "a", "\n", " "]),
        "quote": st.sampled_from(['"', "'", ""]),
        "escape": st.sampled_from(['"', "\\", ""]),
        "encoding": st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252", "ascii", "rot13", "nope"]),
        "header": st.booleans(),
        "nullMarkers": st.lists(st.sampled_from(["", "NULL", "'", '"', "\\", " "]), max_size=3),
        "headerCase": st.sampled_from(["asis", "snake"]),
    },
)


@FUZZ
@given(OPTIONS, st.binary(max_size=200))
def test_any_source_options_are_refused_by_the_spec_or_read(
    tmp_path: Path, options: dict[str, Any], data: bytes
) -> None:
    try:
        result = read(tmp_path, b"s,n\n1,2\n" + data, **options)
    except ValidationError as exc:  # the spec refuses it before any file is opened
        assert exc.errors()
        return
    except SourceError as exc:
        assert "spec.source" in str(exc) or ".csv" in str(exc)
        return

    assert result.rows_total == result.typed.num_rows + len(bad_rows(result))
