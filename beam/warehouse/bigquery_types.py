"""BigQuery's column types, in one place: their two spellings and how Arrow columns map to them.

Standard SQL says ``INT64``, ``FLOAT64``, ``BOOL``; the REST API's table schemas (and so load jobs and
``SchemaField``) say ``INTEGER``, ``FLOAT``, ``BOOLEAN``. Every other type is spelt the same in both.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_NAME = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
STANDARD_NAME = {schema: standard for standard, schema in SCHEMA_NAME.items()}

ARROW_OF = {
    "STRING": pa.string(),
    "INTEGER": pa.int64(),
    "FLOAT": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "TIME": pa.time64("us"),
    "BYTES": pa.binary(),
}


def schema_name(kind: str) -> str:
    """A type as table schemas spell it: ``int64`` -> ``INTEGER``, ``DATE`` -> ``DATE``."""
    kind = kind.upper()
    return SCHEMA_NAME.get(kind, kind)


def standard_name(kind: str) -> str:
    """A type as standard SQL spells it: ``INTEGER`` -> ``INT64``, ``DATE`` -> ``DATE``."""
    kind = kind.upper()
    return STANDARD_NAME.get(kind, kind)


def bigquery_type(kind: pa.DataType) -> str:
    """The schema type that holds an Arrow column without loss (a decimal wider than NUMERIC's
    38 digits or 9 places is BIGNUMERIC; a timestamp without a zone is a DATETIME)."""
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_integer(kind):
        return "INTEGER"
    if pa.types.is_floating(kind):
        return "FLOAT"
    if pa.types.is_decimal(kind):
        return "NUMERIC" if kind.precision <= 38 and kind.scale <= 9 else "BIGNUMERIC"
    if pa.types.is_date(kind):
        return "DATE"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP" if kind.tz else "DATETIME"
    if pa.types.is_time(kind):
        return "TIME"
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return "BYTES"
    return "STRING"
