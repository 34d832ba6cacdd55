"""The Pub/Sub emulator of the Google Cloud CLI, started once per session on a free port.

``pubsub_emulator`` starts ``gcloud beta emulators pubsub start`` in its own process group, waits until
it answers, sets ``PUBSUB_EMULATOR_HOST`` (and ``PUBSUB_PROJECT_ID``) for the session, and at the end
stops the whole group (gcloud and its java child) and checks that nothing of it is left. A machine
without the emulator fails these tests, saying what to install: they are never skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from beam.bus import MessageBus

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
    raise RuntimeError(f"processes of the Pub/Sub emulator (group {group}) are still running")


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


@pytest.fixture
def pubsub_bus(pubsub_emulator: str) -> Iterator[MessageBus]:
    from beam.bus.pubsub import PubSubBus

    bus = PubSubBus(PROJECT)
    yield bus
    bus.close()


@pytest.fixture
def names() -> tuple[str, str]:
    """A fresh topic and subscription name (the emulator is shared by the session)."""
    suffix = uuid.uuid4().hex[:10]
    return f"topic-{suffix}", f"sub-{suffix}"
