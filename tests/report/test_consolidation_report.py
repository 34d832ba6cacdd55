"""`dataops report INGESTIONSOURCE.yaml`: the cycles of the transactions demo, drawn in a real browser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.report.report_browser import open_report

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "transactions"


def test_consolidation_report_draws_rows_merged_and_watermark_per_cycle(tmp_path: Path) -> None:
    workdir = tmp_path / "tx"
    demo = subprocess.run(
        [sys.executable, str(EXAMPLE / "demo.py"), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=600,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr

    result = run_cli("report", str(EXAMPLE / "ingestionsource.yaml"), "--workdir", str(workdir))

    assert result.code == 0, result.stderr
    report = Path(result.stdout.strip())
    opened = open_report(report, tmp_path / "report-consolidation.png")
    assert opened.errors == []
    assert opened.bars["merged"] == 4  # two cycles, inserted and updated each
    assert opened.lines["watermark"] == 2  # the source stream and the joined stream
    text = report.read_text(encoding="utf-8")
    assert "8 inserted" not in text  # numbers are in cells, not prose
    assert ">12<" in text  # rows inserted over both cycles: 8 then 4
