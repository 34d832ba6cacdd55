"""CSV files to a typed Arrow table and a table of rejected rows, with DuckDB doing the reading and typing.

Every cell is read as text first, so that a cell that fails typing is reported with its file, row,
column, rule and value instead of failing the whole file. Rows are numbered from 1 after the header
(``row``) in each file; structural errors (too many or too few columns, an unterminated quote) come
from DuckDB's own rejects with the row's text as read.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from beam.storage import StagedFile, StorageError, stage_files
from controller.spec import Column, ColumnType, Source

ROW_COL = "__dataops_row"
FILE_COL = "__dataops_file"
_NEVER_NULL = "\x01dataops-never-null\x01"
_UTF8 = {"utf-8", "utf8", "utf_8"}

REJECT_SCHEMA = pa.schema(
    [
        ("file", pa.string()),
        ("row_number", pa.int64()),
        ("column_name", pa.string()),
        ("rule", pa.string()),
        ("value", pa.string()),
        ("message", pa.string()),
        ("line_text", pa.string()),
    ]
)

DUCKDB_TYPE = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INT64: "BIGINT",
    ColumnType.NUMERIC: "DECIMAL(38,9)",
    ColumnType.FLOAT64: "DOUBLE",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.DATE: "DATE",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
}


class SourceError(Exception):
    """The source cannot be read at all (missing file, bad encoding, wrong header, ...)."""


@dataclass(frozen=True)
class CsvRead:
    typed: pa.Table  # spec columns in order, plus ROW_COL and FILE_COL
    rejects: pa.Table  # REJECT_SCHEMA, one row per (row, column, rule)
    rows_total: int  # data rows seen, good and bad
    files: tuple[str, ...]
    headers: tuple[str, ...] = ()  # each file's header line as read (empty without a header)
    file_rows: tuple[int, ...] = ()  # data rows seen in each file, good and bad
    generations: tuple[int | None, ...] = ()  # each object's generation read (None: a local file)


def snake_case(header: str) -> str:
    """``ResourceGroup`` -> ``resource_group``, ``Resource ID`` -> ``resource_id``, ``subscriptionId`` ->
    ``subscription_id``."""
    s = re.sub(r"[^0-9A-Za-z]+", "_", header.strip())
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return re.sub(r"_+", "_", s).strip("_").lower()


def _open_text(path: str, encoding: str, errors: str = "strict") -> io.TextIOWrapper:
    raw = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding=encoding, errors=errors, newline="")


def _check_encoding(encoding: str) -> str:
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise SourceError(f"spec.source.encoding {encoding!r} is not a known encoding") from None
    if not getattr(info, "_is_text_encoding", True):  # base64, rot13, zlib: codecs, not text encodings
        raise SourceError(f"spec.source.encoding {encoding!r} is not a text encoding (utf-8, latin-1, ...)")
    return info.name


# Files that are not text at all, told by their first bytes (a renamed file is a common mistake).
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed: name it *.gz (it is then read without unpacking)"),
    (b"\x89PNG", "a PNG image, not CSV text"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook?), not CSV text: export it as CSV"),
    (b"%PDF", "a PDF document, not CSV text"),
    (b"PAR1", "a Parquet file, not CSV text"),
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_OTHER_DELIMITERS = (";", "\t", "|", ",")
_UNQUOTED = "a quoted value is not closed, or text follows its closing quote"


def _sniff(path: str, encoding: str, label: str | None = None) -> None:
    """Refuse a binary file, or a UTF-16/32 file read as UTF-8, with what it is and what to set."""
    if path.endswith(".gz"):
        return
    shown = label or path
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise SourceError(f"{shown}: cannot be read: {exc}") from None
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise SourceError(f"{shown}: row 1 (header): the file is {what}")
    if encoding in {codecs.lookup(e).name for e in _UTF8}:
        for bom, name in _BOMS:
            if head.startswith(bom):
                raise SourceError(
                    f"{shown}: row 1 (header): the file starts with a {name} byte order mark but "
                    f"spec.source.encoding is {encoding}; set spec.source.encoding: {name}"
                )


def _read_header(path: str, source: Source, encoding: str, label: str | None = None) -> list[str] | None:
    """The first record of the file, or None when the file has no record at all (``label`` names the
    file in messages: its URI as the user wrote it)."""
    name = label or path
    _sniff(path, encoding, name)
    try:
        with _open_text(path, encoding, errors="replace") as fh:
            reader = csv.reader(
                fh,
                delimiter=source.delimiter,
                quotechar=source.quote or None,
                doublequote=source.escape == source.quote,
                escapechar=None if source.escape in ("", source.quote) else source.escape,
            )
            first = next(reader, None)
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{name}: row 1 (header): not valid {encoding} (byte 0x{exc.object[exc.start]:02x});"
            " set spec.source.encoding to the file's encoding"
        ) from None
    except UnicodeError as exc:  # e.g. utf-16 with no byte order mark
        raise SourceError(
            f"{name}: row 1 (header): not valid {encoding} ({exc}); set spec.source.encoding to the file's"
            f" encoding ({encoding}-le or {encoding}-be when it has no byte order mark)"
            if encoding.startswith(("utf-16", "utf-32"))
            else f"{name}: row 1 (header): not valid {encoding} ({exc}); set spec.source.encoding"
        ) from None
    except (OSError, EOFError, csv.Error) as exc:
        raise SourceError(f"{name}: cannot be read: {exc}") from None
    if first is None:
        return None
    if any("\ufffd" in h for h in first):
        raise SourceError(
            f"{name}: row 1 (header): not valid {encoding}; set spec.source.encoding to the file's encoding"
        )
    if first and first[0].startswith("\ufeff"):
        first[0] = first[0][1:]
    if source.header and all(not h.strip() for h in first):
        raise SourceError(
            f"{path}: row 1 (header): is blank; with header: true the first line must name the columns"
        )
    if "\x00" in "".join(first):
        raise SourceError(f"{path}: row 1 (header): contains a NUL byte (\\x00); is this a text file?")
    return first


def _delimiter_hint(header: list[str], source: Source) -> str:
    """When the header is one field holding another usual delimiter, the delimiter is probably wrong."""
    if len(header) != 1:
        return ""
    for other in _OTHER_DELIMITERS:
        if other != source.delimiter and other in header[0]:
            return (
                f"; the header is one field holding {other!r}: is the file delimited by {other!r}? "
                f"(spec.source.delimiter is {source.delimiter!r})"
            )
    return ""


def map_columns(path: str, header: list[str], source: Source) -> list[int]:
    """For each spec column, the index of the header it is read from."""
    if not source.header:
        if len(header) != len(source.columns):
            raise SourceError(
                f"{path}: row 1 has {len(header)} fields but spec.source.columns declares "
                f"{len(source.columns)} (header: false maps columns by position)"
            )
        return list(range(len(source.columns)))
    names = [h.strip() for h in header]
    keys = [snake_case(n) if source.header_case == "snake" else n for n in names]
    problems = []
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k.lower() in seen:
            problems.append(f"headers {names[seen[k.lower()]]!r} and {names[i]!r} both map to {k!r}")
        seen.setdefault(k.lower(), i)
    out = []
    for j, col in enumerate(source.columns):
        wanted = col.from_ if col.from_ is not None else col.name
        if col.from_ is not None:
            idx = next((i for i, n in enumerate(names) if n == wanted), None)
            idx = (
                idx
                if idx is not None
                else next((i for i, n in enumerate(names) if n.lower() == wanted.lower()), None)
            )
        else:
            idx = next((i for i, k in enumerate(keys) if k == wanted), None)
            idx = idx if idx is not None else seen.get(wanted.lower())
        if idx is None:
            field = f"spec.source.columns[{j}]" + (".from" if col.from_ is not None else ".name")
            problems.append(
                f"{field}: column {col.name!r} reads header {wanted!r}, which the header lacks "
                f"(header: {', '.join(repr(n) for n in names)})"
            )
        out.append(idx if idx is not None else -1)
    if problems:
        raise SourceError(f"{path}: wrong header: " + "; ".join(problems) + _delimiter_hint(header, source))
    return out


def _typing_sql(col: Column, v: str) -> tuple[str, str]:
    """(typed expression, error condition) for a cell ``v`` already NULL when it is a null marker."""
    t = col.type
    tv = f"trim({v})"
    if t == ColumnType.STRING:
        return v, "false"
    if t == ColumnType.INT64:
        ok = f"regexp_full_match({tv}, '[+-]?[0-9]+')"
        typed = f"CASE WHEN {ok} THEN TRY_CAST({tv} AS BIGINT) END"
        return typed, f"{v} IS NOT NULL AND ({typed}) IS NULL"
    if t == ColumnType.BOOL:
        typed = (
            f"CASE WHEN lower({tv}) IN ('true','t','yes','y','1') THEN true "
            f"WHEN lower({tv}) IN ('false','f','no','n','0') THEN false END"
        )
        return typed, f"{v} IS NOT NULL AND ({typed}) IS NULL"
    if t == ColumnType.DATE:
        ok = f"regexp_full_match({tv}, '[0-9]{{4}}-[0-9]{{1,2}}-[0-9]{{1,2}}')"
        typed = f"CASE WHEN {ok} THEN TRY_CAST({tv} AS DATE) END"
        return typed, f"{v} IS NOT NULL AND ({typed}) IS NULL"
    typed = f"TRY_CAST({tv} AS {DUCKDB_TYPE[t]})"
    return typed, f"{v} IS NOT NULL AND ({typed}) IS NULL"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _FileReader:
    def __init__(self, con: duckdb.DuckDBPyConnection, source: Source, tmpdir: Path) -> None:
        self.con = con
        self.source = source
        self.tmpdir = tmpdir
        self.encoding = _check_encoding(source.encoding)
        self.headers: list[str] = []
        self.widths: list[list[str]] = []

    def _x(self, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def _utf8_path(self, path: str, n: int, label: str) -> str:
        """DuckDB reads UTF-8; any other encoding is decoded (strictly) into a UTF-8 copy first."""
        if self.encoding in {codecs.lookup(e).name for e in _UTF8}:
            return path
        out = self.tmpdir / f"decoded-{n}.csv"
        line = 1
        try:
            with _open_text(path, self.encoding) as src, open(out, "w", encoding="utf-8", newline="") as dst:
                for chunk in iter(lambda: src.read(1 << 20), ""):
                    dst.write(chunk)
                    line += chunk.count("\n")
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"{label}: near line {line}: not valid {self.encoding} "
                f"(byte 0x{exc.object[exc.start]:02x}); set spec.source.encoding"
            ) from None
        except UnicodeError as exc:
            raise SourceError(
                f"{path}: near line {line}: not valid {self.encoding} ({exc}); set spec.source.encoding"
            ) from None
        return str(out)

    def _lf_path(self, path: str, n: int) -> str | None:
        """DuckDB reads one kind of line ending per file; a file mixing CRLF and LF (two files
        concatenated, an edited export) is copied with LF endings. None when it does not mix them."""
        out = self.tmpdir / f"lf-{n}.csv"
        crlf = lf = False
        with (
            _open_text(path, "utf-8", errors="surrogateescape") as src,
            open(out, "w", encoding="utf-8", errors="surrogateescape", newline="") as dst,
        ):
            for line in src:
                if line.endswith("\r\n"):
                    crlf = True
                    line = line[:-2] + "\n"
                elif line.endswith("\n"):
                    lf = True
                dst.write(line)
        return str(out) if crlf and lf else None

    def read(self, n: int, path: str, label: str | None = None) -> tuple[str, str, int]:
        """Read one file into temp tables; returns (typed table name, rejects table name, rows seen).

        ``path`` is read; ``label`` (default: ``path``) names the file in rejects and messages.
        """
        label = label or path
        src = self.source
        header = _read_header(path, src, self.encoding, label)
        if header is None:
            raise SourceError(f"{label}: the file is empty (no header, no rows)")
        mapping = map_columns(label, header, src)
        self.headers.append(_csv_line(header, src) if src.header else "")
        self.widths.append(header)
        width = len(header)
        readable = self._utf8_path(path, n, label)
        cols = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
        escape = src.escape if src.escape else src.quote
        rejects_t, rejects_s, raw_t = f"rejects_{n}", f"rejects_scan_{n}", f"raw_{n}"
        opts = (
            f"header={str(src.header).lower()}, delim={_lit(src.delimiter)}, quote={_lit(src.quote)}, "
            f"escape={_lit(escape)}, auto_detect=false, columns={cols}, nullstr={_lit(_NEVER_NULL)}, "
            f"store_rejects=true, rejects_table={_lit(rejects_t)}, rejects_scan={_lit(rejects_s)}, "
            "max_line_size=33554432, parallel=true"
        )
        try:
            self._x(f"CREATE TEMP TABLE {raw_t} AS SELECT * FROM read_csv({_lit(readable)}, {opts})")
        except duckdb.Error as exc:
            lf = self._lf_path(readable, n) if "invalid state" in str(exc) else None
            if lf is None:
                raise SourceError(f"{label}: cannot be read as CSV: {str(exc).splitlines()[0]}") from None
            self._x(f"DROP TABLE IF EXISTS {rejects_t}")
            self._x(f"DROP TABLE IF EXISTS {rejects_s}")
            self._x(f"CREATE TEMP TABLE {raw_t} AS SELECT * FROM read_csv({_lit(lf)}, {opts})")
        offset = 1 if src.header else 0
        errs = self.con.execute(
            f"SELECT line - {offset} AS row, error_type, csv_line, error_message, column_idx FROM {rejects_t}"
            " ORDER BY line"
        ).fetchall()
        for row, etype, _text, msg, _ in errs:
            if etype == "INVALID ENCODING":
                raise SourceError(
                    f"{label}: row {row}: not valid {self.encoding}: {msg.split('.')[0]}; "
                    "set spec.source.encoding to the file's encoding"
                )
        self._x(
            f"CREATE TEMP TABLE bad_rows_{n} AS SELECT DISTINCT line - {offset} AS row, "
            f"lower(replace(first(error_type), ' ', '_')) AS rule, first(csv_line) AS line_text, "
            f"CASE WHEN first(error_type) = 'UNQUOTED VALUE' THEN {_lit(_UNQUOTED)} "
            "ELSE first(error_message) END AS msg "
            f"FROM {rejects_t} GROUP BY ALL"
        )
        self._x(
            f"CREATE TEMP TABLE gaps_{n} AS SELECT g, max(k) AS k FROM (SELECT row - 1 - "
            f"(row_number() OVER (ORDER BY row) - 1) AS g, row_number() OVER (ORDER BY row) AS k "
            f"FROM (SELECT DISTINCT row FROM bad_rows_{n})) GROUP BY g"
        )
        has_bad = bool(self._x(f"SELECT count(*) FROM bad_rows_{n}")[0][0])
        numbered = (
            f"SELECT r.*, r.rowid + 1 + coalesce(gp.k, 0) AS {ROW_COL} FROM {raw_t} r "
            f"ASOF LEFT JOIN gaps_{n} gp ON r.rowid >= gp.g"
            if has_bad
            else f"SELECT *, rowid + 1 AS {ROW_COL} FROM {raw_t}"
        )
        markers = ", ".join(_lit(m.strip()) for m in src.null_markers)
        cells, typed_cols, checks, names = [], [], [], []
        for j, col in enumerate(src.columns):
            raw = f"c{mapping[j]}"
            cell = f"CASE WHEN trim({raw}) IN ({markers}) THEN NULL ELSE {raw} END" if markers else raw
            v, t = _q(f"v{j}"), _q(f"t{j}")
            cells.append(f"{cell} AS {v}")
            typed, _ = _typing_sql(col, v)
            typed_cols.append(f"({typed})::{DUCKDB_TYPE[col.type]} AS {t}")
            failed = "false" if col.type == ColumnType.STRING else f"{v} IS NOT NULL AND {t} IS NULL"
            required = f"WHEN {v} IS NULL THEN 'required' " if col.required else ""
            # BigQuery refuses a NUL character in a CSV load: the row is set aside here too.
            nul = f"WHEN contains({v}, chr(0)) THEN 'nul_byte' " if col.type == ColumnType.STRING else ""
            checks.append(
                (j, col, f"CASE {nul}WHEN {failed} THEN {_lit('type:' + col.type.value)} {required}END")
            )
            names.append(f"{t} AS {_q(col.name)}")
        err_cols = ", ".join(f"{expr} AS {_q('e' + str(j))}" for j, _, expr in checks)
        raw_fields = ", ".join(f"c{i}" for i in range(width))
        v_cols = ", ".join(_q(f"v{j}") for j in range(len(src.columns)))
        any_err = " OR ".join(f"{_q('e' + str(j))} IS NOT NULL" for j, _, _ in checks) or "false"
        # One pass: cells (null markers) -> typed values -> error codes, materialized once.
        self._x(
            f"CREATE TEMP TABLE checked_{n} AS SELECT *, {err_cols} FROM ("
            f"SELECT {ROW_COL}, {v_cols}, {', '.join(typed_cols)}, {raw_fields} FROM ("
            f"SELECT {ROW_COL}, {', '.join(cells)}, {raw_fields} FROM ({numbered})))"
        )
        self._x(f"CREATE TEMP TABLE errors_{n} AS SELECT * FROM checked_{n} WHERE {any_err}")
        order = f" ORDER BY {ROW_COL}" if has_bad else ""
        self._x(
            f"CREATE TEMP VIEW typed_{n} AS SELECT {', '.join(names)}, {ROW_COL}, {_lit(label)} AS {FILE_COL} "
            f"FROM checked_{n} WHERE NOT ({any_err}){order}"
        )
        self._collect_rejects(n, label, checks, width)
        total = self._x(f"SELECT (SELECT count(*) FROM {raw_t}) + (SELECT count(*) FROM bad_rows_{n})")
        return f"typed_{n}", f"rej_{n}", int(total[0][0])  # type: ignore[call-overload]

    def _collect_rejects(self, n: int, path: str, checks: list[tuple[int, Column, str]], width: int) -> None:
        parts = [
            f"SELECT {_lit(path)} AS file, row, NULL::VARCHAR AS column, rule, NULL::VARCHAR AS value, "
            f"msg AS message, line_text FROM bad_rows_{n}"
        ]
        for j, col, _ in checks:
            e = _q("e" + str(j))
            parts.append(
                f"SELECT {_lit(path)}, {ROW_COL}, {_lit(col.name)}, {e}, {_q('v' + str(j))}, "
                f"CASE WHEN {e} = 'required' THEN {_lit(col.name + ' is required but empty')} "
                f"WHEN {e} = 'nul_byte' THEN {_lit(col.name + ': contains a NUL byte (0x00), which BigQuery refuses')} ELSE "
                f"{_lit(col.name + ': ')} || coalesce({_lit(chr(39))} || {_q('v' + str(j))} || {_lit(chr(39))}, "
                f"'NULL') || {_lit(' is not a valid ' + col.type.value)} END, NULL FROM errors_{n} "
                f"WHERE {e} IS NOT NULL"
            )
        self.con.execute(f"CREATE TEMP TABLE rej_{n} AS " + " UNION ALL ".join(parts)).fetchall()
        missing = self.con.execute(
            f"SELECT DISTINCT r.row FROM rej_{n} r WHERE r.line_text IS NULL"
        ).fetchall()
        if not missing:
            return
        rows = [m[0] for m in missing]
        fields = ", ".join(f"c{i}" for i in range(width))
        got = self.con.execute(
            f"SELECT {ROW_COL}, {fields} FROM errors_{n} WHERE {ROW_COL} IN (SELECT unnest(?))", [rows]
        ).fetchall()
        texts = {r[0]: _csv_line(r[1:], self.source) for r in got}
        self.con.register(f"texts_{n}", pa.table({"row": list(texts), "t": list(texts.values())}))
        self._x(
            f"UPDATE rej_{n} SET line_text = (SELECT t FROM texts_{n} WHERE texts_{n}.row = rej_{n}.row) "
            "WHERE line_text IS NULL"
        )


def _csv_line(fields: Sequence[str | None], source: Source) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=source.delimiter, quotechar=source.quote or '"', lineterminator="")
    writer.writerow(["" if f is None or f == _NEVER_NULL else f for f in fields])
    return buf.getvalue()


class CsvSource:
    """An open CSV source: read once, then ask for the original text of some rows (while open).

    with CsvSource(source, tmpdir) as src:
        read = src.read()
        texts = src.original_lines(path, [12, 40])
    """

    def __init__(self, source: Source, tmpdir: Path) -> None:
        self.source = source
        self.tmpdir = tmpdir
        self.files: list[str] = []  # each file's URI as named in messages and rejects
        self.staged: list[StagedFile] = []
        self.con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> CsvSource:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'").fetchall()
        self.con.execute("SET enable_progress_bar = false").fetchall()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        shutil.rmtree(self.tmpdir / "objects", ignore_errors=True)  # downloaded copies of gs:// objects

    def read(self) -> CsvRead:
        """Every file of the source into one typed table and one table of rejects."""
        assert self.con is not None, "use CsvSource as a context manager"
        con = self.con
        try:
            self.staged = stage_files(self.source.uri, self.tmpdir / "objects")
        except StorageError as exc:
            raise SourceError(str(exc)) from None
        self.files = [f.uri for f in self.staged]
        reader = _FileReader(con, self.source, self.tmpdir)
        typed_names, reject_names, total = [], [], 0
        self.file_rows: list[int] = []
        for n, staged in enumerate(self.staged):
            t, r, seen = reader.read(n, staged.path, staged.uri)
            self.file_rows.append(seen)
            typed_names.append(t)
            reject_names.append(r)
            total += seen
        typed = con.sql(" UNION ALL ".join(f"SELECT * FROM {t}" for t in typed_names)).to_arrow_table()
        rejects = con.sql(
            " UNION ALL ".join(f"SELECT * FROM {r}" for r in reject_names) + ' ORDER BY file, row, "column"'
        ).to_arrow_table()
        self.widths = [len(h) for h in reader.widths]
        rejects = rejects.rename_columns(REJECT_SCHEMA.names)
        return CsvRead(
            typed=typed,
            rejects=rejects.cast(REJECT_SCHEMA),
            rows_total=total,
            files=tuple(self.files),
            headers=tuple(reader.headers),
            file_rows=tuple(self.file_rows),
            generations=tuple(f.generation for f in self.staged),
        )

    def original_lines(self, path: str, rows: Sequence[int]) -> dict[int, str]:
        """The text of some rows of one file as read (for rows rejected after typing)."""
        assert self.con is not None, "use CsvSource as a context manager"
        n = self.files.index(path)
        fields = ", ".join(f"c{i}" for i in range(self.widths[n]))
        got = self.con.execute(
            f"SELECT {ROW_COL}, {fields} FROM checked_{n} WHERE {ROW_COL} IN (SELECT unnest(?))", [list(rows)]
        ).fetchall()
        return {int(r[0]): _csv_line(r[1:], self.source) for r in got}


def read_csv_source(source: Source, tmpdir: Path) -> CsvRead:
    """Read every file of the source into one typed table and one table of rejects."""
    with CsvSource(source, tmpdir) as src:
        return src.read()
