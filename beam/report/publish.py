"""Where a run's report is kept for people to open: the run's folder in the workdir (local), or a GCS
object (production) when ``$DATAOPS_REPORT_URI`` names a bucket prefix (``gs://BUCKET/reports``).

The report, its Looker Studio document and GE's Data Docs page go under
``<DATAOPS_REPORT_URI>/<namespace>/<name>/`` with the same relative paths as in the run folder, so the
page's links keep working. ``$STORAGE_EMULATOR_HOST`` points the client at an emulator (tests).
A plain path or ``file://`` URI is a folder the files are copied into.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

REPORT_URI_ENV = "DATAOPS_REPORT_URI"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8"}


class PublishError(Exception):
    """The report could not be copied to ``$DATAOPS_REPORT_URI``: the message says where and why."""


def published_files(report: Path) -> list[Path]:
    """The report and the pages it links to that sit beside it (relative to the run folder)."""
    run_dir = report.parent
    wanted = [report.name, "looker-studio.md", "validate/data_docs.html"]
    return [Path(rel) for rel in wanted if (run_dir / rel).is_file()]


def publish(report: Path, namespace: str, name: str, base: str) -> str:
    """Copy the report (and its neighbours) under ``base``; the report's own URI."""
    base = base.rstrip("/")
    files = published_files(report)
    if base.startswith("gs://"):
        return _to_gcs(report.parent, files, f"{base}/{namespace}/{name}", report.name)
    folder = Path(base.removeprefix("file://")) / namespace / name
    for rel in files:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report.parent / rel, folder / rel)
    return str(folder / report.name)


def _client() -> Any:
    from google.cloud import storage

    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "test-project"),
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": emulator},
        )
    return storage.Client()


def _to_gcs(run_dir: Path, files: list[Path], prefix: str, report_name: str) -> str:
    from google.api_core import exceptions as gexc

    bucket_name, _, folder = prefix.removeprefix("gs://").partition("/")
    try:
        bucket = _client().bucket(bucket_name)
        for rel in files:
            blob = bucket.blob(f"{folder}/{rel.as_posix()}".lstrip("/"))
            blob.upload_from_filename(
                str(run_dir / rel), content_type=CONTENT_TYPES.get(rel.suffix, "application/octet-stream")
            )
    except (gexc.GoogleAPIError, OSError) as exc:
        raise PublishError(f"cannot write the report under {prefix}: {exc}") from None
    return f"{prefix}/{report_name}"
