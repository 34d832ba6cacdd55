"""The report copied where people open it: a folder, or GCS objects under $DATAOPS_REPORT_URI."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from beam.report.publish import publish
from tests.conftest import run_cli, write_spec
from tests.emulators import GcsServer

SPEC = {
    "source": {
        "uri": "items.csv",
        "columns": [{"name": "id", "type": "INT64"}, {"name": "qty", "type": "INT64"}],
    },
    "validate": {
        "expectations": [
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "qty", "min_value": 0}}
        ]
    },
    "load": {"table": "shop_raw.items"},
}


@pytest.mark.e2e
def test_last_stage_copies_the_report_under_the_report_uri_and_the_status_says_so(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "items.csv").write_text("id,qty\n1,2\n2,3\n", encoding="utf-8")
    spec = write_spec(tmp_path, SPEC, name="pub")
    monkeypatch.setenv("DATAOPS_REPORT_URI", f"file://{tmp_path / 'published'}")

    result = run_cli("run", str(spec), "--workdir", str(workdir), "--output", "json")

    assert result.code == 0, result.stderr
    status = json.loads((workdir / "runs" / "default" / "pub" / "status.json").read_text(encoding="utf-8"))
    published = tmp_path / "published" / "default" / "pub"
    assert status["report"] == str(published / "report.html")
    assert (published / "report.html").is_file()
    assert (published / "validate" / "data_docs.html").is_file()  # the report's link still lands


@pytest.mark.integration
def test_report_and_its_pages_become_gcs_objects(tmp_path: Path, gcs_server: GcsServer) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    run_dir = tmp_path / "runs" / "team" / "r1"
    (run_dir / "validate").mkdir(parents=True)
    (run_dir / "report.html").write_text("<html>report</html>", encoding="utf-8")
    (run_dir / "validate" / "data_docs.html").write_text("<html>docs</html>", encoding="utf-8")
    client = storage.Client(
        project=gcs_server.project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    bucket = client.create_bucket(f"reports-{uuid.uuid4().hex[:8]}")

    where = publish(run_dir / "report.html", "team", "r1", f"gs://{bucket.name}/runs/")

    assert where == f"gs://{bucket.name}/runs/team/r1/report.html"
    blobs = {b.name: b.content_type for b in client.list_blobs(bucket.name)}
    assert blobs == {
        "runs/team/r1/report.html": "text/html; charset=utf-8",
        "runs/team/r1/validate/data_docs.html": "text/html; charset=utf-8",
    }
    assert bucket.blob("runs/team/r1/report.html").download_as_text() == "<html>report</html>"
