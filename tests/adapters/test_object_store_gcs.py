"""The object-store port against fake-gcs-server (and a loopback server that refuses like GCS does)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from beam.storage import StorageError, download_tree, parse_gcs_uri, stage_files, upload_tree
from tests.emulators import GcsServer

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(gcs_server: GcsServer) -> Any:
    from google.cloud import storage

    client = storage.Client(project=gcs_server.project)
    return client.create_bucket(f"store-{uuid.uuid4().hex[:8]}")


def test_an_object_is_staged_locally_and_named_by_its_uri(bucket: Any, tmp_path: Path) -> None:
    blob = bucket.blob("in/items.csv")
    blob.upload_from_string("id\n1\n")

    staged = stage_files(f"gs://{bucket.name}/in/items.csv", tmp_path)

    assert [s.uri for s in staged] == [f"gs://{bucket.name}/in/items.csv"]
    assert Path(staged[0].path).read_text() == "id\n1\n"
    assert staged[0].generation == blob.generation


def test_a_pinned_generation_is_read_even_after_the_object_is_overwritten(
    bucket: Any, tmp_path: Path
) -> None:
    first = bucket.blob("in/items.csv")
    first.upload_from_string("id\n1\n")
    second = bucket.blob("in/items.csv")
    second.upload_from_string("id\n2\n")

    pinned = stage_files(f"gs://{bucket.name}/in/items.csv#{second.generation}", tmp_path / "new")
    assert Path(pinned[0].path).read_text() == "id\n2\n"

    with pytest.raises(StorageError, match=f"generation {first.generation} of this object no longer exists"):
        stage_files(f"gs://{bucket.name}/in/items.csv#{first.generation}", tmp_path / "old")


def test_a_glob_names_every_matching_object(bucket: Any, tmp_path: Path) -> None:
    for name in ("in/a.csv", "in/b.csv", "in/skip.txt", "other/c.csv"):
        bucket.blob(name).upload_from_string("id\n1\n")

    staged = stage_files(f"gs://{bucket.name}/in/*.csv", tmp_path)

    assert [s.uri for s in staged] == [f"gs://{bucket.name}/in/a.csv", f"gs://{bucket.name}/in/b.csv"]


def test_a_missing_object_and_a_missing_bucket_are_named(bucket: Any, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"gs://{bucket.name}/in/none.csv: no such object"):
        stage_files(f"gs://{bucket.name}/in/none.csv", tmp_path)
    with pytest.raises(StorageError, match=r"gs://no-such-bucket-[0-9a-f]+/\*\.csv: bucket 'no-such-bucket-"):
        stage_files(f"gs://no-such-bucket-{uuid.uuid4().hex[:6]}/*.csv", tmp_path)


def test_a_tree_goes_up_and_comes_back(bucket: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "validate").mkdir(parents=True)
    (src / "validate" / "summary.txt").write_text("ok\n")
    (src / "status.json").write_text("{}")

    written = upload_tree(src, f"gs://{bucket.name}/work/runs/default/r1")
    got = download_tree(f"gs://{bucket.name}/work/runs/default/r1", tmp_path / "back")

    assert sorted(written) == [
        f"gs://{bucket.name}/work/runs/default/r1/status.json",
        f"gs://{bucket.name}/work/runs/default/r1/validate/summary.txt",
    ]
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in got) == [
        "status.json",
        "validate/summary.txt",
    ]
    assert (tmp_path / "back" / "validate" / "summary.txt").read_text() == "ok\n"


def test_a_bad_generation_suffix_is_refused() -> None:
    with pytest.raises(StorageError, match="must be an object generation"):
        parse_gcs_uri("gs://b/in/items.csv#latest")


# ---- a loopback server answering like GCS does when it refuses --------------------------------


class _Refusing(BaseHTTPRequestHandler):
    """Answers object requests from ``answers`` in turn (the last one repeats); media with ``media``."""

    answers: list[tuple[int, dict[str, Any]]] = []
    media = b""

    def do_GET(self) -> None:
        if "alt=media" in self.path:
            self._send(200, self.media, "application/octet-stream")
        elif "/o/" in self.path:
            status, body = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            self._send(status, json.dumps(body).encode(), "application/json")
        else:  # the bucket
            self._send(200, json.dumps({"name": "landing"}).encode(), "application/json")

    def do_POST(self) -> None:  # uploads
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.answers[-1]
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Refusing]]:
    handler = type("Handler", (_Refusing,), {"answers": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "reason": "x"}]}}


def test_a_refused_read_names_the_missing_role_and_the_bucket(
    refusing_gcs: type[_Refusing], tmp_path: Path
) -> None:
    refusing_gcs.answers.append(
        (403, _error(403, "worker@p.iam.gserviceaccount.com does not have storage.objects.get access"))
    )

    with pytest.raises(StorageError) as info:
        stage_files("gs://landing/in/items.csv", tmp_path)

    assert str(info.value) == (
        "gs://landing/in/items.csv: permission denied to read the object: grant roles/storage.objectViewer"
        " on bucket 'landing' to the service account the stage runs as (Workload Identity)"
    )


def test_a_rate_limited_read_is_retried_with_backoff(refusing_gcs: type[_Refusing], tmp_path: Path) -> None:
    meta = {"bucket": "landing", "name": "in/items.csv", "generation": "7", "size": "5"}
    refusing_gcs.answers += [
        (429, _error(429, "rate limit exceeded")),
        (503, _error(503, "backend")),
        (200, meta),
    ]
    refusing_gcs.media = b"id\n1\n"

    staged = stage_files("gs://landing/in/items.csv", tmp_path)

    assert (staged[0].generation, Path(staged[0].path).read_text()) == (7, "id\n1\n")


def test_a_refused_write_names_the_missing_role_and_the_bucket(
    refusing_gcs: type[_Refusing], tmp_path: Path
) -> None:
    refusing_gcs.answers.append((403, _error(403, "does not have storage.objects.create access")))
    (tmp_path / "summary.txt").write_text("ok\n")

    with pytest.raises(StorageError) as info:
        upload_tree(tmp_path, "gs://staging/work/runs/default/r1")

    assert str(info.value) == (
        "gs://staging/work/runs/default/r1/summary.txt: permission denied to write the object: grant"
        " roles/storage.objectCreator on bucket 'staging' (roles/storage.objectUser to replace objects, as a"
        " stage run again does) to the service account the stage runs as (Workload Identity)"
    )
