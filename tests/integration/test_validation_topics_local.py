"""Locally, the validation topics live in the embedded queue of the workdir: no cloud needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam.bus import EmbeddedQueue
from tests.conftest import run_cli, write_spec

pytestmark = pytest.mark.integration


def test_a_local_run_tells_the_embedded_success_topic(
    tmp_path: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATAOPS_BUS", raising=False)
    (tmp_path / "items.csv").write_text("sku,qty\nA1,3\nB2,x\n", encoding="utf-8")
    spec = {
        "source": {"uri": "items.csv", "columns": [{"name": "sku"}, {"name": "qty", "type": "INT64"}]},
        "validate": {
            "onFailure": "quarantine",
            "notify": {"successTopic": "ok-files", "errorTopic": "bad-files"},
        },
        "load": {"table": "raw.items"},
    }

    result = run_cli("run", str(write_spec(tmp_path, spec)), "--workdir", str(workdir), "--output", "json")

    assert result.code == 0, result.stdout + result.stderr
    got = EmbeddedQueue(workdir).pull("ok-files", 10)
    assert [
        (m.attributes["outcome"], m.attributes["rowsOut"], m.attributes["rowsRejected"]) for m in got
    ] == [("success", "1", "1")]
    assert json.loads(got[0].data)["rejects"][0]["row"] == 2
