"""``python -m beam.consolidation SPEC --workdir DIR [--output json]``: summaries, exit codes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam.consolidation.__main__ import main
from beam.consolidation.faults import faults_from_env, no_faults
from beam.stages.context import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from tests.consolidation.helpers import ROOT, World, run_module, spec_doc

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = World(tmp_path / "work", spec_doc(batch_size=3))
    world.insert_transactions(["T00001"])
    world.insert_operations(4, tx_ids=["T00001"])
    return world


def test_json_summary_tells_rows_messages_watermarks_and_duration(world: World) -> None:
    proc = run_module([str(world.spec_file()), "--workdir", str(world.workdir), "--output", "json"])

    summary = json.loads(proc.stdout)
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    assert summary["status"] == "Merged"
    assert summary["rows"] == {
        "extracted": 3,
        "rejoined": 0,
        "published": 3,
        "staged": 3,
        "merged": {"inserted": 3, "updated": 0, "unchanged": 0},
    }
    assert summary["messages"]["published"] == summary["messages"]["acked"] == 1
    assert summary["watermark"]["before"]["source:ops.operations"] is None
    assert summary["watermark"]["after"]["source:ops.operations"] == {
        "cursor": "2026-03-02 08:00:01",
        "key": ["3"],
    }
    assert summary["backlog"] is True
    assert summary["durationSeconds"] > 0
    assert summary["cycleId"]


def test_text_output_is_a_human_summary_on_stderr(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(world.spec_file()), "--workdir", str(world.workdir)])

    out, err = capsys.readouterr()
    assert (code, out) == (EXIT_OK, "")
    assert "consolidation tests/ops -> cons.operations: Merged" in err
    assert "inserted 3" in err
    assert "watermark source:ops.operations: (start) -> (2026-03-02 08:00:01, 3)" in err
    assert "more rows wait (batchSize reached)" in err


def test_result_file_holds_a_short_result_for_the_termination_log(world: World, tmp_path: Path) -> None:
    result_file = tmp_path / "termination-log"

    code = main([str(world.spec_file()), "--workdir", str(world.workdir), "--result-file", str(result_file)])

    doc = json.loads(result_file.read_text())
    assert code == EXIT_OK
    assert (doc["status"], doc["merged"], doc["extracted"]) == ("Merged", 3, 3)
    assert doc["watermark"]["source:ops.operations"]["key"] == ["3"]
    assert len(result_file.read_bytes()) < 4096


def test_missing_table_exits_65_naming_the_spec_field(
    tmp_path: Path, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.doc["spec"]["consolidation"]["joins"][0]["table"] = "ops.gone"

    code = main([str(world.spec_file()), "--workdir", str(world.workdir), "--output", "json"])

    out, err = capsys.readouterr()
    assert code == EXIT_BAD_INPUT
    assert json.loads(out)["reason"] == "BadInput"
    assert "spec.consolidation.joins[0].table: table ops.gone does not exist" in err


def test_unknown_column_exits_65_listing_the_known_ones(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.doc["spec"]["consolidation"]["source"]["cursor"] = "inserted_at"

    code = main([str(world.spec_file()), "--workdir", str(world.workdir)])

    assert code == EXIT_BAD_INPUT
    assert (
        "spec.consolidation.source.cursor: unknown column 'inserted_at' in ops.operations (known: amount, op_id,"
        in (capsys.readouterr().err)
    )


def test_invalid_spec_exits_65_with_its_yaml_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "apiVersion: dataops.io/v1alpha1\nkind: IngestionSource\nmetadata: {name: bad}\nspec:\n"
        "  consolidation:\n    schedule: 'CRON_TZ=UTC * * * * *'\n",
        encoding="utf-8",
    )

    code = main([str(spec), "--workdir", str(tmp_path / "work")])

    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert "bad.yaml:6: spec.consolidation.schedule" in err
    assert "use the timeZone field" in err


def test_example_spec_parses_and_names_the_seed_tables() -> None:
    from beam.consolidation import load_ingestion_source

    source = load_ingestion_source(ROOT / "examples" / "transactions" / "ingestionsource.yaml")

    assert source.spec.consolidation is not None
    assert source.spec.consolidation.source.table == "ussd.ussd_operations"
    assert source.spec.consolidation.joins[0].on == ["transaction_id"]


def test_fault_point_comes_from_the_environment_and_unknown_names_are_refused() -> None:
    assert faults_from_env({}) is no_faults
    assert faults_from_env({"DATAOPS_FAULTPOINT": "after_merge"}) is not no_faults
    with pytest.raises(ValueError, match="DATAOPS_FAULTPOINT='midway' is not a fault point"):
        faults_from_env({"DATAOPS_FAULTPOINT": "midway"})


def test_unknown_fault_point_fails_the_cycle_before_it_starts(world: World) -> None:
    proc = run_module(
        [str(world.spec_file()), "--workdir", str(world.workdir)], {"DATAOPS_FAULTPOINT": "midway"}
    )

    assert proc.returncode == EXIT_FAILED
    assert "is not a fault point" in proc.stderr
    assert world.target_rows() == []
