"""`dataops report INGESTIONSOURCE.yaml`: the cycles of the transactions demo, drawn in a real browser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.report.report_browser import open_report

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "transactions"
SEED = """
import sys
from pathlib import Path

sys.path.insert(0, "examples/transactions")
from demo import arrive  # every row of the example's CSVs, as if they had arrived
from beam.warehouse import open_warehouse

Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
arrive(open_warehouse(Path(sys.argv[1])), None, None)
"""


def test_consolidation_report_draws_rows_merged_and_watermark_per_cycle(tmp_path: Path) -> None:
    workdir = tmp_path / "tx"
    demo = subprocess.run(
        [sys.executable, str(EXAMPLE / "demo.py"), "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
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
    assert ">12<" in text  # rows inserted over both cycles: 8 then 4


def test_consolidate_with_report_prints_where_the_report_is(tmp_path: Path) -> None:
    workdir = tmp_path / "tx"
    spec = tmp_path / "ingestionsource.yaml"
    spec.write_text((EXAMPLE / "ingestionsource.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run(
        [sys.executable, "-c", SEED, str(workdir)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        check=True,
        timeout=300,
    )

    result = run_cli("consolidate", str(spec), "--workdir", str(workdir), "--output", "json", "--report")

    assert result.code == 0, result.stderr
    written = workdir / "consolidation" / "default" / "ussd-transactions" / "report.html"
    assert f"report {written}" in result.stderr
    assert "Rows merged per cycle" in written.read_text(encoding="utf-8")
