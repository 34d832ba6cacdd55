"""Stages with ``--workdir gs://bucket/prefix``: run files live in the bucket, stage to stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, query, write_spec
from tests.emulators import GcsServer

pytestmark = pytest.mark.integration


def stage(name: str, spec: Path, workdir: str, scratch: Path, result: Path) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT), DATAOPS_SCRATCH=str(scratch))
    command = [sys.executable, "-m", "beam.stages", name, "--spec", str(spec), "--workdir", workdir]
    command += ["--started-at", "2026-01-01T00:00:00+00:00", "--result-file", str(result)]
    proc = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc.returncode


def test_run_files_go_to_the_bucket_and_the_next_stage_reads_them_there(
    gcs_server: GcsServer, tmp_path: Path
) -> None:
    from google.cloud import storage

    bucket = storage.Client(project=gcs_server.project).create_bucket(f"work-{uuid.uuid4().hex[:8]}")
    bucket.blob("in/items.csv").upload_from_string("sku,qty\nA1,3\nB2,x\n")
    doc: dict[str, Any] = {
        "source": {
            "uri": f"gs://{bucket.name}/in/items.csv",
            "columns": [{"name": "sku"}, {"name": "qty", "type": "INT64"}],
        },
        "validate": {"onFailure": "quarantine"},
        "load": {"table": "raw.items"},
    }
    spec = write_spec(tmp_path, doc)
    workdir = f"gs://{bucket.name}/work"
    scratch = tmp_path / "scratch"

    assert stage("validate", spec, workdir, scratch, tmp_path / "validate.json") == 0
    shutil.rmtree(scratch / "runs")  # a new pod: only the bucket remembers the run's files
    assert stage("load", spec, workdir, scratch, tmp_path / "load.json") == 0

    names = {b.name for b in bucket.list_blobs(prefix="work/")}
    assert {
        "work/runs/default/run/validate/validated.parquet",
        "work/runs/default/run/validate/rejects.parquet",
        "work/runs/default/run/validate/summary.txt",
        "work/runs/default/run/validate/rejects-reasons.csv",
    } <= names
    assert not [n for n in names if "/tmp/" in n]  # working copies stay in the pod
    validated = json.loads((tmp_path / "validate.json").read_text())
    assert validated["artifacts"]["report"] == f"{workdir}/runs/default/run/validate/summary.txt"
    assert query(scratch, "SELECT sku, qty FROM raw.items") == [("A1", 3)]


def test_a_workdir_in_a_missing_bucket_fails_naming_it(gcs_server: GcsServer, tmp_path: Path) -> None:
    from google.cloud import storage

    bucket = storage.Client(project=gcs_server.project).create_bucket(f"src-{uuid.uuid4().hex[:8]}")
    bucket.blob("in/items.csv").upload_from_string("sku\nA1\n")
    spec = write_spec(
        tmp_path,
        {
            "source": {"uri": f"gs://{bucket.name}/in/items.csv", "columns": [{"name": "sku"}]},
            "load": {"table": "raw.items"},
        },
    )

    code = stage("validate", spec, "gs://no-such-bucket-x1/work", tmp_path / "scratch", tmp_path / "r.json")

    result = json.loads((tmp_path / "r.json").read_text())
    assert (code, result["reason"]) == (1, "StorageError")
    assert "gs://no-such-bucket-x1/work/runs/default/run" in result["message"]
    assert "does not exist" in result["message"]
