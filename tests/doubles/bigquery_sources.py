"""Where the BigQuery double's load jobs read from: an upload, or GCS objects, read as BigQuery loads them."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tests.doubles.bigquery_types import DOUBLE_QUOTE, TO_DUCKDB, ApiError, sql_string


def source_files(
    config: Mapping[str, Any], upload: bytes | None, tmp: Path, gcs_endpoint: str | None
) -> list[Path]:
    """The files of a load job: its upload, or the objects its ``gs://`` URIs name (wildcards listed)."""
    if upload is not None:
        path = tmp / "upload"
        path.write_bytes(upload)
        return [path]
    files = []
    for n, uri in enumerate(config.get("sourceUris") or []):
        for m, blob in enumerate(gcs_objects(uri, gcs_endpoint)):
            path = tmp / f"src-{n}-{m}"
            path.write_bytes(blob)
            files.append(path)
    if not files:
        raise ApiError(400, "invalid", "Load configuration must specify at least one source URI")
    return files


def gcs_objects(uri: str, gcs_endpoint: str | None) -> Iterator[bytes]:
    """The bytes of each object a URI names, read through the GCS JSON API (``STORAGE_EMULATOR_HOST``)."""
    match = re.match(r"gs://([^/]+)/(.+)$", uri)
    if not match:
        raise ApiError(400, "invalid", f"Invalid source URI: {uri}; it must start with gs://")
    endpoint = gcs_endpoint or os.environ.get("STORAGE_EMULATOR_HOST")
    if not endpoint:
        raise ApiError(400, "invalid", f"{uri}: the double has no GCS endpoint (STORAGE_EMULATOR_HOST)")
    bucket, name = match.groups()
    names = [name]
    if "*" in name:
        prefix = name.split("*", 1)[0]
        listing = _get_json(f"{endpoint}/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix)}")
        names = sorted(o["name"] for o in listing.get("items", []) if fnmatch.fnmatchcase(o["name"], name))
        if not names:
            raise ApiError(404, "notFound", f"Not found: URI {uri}")
    for item in names:
        url = f"{endpoint}/storage/v1/b/{bucket}/o/{urllib.parse.quote(item, safe='')}?alt=media"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                yield response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise ApiError(404, "notFound", f"Not found: URI gs://{bucket}/{item}") from None
            raise


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


def read_source(fmt: str, files: list[Path], fields: list[dict[str, Any]], config: Mapping[str, Any]) -> str:
    """The DuckDB SELECT reading the files as BigQuery would load them with this configuration."""
    paths = "[" + ", ".join(sql_string(str(p)) for p in files) + "]"
    typed = {f["name"]: TO_DUCKDB.get(f["type"], "VARCHAR") for f in fields}
    if fmt == "CSV":
        options = [
            f"skip = {int(config.get('skipLeadingRows') or 0)}",
            "header = false",
            f"delim = {sql_string(config.get('fieldDelimiter') or ',')}",
            f"quote = {sql_string(config.get('quote', DOUBLE_QUOTE) or DOUBLE_QUOTE)}",
            f"nullstr = {sql_string(config.get('nullMarker') or '')}",
        ]
        if typed:
            columns = "{" + ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in typed.items()) + "}"
            options += [f"columns = {columns}", "auto_detect = false"]
        return f"SELECT * FROM read_csv({paths}, {', '.join(options)})"
    if fmt == "NEWLINE_DELIMITED_JSON":  # a field the row lacks is NULL, as in BigQuery
        columns = "{" + ", ".join(f"{sql_string(k)}: {sql_string(v)}" for k, v in typed.items()) + "}"
        typing = f", columns = {columns}" if typed else ""
        return f"SELECT * FROM read_json({paths}, format = 'newline_delimited'{typing})"
    if fmt == "PARQUET":
        relation = f"read_parquet({paths})"
    else:
        raise ApiError(400, "invalid", f"The BigQuery double does not load {fmt} files")
    if not typed:
        return f"SELECT * FROM {relation}"
    return (
        "SELECT " + ", ".join(f'CAST("{k}" AS {v}) AS "{k}"' for k, v in typed.items()) + f" FROM {relation}"
    )
