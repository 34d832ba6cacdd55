"""The BigQuery double's engine: datasets, tables, query and load jobs on one DuckDB file.

BigQuery ``dataset.table`` is DuckDB schema ``dataset``, table ``table`` (the project part of a name
is dropped), as in the embedded warehouse. Query text is BigQuery SQL, parsed and written for DuckDB by
sqlglot; ``@name`` parameters become DuckDB's ``$name``. Scripts (:mod:`tests.doubles.bigquery_script`)
run statement by statement on one connection, so ``BEGIN TRANSACTION`` ... ``COMMIT TRANSACTION`` is a
DuckDB transaction. Every error is an :class:`ApiError` in BigQuery's shape (code, reason, message).

Bytes: a table's size is estimated as BigQuery counts logical bytes (8 per INT64/FLOAT64/TIMESTAMP/DATE
value, 16 per NUMERIC, 1 per BOOL, 2 + length per STRING); a query processes the whole of every table it
names, and is billed that rounded up to a MiB, at least 10 MiB (on-demand pricing). Loads are free.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from tests.doubles.bigquery_script import (
    Block,
    If,
    Node,
    Raise,
    ScriptSyntaxError,
    Statement,
    Transaction,
    is_script,
    parse_script,
)
from tests.doubles.bigquery_sources import read_source, source_files
from tests.doubles.bigquery_types import (
    WIDTH,
    ApiError,
    Outcome,
    arrow_to_bq,
    columns_ddl,
    field_of,
    invalid,
    ms,
    parameter_value,
)


def table_names(tree: exp.Expression) -> set[tuple[str, str]]:
    """``(dataset, table)`` of every table a statement names (CTE names excluded)."""
    ctes = {c.alias_or_name for c in tree.find_all(exp.CTE)}
    found = set()
    for t in tree.find_all(exp.Table):
        if t.name and t.db and t.name not in ctes:
            found.add((t.db, t.name))
    return found


def to_duckdb(tree: exp.Expression) -> str:
    """The statement for DuckDB: the project part of names dropped, ``@name`` as ``$name``, and a number
    with a point or an exponent a FLOAT64 as in BigQuery (DuckDB would read a DECIMAL)."""
    tree = tree.copy()
    for t in tree.find_all(exp.Table):
        if t.args.get("catalog") is not None:
            t.set("catalog", None)
    for literal in list(tree.find_all(exp.Literal)):
        if not literal.is_string and re.search(r"[.eE]", literal.this):
            literal.replace(exp.cast(literal.copy(), "DOUBLE"))
    return tree.sql(dialect="duckdb")


class Engine:
    """Datasets and tables in one DuckDB file, and the jobs that run on them. Thread-safe: one lock."""

    def __init__(
        self, path: Path, project: str, location: str = "US", gcs_endpoint: str | None = None
    ) -> None:
        self.path, self.project, self.location = Path(path), project, location
        self.gcs_endpoint = gcs_endpoint
        self.lock = threading.RLock()
        self.con = duckdb.connect(str(self.path))
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(
            "SET python_enable_replacements = false"
        )  # a name is a table, never a Python variable
        self.datasets: dict[str, dict[str, Any]] = {}
        self.tables: dict[tuple[str, str], dict[str, Any]] = {}

    def close(self) -> None:
        with self.lock:
            self.con.close()

    def sql(self, text: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """DuckDB SQL straight on the double's file (for tests' assertions)."""
        with self.lock:
            return self.con.execute(text, params or []).fetchall()

    # ---- names --------------------------------------------------------------------------------------

    def table_id(self, dataset: str, table: str) -> str:
        return f"{self.project}:{dataset}.{table}"

    def dataset_exists(self, dataset: str) -> bool:
        rows = self.sql("SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [dataset])
        return bool(rows[0][0])

    def table_exists(self, dataset: str, table: str) -> bool:
        rows = self.sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
            [dataset, table],
        )
        return bool(rows[0][0])

    def require_dataset(self, dataset: str) -> None:
        if not self.dataset_exists(dataset):
            raise ApiError(404, "notFound", f"Not found: Dataset {self.project}:{dataset}")

    def require_table(self, dataset: str, table: str) -> None:
        self.require_dataset(dataset)
        if not self.table_exists(dataset, table):
            raise ApiError(
                404,
                "notFound",
                f"Not found: Table {self.table_id(dataset, table)} was not found in location {self.location}",
            )

    # ---- datasets -----------------------------------------------------------------------------------

    def dataset_resource(self, dataset: str) -> dict[str, Any]:
        self.require_dataset(dataset)
        meta = self.datasets.setdefault(dataset, {"creationTime": ms()})
        return {
            "kind": "bigquery#dataset",
            "id": f"{self.project}:{dataset}",
            "datasetReference": {"projectId": self.project, "datasetId": dataset},
            "location": meta.get("location", self.location),
            "labels": meta.get("labels", {}),
            "creationTime": meta["creationTime"],
            "lastModifiedTime": meta["creationTime"],
            "etag": "e" + meta["creationTime"],
        }

    def create_dataset(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        dataset = resource["datasetReference"]["datasetId"]
        with self.lock:
            if self.dataset_exists(dataset):
                raise ApiError(409, "duplicate", f"Already Exists: Dataset {self.project}:{dataset}")
            self.con.execute(f'CREATE SCHEMA "{dataset}"')
            self.datasets[dataset] = {
                "creationTime": ms(),
                "labels": dict(resource.get("labels") or {}),
                "location": resource.get("location") or self.location,
            }
            return self.dataset_resource(dataset)

    def delete_dataset(self, dataset: str, contents: bool) -> None:
        with self.lock:
            self.require_dataset(dataset)
            if not contents and self.list_tables(dataset):
                raise ApiError(400, "resourceInUse", f"Dataset {self.project}:{dataset} is still in use")
            self.con.execute(f'DROP SCHEMA "{dataset}" CASCADE')
            self.datasets.pop(dataset, None)
            for key in [k for k in self.tables if k[0] == dataset]:
                del self.tables[key]

    # ---- tables -------------------------------------------------------------------------------------

    def list_tables(self, dataset: str) -> list[str]:
        rows = self.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [dataset]
        )
        return [r[0] for r in rows]

    def duck_schema(self, dataset: str, table: str) -> list[dict[str, Any]]:
        arrow = self.con.sql(f'SELECT * FROM "{dataset}"."{table}" LIMIT 0').to_arrow_table()
        return [{"name": f.name, "type": arrow_to_bq(f.type), "mode": "NULLABLE"} for f in arrow.schema]

    def table_bytes(self, dataset: str, table: str, schema: list[dict[str, Any]]) -> tuple[int, int]:
        strings = [f["name"] for f in schema if f["type"] in ("STRING", "BYTES", "JSON")]
        text = " + ".join(f'coalesce(sum(2 + octet_length(CAST("{c}" AS BLOB))), 0)' for c in strings) or "0"
        count, text_bytes = self.con.execute(f'SELECT count(*), {text} FROM "{dataset}"."{table}"').fetchone()
        fixed = sum(WIDTH.get(f["type"], 8) for f in schema if f["name"] not in strings)
        return int(count), int(count) * fixed + int(text_bytes)

    def table_resource(self, dataset: str, table: str) -> dict[str, Any]:
        with self.lock:
            self.require_table(dataset, table)
            meta = self.tables.setdefault((dataset, table), {"creationTime": ms()})
            schema = self.duck_schema(dataset, table)
            declared = {f["name"]: f for f in (meta.get("schema") or [])}
            schema = [declared.get(f["name"], f) for f in schema]
            rows, size = self.table_bytes(dataset, table, schema)
        resource: dict[str, Any] = {
            "kind": "bigquery#table",
            "id": self.table_id(dataset, table),
            "tableReference": {"projectId": self.project, "datasetId": dataset, "tableId": table},
            "schema": {"fields": schema},
            "numRows": str(rows),
            "numBytes": str(size),
            "type": "TABLE",
            "location": self.location,
            "creationTime": meta["creationTime"],
            "lastModifiedTime": meta.get("lastModifiedTime", meta["creationTime"]),
            "etag": "e" + meta.get("lastModifiedTime", meta["creationTime"]),
        }
        for key in ("timePartitioning", "clustering", "labels", "description", "rangePartitioning"):
            if meta.get(key):
                resource[key] = meta[key]
        if meta.get("streamingBuffer"):
            resource["streamingBuffer"] = meta["streamingBuffer"]
        return resource

    def create_table(self, dataset: str, resource: Mapping[str, Any]) -> dict[str, Any]:
        table = resource["tableReference"]["tableId"]
        fields = (resource.get("schema") or {}).get("fields") or []
        with self.lock:
            self.require_dataset(dataset)
            if self.table_exists(dataset, table):
                raise ApiError(409, "duplicate", f"Already Exists: Table {self.table_id(dataset, table)}")
            if not fields:
                raise ApiError(400, "invalid", "The double needs a schema to create a table")
            self.con.execute(f'CREATE TABLE "{dataset}"."{table}" ({columns_ddl(fields)})')
            self._record_table(dataset, table, fields, resource)
        return self.table_resource(dataset, table)

    def patch_table(self, dataset: str, table: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.require_table(dataset, table)
            meta = self.tables.setdefault((dataset, table), {"creationTime": ms()})
            for key in ("labels", "description", "clustering"):
                if key in patch:
                    meta[key] = patch[key]
            meta["lastModifiedTime"] = ms()
        return self.table_resource(dataset, table)

    def delete_table(self, dataset: str, table: str) -> None:
        with self.lock:
            self.require_table(dataset, table)
            self.con.execute(f'DROP TABLE "{dataset}"."{table}"')
            self.tables.pop((dataset, table), None)

    def list_rows(
        self, dataset: str, table: str, start: int, limit: int | None
    ) -> tuple[list[dict[str, Any]], list[list[Any]], int]:
        with self.lock:
            self.require_table(dataset, table)
            schema = self.table_resource(dataset, table)["schema"]["fields"]
            cap = "" if limit is None else f" LIMIT {int(limit)}"
            rows = self.con.execute(
                f'SELECT * FROM "{dataset}"."{table}" ORDER BY rowid{cap} OFFSET {int(start)}'
            ).fetchall()
            total = self.con.execute(f'SELECT count(*) FROM "{dataset}"."{table}"').fetchone()[0]
        return schema, [list(r) for r in rows], int(total)

    def stream_rows(self, dataset: str, table: str, rows: list[dict[str, Any]]) -> None:
        """``tabledata.insertAll``: the rows land in the table and in its streaming buffer, which blocks
        UPDATE, DELETE and MERGE on the table (BigQuery keeps them there for up to 90 minutes)."""
        with self.lock:
            self.require_table(dataset, table)
            data = pa.Table.from_pylist(rows)
            self.con.register("__streamed", data)
            try:
                self.con.execute(f'INSERT INTO "{dataset}"."{table}" BY NAME SELECT * FROM __streamed')
            finally:
                self.con.unregister("__streamed")
            meta = self.tables.setdefault((dataset, table), {"creationTime": ms()})
            buffered = int(meta.get("streamingBuffer", {}).get("estimatedRows", 0)) + len(rows)
            meta["streamingBuffer"] = {"estimatedRows": str(buffered), "oldestEntryTime": ms()}

    def _record_table(
        self, dataset: str, table: str, fields: list[dict[str, Any]], props: Mapping[str, Any]
    ) -> None:
        now = ms()
        meta = {"creationTime": now, "lastModifiedTime": now, "schema": [field_of(f) for f in fields]}
        for key in ("timePartitioning", "clustering", "labels", "description", "rangePartitioning"):
            if props.get(key):
                meta[key] = props[key]
        self.tables[(dataset, table)] = meta

    # ---- query jobs ---------------------------------------------------------------------------------

    def run_query(self, config: Mapping[str, Any]) -> Outcome:
        text = config.get("query", "")
        if config.get("useLegacySql"):
            raise invalid("The BigQuery double speaks GoogleSQL only (useLegacySql: false)")
        params = {p["name"]: parameter_value(p) for p in config.get("queryParameters") or [] if p.get("name")}
        try:
            nodes = parse_script(text)
        except ScriptSyntaxError as exc:
            raise invalid(f"Syntax error: {exc}") from None
        with self.lock:
            run = _ScriptRun(self, params)
            try:
                run.nodes(nodes)
                if run.in_transaction:
                    raise invalid("Transaction was never committed: COMMIT TRANSACTION is missing")
            except BaseException:
                if run.in_transaction:
                    self.con.execute("ROLLBACK")
                raise
            outcome = run.last or Outcome(statement_type="SCRIPT")
            if is_script(nodes):
                outcome.statement_type = "SCRIPT"
            outcome.bytes_processed = run.bytes_processed
            destination = config.get("destinationTable")
            if destination and outcome.rows is not None:
                self._write_result(destination, outcome, config)
        return outcome

    def _write_result(
        self, destination: Mapping[str, Any], outcome: Outcome, config: Mapping[str, Any]
    ) -> None:
        dataset, table = destination["datasetId"], destination["tableId"]
        self.require_dataset(dataset)
        names = [f["name"] for f in outcome.schema or []]
        data = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in outcome.rows or []])
        self.con.register("__result", data)
        try:
            self._write(dataset, table, "__result", outcome.schema or [], config)
        finally:
            self.con.unregister("__result")

    def statement(self, text: str, params: Mapping[str, Any]) -> Outcome:
        try:
            tree = sqlglot.parse_one(text, read="bigquery")
        except sqlglot.errors.ParseError as exc:
            raise invalid(f"Syntax error: {str(exc).splitlines()[0]}") from None
        processed = self._bytes_of(tree)
        self._refuse_streamed(tree)
        sql = to_duckdb(tree)
        used = {k: v for k, v in params.items() if re.search(rf"\${re.escape(k)}\b", sql)}
        missing = [m for m in re.findall(r"\$([A-Za-z_]\w*)", sql) if m not in params]
        if missing:
            raise invalid(f"Query parameter '{missing[0]}' not found")
        try:
            cursor = self.con.execute(sql, used)
            result = cursor.to_arrow_table() if cursor.description else None
        except duckdb.CatalogException as exc:
            raise self._catalog_error(str(exc), tree) from None
        except duckdb.Error as exc:
            raise invalid(_duck_message(exc)) from None
        kind = _statement_type(tree)
        outcome = Outcome(statement_type=kind, bytes_processed=processed)
        if kind in ("INSERT", "UPDATE", "DELETE", "MERGE"):
            outcome.dml_rows = (
                int(result.column(0)[0].as_py()) if result is not None and result.num_rows else 0
            )
        elif kind == "SELECT" and result is not None:
            outcome.schema = [
                {"name": f.name, "type": arrow_to_bq(f.type), "mode": "NULLABLE"} for f in result.schema
            ]
            outcome.rows = [list(r.values()) for r in result.to_pylist()]
        return outcome

    def _refuse_streamed(self, tree: exp.Expression) -> None:
        if not isinstance(tree, exp.Update | exp.Delete | exp.Merge):
            return
        target = tree.this if isinstance(tree.this, exp.Table) else tree.find(exp.Table)
        if target is not None and self.tables.get((target.db, target.name), {}).get("streamingBuffer"):
            raise invalid(
                f"UPDATE or DELETE statement over table {self.table_id(target.db, target.name)} would affect"
                " rows in the streaming buffer, which is not supported"
            )

    def _bytes_of(self, tree: exp.Expression) -> int:
        if isinstance(tree, exp.Create | exp.Drop) and tree.args.get("expression") is None:
            return 0
        total = 0
        for dataset, table in table_names(tree):
            if self.table_exists(dataset, table):
                schema = self.duck_schema(dataset, table)
                total += self.table_bytes(dataset, table, schema)[1]
        return total

    def _catalog_error(self, message: str, tree: exp.Expression) -> ApiError:
        for dataset, table in sorted(table_names(tree)):
            if not self.dataset_exists(dataset):
                return ApiError(
                    404,
                    "notFound",
                    f"Not found: Dataset {self.project}:{dataset} was not found in location {self.location}",
                )
            if not self.table_exists(dataset, table) and not isinstance(tree, exp.Create):
                return ApiError(
                    404,
                    "notFound",
                    f"Not found: Table {self.table_id(dataset, table)} was not found in location {self.location}",
                )
        return invalid(message.splitlines()[0])

    # ---- load jobs ----------------------------------------------------------------------------------

    def run_load(self, config: Mapping[str, Any], upload: bytes | None) -> Outcome:
        dest = config["destinationTable"]
        dataset, table = dest["datasetId"], dest["tableId"]
        fmt = (config.get("sourceFormat") or "CSV").upper()
        fields = [field_of(f) for f in (config.get("schema") or {}).get("fields") or []]
        with tempfile.TemporaryDirectory(prefix="bq-double-") as tmp:
            files = source_files(config, upload, Path(tmp), self.gcs_endpoint)
            size = sum(p.stat().st_size for p in files)
            source = read_source(fmt, files, fields, config)
            with self.lock:
                self.require_dataset(dataset)
                self.con.execute("BEGIN TRANSACTION")
                try:
                    self.con.execute(f"CREATE OR REPLACE TEMP VIEW __load AS {source}")
                    rows = int(self.con.execute("SELECT count(*) FROM __load").fetchone()[0])
                    for f in fields:
                        if f.get("mode") == "REQUIRED":
                            nulls = self.con.execute(
                                f'SELECT count(*) FROM __load WHERE "{f["name"]}" IS NULL'
                            ).fetchone()
                            if nulls[0]:
                                raise ApiError(400, "invalid", f"Required field {f['name']} cannot be null")
                    schema = fields or self._view_schema("__load")
                    self._write(dataset, table, "__load", schema, config, "WRITE_APPEND")
                    self.con.execute("DROP VIEW __load")
                    self.con.execute("COMMIT")
                except duckdb.Error as exc:
                    self.con.execute("ROLLBACK")
                    raise ApiError(
                        400, "invalid", f"Error while reading data: {_duck_message(exc)}"
                    ) from None
                except BaseException:
                    self.con.execute("ROLLBACK")
                    raise
        return Outcome(
            statement_type="LOAD",
            load={
                "inputFiles": str(len(files)),
                "inputFileBytes": str(size),
                "outputRows": str(rows),
                "outputBytes": str(size),
                "badRecords": "0",
            },
        )

    def _view_schema(self, view: str) -> list[dict[str, Any]]:
        arrow = self.con.sql(f"SELECT * FROM {view} LIMIT 0").to_arrow_table()
        return [{"name": f.name, "type": arrow_to_bq(f.type), "mode": "NULLABLE"} for f in arrow.schema]

    def _write(
        self,
        dataset: str,
        table: str,
        relation: str,
        schema: list[dict[str, Any]],
        config: Mapping[str, Any],
        default_write: str = "WRITE_EMPTY",
    ) -> None:
        """``relation`` into the table under the job's create and write dispositions."""
        name = f'"{dataset}"."{table}"'
        exists = self.table_exists(dataset, table)
        write = config.get("writeDisposition") or default_write
        if not exists and config.get("createDisposition") == "CREATE_NEVER":
            raise ApiError(404, "notFound", f"Not found: Table {self.table_id(dataset, table)}")
        if exists and write == "WRITE_EMPTY":
            count = self.con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            if count:
                raise ApiError(409, "duplicate", f"Already Exists: Table {self.table_id(dataset, table)}")
        if not exists or write == "WRITE_TRUNCATE":
            self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM {relation}")
            self._record_table(dataset, table, schema, config)
        else:
            self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM {relation}")
            self.tables.setdefault((dataset, table), {"creationTime": ms()})["lastModifiedTime"] = ms()


