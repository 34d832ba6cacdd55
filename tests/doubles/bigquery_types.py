"""What the BigQuery double says, in BigQuery's own terms: errors, job outcomes, types and values."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from beam.warehouse.bigquery_types import bigquery_type, schema_name
from tests.doubles.google_errors import canonical_status, error_body

MIB = 1024 * 1024
DOUBLE_QUOTE = '"'
MIN_BILLED = 10 * MIB
TO_DUCKDB = {
    "STRING": "VARCHAR",
    "INTEGER": "BIGINT",
    "INT64": "BIGINT",
    "FLOAT": "DOUBLE",
    "FLOAT64": "DOUBLE",
    "NUMERIC": "DECIMAL(38, 9)",
    "BIGNUMERIC": "DOUBLE",
    "BOOLEAN": "BOOLEAN",
    "BOOL": "BOOLEAN",
    "DATE": "DATE",
    "DATETIME": "TIMESTAMP",
    "TIMESTAMP": "TIMESTAMPTZ",
    "TIME": "TIME",
    "BYTES": "BLOB",
    "JSON": "JSON",
}
WIDTH = {"INTEGER": 8, "FLOAT": 8, "NUMERIC": 16, "BOOLEAN": 1, "DATE": 8, "DATETIME": 8, "TIMESTAMP": 8}


class ApiError(Exception):
    """An error as BigQuery answers it: HTTP code, ``reason`` and message."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def proto(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "domain": "global"}

    def body(self) -> dict[str, Any]:
        status = canonical_status(self.code)
        if self.reason in ("quotaExceeded", "rateLimitExceeded"):
            status = "RESOURCE_EXHAUSTED" if self.code == 429 else "PERMISSION_DENIED"
        return error_body(self.code, status, self.message, errors=[self.proto()])


def invalid(message: str) -> ApiError:
    return ApiError(400, "invalidQuery", message)


@dataclass
class Outcome:
    """What a job did: its result set (if any), statistics, and the statement type."""

    statement_type: str = ""
    schema: list[dict[str, Any]] | None = None
    rows: list[list[Any]] | None = None
    dml_rows: int | None = None
    bytes_processed: int = 0
    load: dict[str, str] = field(default_factory=dict)

    @property
    def bytes_billed(self) -> int:
        if self.bytes_processed <= 0:
            return 0
        return max(MIN_BILLED, math.ceil(self.bytes_processed / MIB) * MIB)


def ms(now: dt.datetime | None = None) -> str:
    return str(int((now or dt.datetime.now(dt.UTC)).timestamp() * 1000))


def arrow_to_bq(t: pa.DataType) -> str:
    """The schema type of a DuckDB result column. A decimal of up to 38 digits is NUMERIC whatever its
    scale: DuckDB's arithmetic widens the scale where BigQuery's NUMERIC keeps 9 places."""
    if pa.types.is_decimal(t) and t.precision <= 38:
        return "NUMERIC"
    return bigquery_type(t)


def encode(value: Any, bq_type: str, int64_timestamp: bool) -> Any:
    """One cell as getQueryResults / tabledata.list send it (``{"v": text}``)."""
    if value is None:
        return None
    if bq_type == "BOOLEAN":
        return "true" if value else "false"
    if bq_type == "TIMESTAMP":
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        micros = int(stamp.timestamp()) * 1_000_000 + stamp.microsecond
        return str(micros) if int64_timestamp else repr(micros / 1e6)
    if bq_type in ("DATE", "TIME"):
        return value.isoformat()
    if bq_type == "DATETIME":
        return value.isoformat(timespec="microseconds")
    if bq_type == "BYTES":
        return base64.b64encode(value).decode()
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f")
    return str(value)


def parameter_value(param: Mapping[str, Any]) -> Any:
    kind = param.get("parameterType", {}).get("type", "STRING")
    raw = (param.get("parameterValue") or {}).get("value")
    if raw is None:
        return None
    if kind in ("INT64", "INTEGER"):
        return int(raw)
    if kind in ("FLOAT64", "FLOAT"):
        return float(raw)
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return decimal.Decimal(raw)
    if kind in ("BOOL", "BOOLEAN"):
        return str(raw).lower() == "true"
    if kind == "TIMESTAMP":
        stamp = dt.datetime.fromisoformat(str(raw).replace(" UTC", "+00:00"))
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
    if kind == "DATETIME":
        return dt.datetime.fromisoformat(str(raw))
    if kind == "DATE":
        return dt.date.fromisoformat(str(raw))
    return str(raw)


def field_of(f: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        "name": f["name"],
        "type": schema_name(str(f.get("type", "STRING"))),
        "mode": f.get("mode") or "NULLABLE",
    }
    if f.get("description"):
        out["description"] = f["description"]
    return out


def columns_ddl(fields: list[dict[str, Any]]) -> str:
    return ", ".join(f'"{f["name"]}" {TO_DUCKDB.get(field_of(f)["type"], "VARCHAR")}' for f in fields)


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def result_rows(rows: list[list[Any]], schema: list[dict[str, Any]], int64: bool) -> list[dict[str, Any]]:
    """Rows as getQueryResults and tabledata.list send them: ``{"f": [{"v": text}, ...]}``."""
    types = [f["type"] for f in schema]
    return [{"f": [{"v": encode(v, t, int64)} for v, t in zip(row, types, strict=True)]} for row in rows]
