"""Killed at every fault point (a real child process, exit 137), then normal cycles: the same table as
if nothing had happened. Two real processes forced to overlap: the lock keeps the target exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from beam.consolidation import FAULT_EXIT_STATUS, FAULT_POINTS
from tests.consolidation.helpers import ROOT, World, run_module, spec_doc

pytestmark = pytest.mark.integration


def _world(tmp_path: Path) -> World:
    world = World(tmp_path / "work", spec_doc(batch_size=5))
    world.insert_transactions(["T00001", "T00002"])
    world.insert_operations(4, tx_ids=["T00001", "T00002", "T00003", None])
    world.insert_operations(3, tie=True, tx_ids=["T00001"])
    return world


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_cycle_killed_at_fault_point_converges_to_the_uncrashed_table(tmp_path: Path, point: str) -> None:
    world = _world(tmp_path)
    world.cycle()
    world.insert_operations(2, tx_ids=["T00002"])
    world.insert_transactions(["T00003"])  # late: re-merges operation 3
    world.update_operation(1, "settled")

    killed = run_module(
        [str(world.spec_file()), "--workdir", str(world.workdir)], {"DATAOPS_FAULTPOINT": point}
    )
    after_kill = world.query("SELECT count(*) FROM _dataops.consolidation_cycles")[0][0]
    results = world.drain()

    assert killed.returncode == FAULT_EXIT_STATUS, killed.stderr[-2000:]
    assert after_kill == (2 if point == "after_merge" else 1)
    assert results[0].status != "Skipped"  # the dead process's lock is taken over at once
    assert world.target_rows() == world.reference()
    assert world.inserted_total() == len(world.reference())
    assert world.bus.backlog("ops-ids-sub") == 0


def test_two_overlapping_processes_never_merge_at_once(tmp_path: Path) -> None:
    world = _world(tmp_path)
    args = [str(world.spec_file()), "--workdir", str(world.workdir), "--output", "json", "--lock-wait", "0"]
    env = dict(PYTHONPATH=str(ROOT), DATAOPS_BUS="embedded", PATH="/usr/bin:/bin")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "beam.consolidation", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]

    summaries = [json.loads(out) for out, _ in outputs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outputs]
    assert sorted(s["status"] for s in summaries) in (["Merged", "Skipped"], ["Merged", "Merged"])
    world.drain()
    assert world.target_rows() == world.reference()
    assert world.inserted_total() == len(world.reference())