class _ScriptRun:
    """One script's execution: its transaction, the last result, the bytes it processed."""

    def __init__(self, engine: Engine, params: Mapping[str, Any]) -> None:
        self.engine, self.params = engine, dict(params)
        self.in_transaction = False
        self.last: Outcome | None = None
        self.bytes_processed = 0

    def nodes(self, nodes: list[Node]) -> None:
        for node in nodes:
            self.node(node)

    def node(self, node: Node) -> None:
        con = self.engine.con
        if isinstance(node, Statement):
            outcome = self.engine.statement(node.text, self.params)
            self.bytes_processed += outcome.bytes_processed
            self.last = outcome
        elif isinstance(node, Transaction):
            if node.verb == "BEGIN":
                if self.in_transaction:
                    raise invalid("Nested transactions are not supported")
                con.execute("BEGIN TRANSACTION")
                self.in_transaction = True
            else:
                if not self.in_transaction:
                    raise invalid(f"{node.verb} TRANSACTION without an active transaction")
                con.execute(node.verb)
                self.in_transaction = False
        elif isinstance(node, If):
            self.nodes(node.then if self.value(node.condition) else node.otherwise)
        elif isinstance(node, Raise):
            raise invalid(str(self.value(node.message)))
        elif isinstance(node, Block):
            try:
                self.nodes(node.body)
            except ApiError as exc:
                if node.handler is None:
                    raise
                self.params["__error_message"] = exc.message
                self.nodes(node.handler)

    def value(self, expression: str) -> Any:
        text = re.sub(r"@@error\.message", "@__error_message", expression, flags=re.I)
        outcome = self.engine.statement(f"SELECT {text}", self.params)
        self.bytes_processed += outcome.bytes_processed
        return outcome.rows[0][0] if outcome.rows else None


def _statement_type(tree: exp.Expression) -> str:
    if isinstance(tree, exp.Query):
        return "SELECT"
    if isinstance(tree, exp.Create):
        kind = str(tree.args.get("kind") or "TABLE").upper()
        return f"CREATE_{'SCHEMA' if kind == 'SCHEMA' else kind}"
    if isinstance(tree, exp.Drop):
        return f"DROP_{str(tree.args.get('kind') or 'TABLE').upper()}"
    return {exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE", exp.Merge: "MERGE"}.get(
        type(tree), tree.key.upper()
    )


def _duck_message(exc: BaseException) -> str:
    return str(exc).splitlines()[0]
