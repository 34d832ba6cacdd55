"""Shared test helpers: write a spec and a CSV, run the real `dataops` command, read the warehouse."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.doubles.bigquery_api import bigquery_double  # noqa: F401  (the BigQuery double, per test)
from tests.emulators import gcs_server, pubsub_emulator  # noqa: F401  (fixtures shared by every folder)
from tests.kmock_cluster import cluster  # noqa: F401  (kmock as the controller's cluster)

ROOT = Path(__file__).resolve().parent.parent
DATAOPS = [sys.executable, "-m", "controller"]


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
        return data


def run_cli(*args: str, cwd: Path | None = None) -> CliRun:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [*DATAOPS, *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600, check=False
    )
    return CliRun(proc.returncode, proc.stdout, proc.stderr)


def write_spec(folder: Path, spec: dict[str, Any], name: str = "run") -> Path:
    doc = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": spec,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def query(workdir: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(workdir / "warehouse.duckdb"), read_only=True)
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def table_names(workdir: Path) -> set[str]:
    if not (workdir / "warehouse.duckdb").exists():
        return set()
    rows = query(
        workdir,
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema <> '_dataops'",
    )
    return {r[0] for r in rows}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path
