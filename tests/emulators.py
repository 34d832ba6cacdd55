"""Servers that speak Google Cloud APIs on loopback, shared by every test folder.

- ``pubsub_emulator``: the Pub/Sub emulator of the Google Cloud CLI, started once per session on a free
  port, in its own process group; ``PUBSUB_EMULATOR_HOST`` (and ``PUBSUB_PROJECT_ID``) point at it for the
  session, and at the end the whole group (gcloud and its java child) is stopped and checked gone.
- ``gcs_server``: fake-gcs-server (built from the Go module proxy by ``tests/deploy/tools.sh``), speaking
  the GCS JSON API over HTTP, with its object notifications (``OBJECT_FINALIZE``) published to the Pub/Sub
  emulator; ``STORAGE_EMULATOR_HOST`` points at it for the session.

A machine without them fails these tests, saying what to install: they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = "dataops-test"
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 15.0
INSTALL = (
    "install the Google Cloud CLI's Pub/Sub emulator and Java 17: apt-get install -y"
    " google-cloud-cli google-cloud-cli-pubsub-emulator openjdk-17-jre-headless"
    " (or: gcloud components install pubsub-emulator beta)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _emulator_missing() -> str | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "gcloud is not on PATH"
    if shutil.which("java") is None:
        return "java is not on PATH"
    proc = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    root = proc.stdout.strip()
    if proc.returncode != 0 or not root:
        return f"gcloud info failed: {proc.stderr.strip()[-500:]}"
    if not (Path(root) / "platform" / "pubsub-emulator").is_dir():
        return f"the pubsub-emulator component is not installed under {root}"
    return None


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    publisher = pubsub_v1.PublisherClient()
    probe = publisher.topic_path(PROJECT, f"ready-{uuid.uuid4().hex[:8]}")
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the Pub/Sub emulator exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            publisher.create_topic(request={"name": probe}, timeout=5)
            publisher.delete_topic(request={"topic": probe}, timeout=5)
            return
        except (gexc.GoogleAPICallError, gexc.RetryError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Pub/Sub emulator at {host} did not answer: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    group = proc.pid
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_SECONDS), (signal.SIGKILL, STOP_TIMEOUT_SECONDS)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
    proc.wait(timeout=STOP_TIMEOUT_SECONDS)
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return
    raise RuntimeError(f"processes of group {group} are still running")


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    """``host:port`` of a running emulator; ``PUBSUB_EMULATOR_HOST`` points at it for the session."""
    missing = _emulator_missing()
    if missing is not None:
        pytest.fail(f"the Pub/Sub emulator is needed: {missing}; {INSTALL}", pytrace=False)
    host = f"127.0.0.1:{_free_port()}"
    data = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
    log = data / "emulator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={host}",
                f"--project={PROJECT}",
                f"--data-dir={data}",
                "--quiet",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    saved = {k: os.environ.get(k) for k in ("PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID")}
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    os.environ["PUBSUB_PROJECT_ID"] = PROJECT
    try:
        _wait_ready(host, proc, log)
        yield host
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _stop(proc)
        shutil.rmtree(data, ignore_errors=True)


GCS_TOPIC = "gcs-notifications"
TOOLS_SCRIPT = Path(__file__).resolve().parent / "deploy" / "tools.sh"


def tools_bin() -> Path:
    return Path(os.environ.get("DATAOPS_CACHE") or Path.home() / ".cache" / "dataops") / "tools-venv" / "bin"


@dataclass(frozen=True)
class GcsServer:
    """A running fake-gcs-server: its endpoint, and the Pub/Sub topic its object notifications go to."""

    endpoint: str  # http://127.0.0.1:PORT
    project: str
    notification_topic: str


def _fake_gcs_binary() -> Path:
    binary = tools_bin() / "fake-gcs-server"
    if not binary.is_file():
        proc = subprocess.run(["bash", str(TOOLS_SCRIPT)], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not binary.is_file():
            pytest.fail(
                f"fake-gcs-server is needed at {binary}: run `bash tests/deploy/tools.sh` (it needs go and the Go"
                f" module proxy): {proc.stderr[-1500:]}",
                pytrace=False,
            )
    return binary


@pytest.fixture(scope="session")
def gcs_server(pubsub_emulator: str) -> Iterator[GcsServer]:
    """fake-gcs-server on a free port; OBJECT_FINALIZE notifications go to ``GCS_TOPIC`` on the emulator."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    with contextlib.suppress(gexc.AlreadyExists):
        publisher.create_topic(request={"name": publisher.topic_path(PROJECT, GCS_TOPIC)})
    port = _free_port()
    data = Path(tempfile.mkdtemp(prefix="fake-gcs-"))
    log = data / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(_fake_gcs_binary()),
                "-scheme=http",
                "-host=127.0.0.1",
                f"-port={port}",
                "-backend=memory",
                f"-public-host=127.0.0.1:{port}",
                f"-external-url=http://127.0.0.1:{port}",
                f"-event.pubsub-project-id={PROJECT}",
                f"-event.pubsub-topic={GCS_TOPIC}",
                "-event.list=finalize",
                "-log-level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=dict(os.environ, PUBSUB_EMULATOR_HOST=pubsub_emulator),
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server did not answer: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    try:
        yield GcsServer(endpoint, PROJECT, GCS_TOPIC)
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        _stop(proc)
        shutil.rmtree(data, ignore_errors=True)
