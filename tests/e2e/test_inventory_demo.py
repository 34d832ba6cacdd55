"""The example PipelineRun end to end through `dataops run`, checked against a plain-Python reference.

The reference below is written from the spec's documented meaning, with the csv module and dicts: it
shares no code with the pipeline.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections import defaultdict
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, query, run_cli

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "inventory"
NULLS = {"", "NULL", "N/A"}
TYPES = {
    "cpu_cores": "INT64",
    "monthly_cost": "NUMERIC",
    "created_date": "DATE",
    "updated_at": "TIMESTAMP",
    "is_active": "BOOL",
}
REQUIRED = {"resource_id", "resource_type", "resource_group", "monthly_cost", "updated_at"}


def _typed(raw: dict[str, str]) -> dict[str, Any] | None:
    """The row with typed values, or None when it is rejected (typing, required, expectations)."""
    row: dict[str, Any] = {}
    for name, text in raw.items():
        value: Any = None if text.strip() in NULLS else text
        if value is not None and name in TYPES:
            kind, text = TYPES[name], value.strip()
            try:
                if kind == "INT64":
                    if not re.fullmatch(r"[+-]?\d+", text):
                        return None
                    value = int(text)
                elif kind == "NUMERIC":
                    value = Decimal(text)
                elif kind == "DATE":
                    value = date.fromisoformat(text)
                elif kind == "TIMESTAMP":
                    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
                elif kind == "BOOL":
                    value = {"true": True, "false": False}[text.lower()]
            except (ValueError, ArithmeticError, KeyError):
                return None
        if value is None and name in REQUIRED:
            return None
        row[name] = value
    if not 0 <= row["monthly_cost"] <= 100000:
        return None
    if row["cpu_cores"] is not None and not 0 <= row["cpu_cores"] <= 512:
        return None
    if not re.search(r"^res-[0-9]{6}$", row["resource_id"]):
        return None
    return row


def _clean(value: str | None, case: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    value = {"lower": value.lower(), "upper": value.upper(), None: value}[case]
    return value or None


def reference(csv_path: Path) -> dict[str, Any]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = [r for r in (_typed(raw) for raw in csv.DictReader(fh)) if r is not None]
    for r in rows:
        r["resource_name"] = _clean(r["resource_name"], None)
        for name in ("resource_type", "resource_group", "location", "owner"):
            r[name] = _clean(r[name], "lower")
        if r["location"] == "unknown":
            r["location"] = None
        r["owner"] = r["owner"] or "unassigned"
        cost = r["monthly_cost"]
        r["cost_band"] = "high" if cost >= 1000 else "medium" if cost >= 100 else "low"
    latest: dict[str, dict[str, Any]] = {}
    for position, r in enumerate(rows):
        r["_pos"] = position
        best = latest.get(r["resource_id"])
        if best is None or (r["updated_at"], position) >= (best["updated_at"], best["_pos"]):
            latest[r["resource_id"]] = r
    by_group: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    by_type: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for r in latest.values():
        by_group[(r["resource_group"], r["location"])].append(r)
        by_type[(r["resource_type"], r["cost_band"])].append(r)
    cost_by_group = {
        k: (len(v), sum(r["monthly_cost"] for r in v), len({r["resource_type"] for r in v}))
        for k, v in by_group.items()
    }
    capacity = {
        k: (
            len(v),
            sum(r["cpu_cores"] or 0 for r in v) if any(r["cpu_cores"] is not None for r in v) else None,
            max(r["monthly_cost"] for r in v),
            sum(1 for r in v if r["is_active"]),
        )
        for k, v in by_type.items()
    }
    return {
        "valid": len(rows),
        "tds": latest,
        "cost_by_group": cost_by_group,
        "capacity": capacity,
        "cost_per_core": {
            k: v["monthly_cost"] / v["cpu_cores"] if v["cpu_cores"] else None for k, v in latest.items()
        },
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("demo")
    shutil.copy(EXAMPLE / "pipelinerun.yaml", folder / "pipelinerun.yaml")
    shutil.copy(EXAMPLE / "inventory.csv", folder / "inventory.csv")
    workdir = folder / "work"
    result = run_cli("run", str(folder / "pipelinerun.yaml"), "--workdir", str(workdir), "--output", "json")
    assert result.code == 0, result.stderr
    return workdir, result.summary


def test_the_example_run_succeeds_through_every_stage(demo: tuple[Path, dict[str, Any]]) -> None:
    _, summary = demo
    assert summary["phase"] == "Succeeded"
    assert [s["name"] for s in summary["stages"]] == ["validate", "load", "transform", "aggregate"]
    assert all(s["state"] == "Succeeded" for s in summary["stages"])


def test_raw_table_holds_exactly_the_valid_rows(demo: tuple[Path, dict[str, Any]]) -> None:
    workdir, summary = demo
    expected = reference(EXAMPLE / "inventory.csv")
    assert query(workdir, "SELECT count(*) FROM inventory_raw.resources")[0][0] == expected["valid"]
    rejected = query(workdir, "SELECT count(DISTINCT row_number) FROM inventory_raw.resources_rejects")[0][0]
    assert rejected == summary["stages"][0]["rowsRejected"] > 0


def test_tds_keeps_the_latest_version_of_each_resource(demo: tuple[Path, dict[str, Any]]) -> None:
    workdir, _ = demo
    expected = reference(EXAMPLE / "inventory.csv")["tds"]
    got = {
        r[0]: r[1:]
        for r in query(
            workdir,
            "SELECT resource_id, updated_at, monthly_cost, owner, location, "
            "cost_band FROM inventory_tds.resources",
        )
    }
    assert set(got) == set(expected)
    for rid, (updated, cost, owner, location, band) in got.items():
        want = expected[rid]
        assert (updated, Decimal(cost), owner, location, band) == (
            want["updated_at"],
            want["monthly_cost"],
            want["owner"],
            want["location"],
            want["cost_band"],
        ), rid


def test_derived_cost_per_core_matches(demo: tuple[Path, dict[str, Any]]) -> None:
    workdir, _ = demo
    expected = reference(EXAMPLE / "inventory.csv")["cost_per_core"]
    for rid, value in query(workdir, "SELECT resource_id, cost_per_core FROM inventory_tds.resources"):
        want = expected[rid]
        if want is None:
            assert value is None, rid
        else:
            # BigQuery: NUMERIC / INT64 is NUMERIC, and ROUND takes halves away from zero.
            assert float(value) == pytest.approx(
                float(Decimal(want).quantize(Decimal("0.01"), ROUND_HALF_UP)), abs=0.006
            ), rid


def test_kpis_match_the_reference(demo: tuple[Path, dict[str, Any]]) -> None:
    workdir, _ = demo
    expected = reference(EXAMPLE / "inventory.csv")
    got = {
        (r[0], r[1]): (r[2], Decimal(str(r[3])), r[4])
        for r in query(
            workdir,
            "SELECT resource_group, location, resources, total_monthly_cost, resource_types "
            "FROM inventory_bds.cost_by_group",
        )
    }
    assert got == {
        k: (n, Decimal(total), types) for k, (n, total, types) in expected["cost_by_group"].items()
    }
    capacity = {
        (r[0], r[1]): (r[2], r[3], Decimal(str(r[4])), r[5])
        for r in query(
            workdir,
            "SELECT resource_type, cost_band, resources, total_cores, max_monthly_cost, active_resources "
            "FROM inventory_bds.capacity_by_type",
        )
    }
    assert capacity == expected["capacity"]


def test_lineage_names_the_run_and_the_source(demo: tuple[Path, dict[str, Any]]) -> None:
    workdir, _ = demo
    rows = query(workdir, "SELECT table_name, run, source_uri, generation FROM _dataops.lineage ORDER BY 1")
    tables = {r[0] for r in rows}
    assert {"inventory_raw.resources", "inventory_tds.resources", "inventory_bds.cost_by_group"} <= tables
    assert all(r[1] == "inventory-demo" and r[2].endswith("inventory.csv") and r[3] == 1 for r in rows)


def test_running_it_again_leaves_the_same_tables(demo: tuple[Path, dict[str, Any]]) -> None:
    workdir, _ = demo
    tables = [
        "inventory_raw.resources",
        "inventory_tds.resources",
        "inventory_bds.cost_by_group",
        "inventory_raw.resources_rejects",
    ]
    before = {t: sorted(map(str, query(workdir, f"SELECT * FROM {t}"))) for t in tables}
    again = run_cli(
        "run", str(workdir.parent / "pipelinerun.yaml"), "--workdir", str(workdir), "--output", "json"
    )
    assert again.code == 0, again.stderr
    after = {t: sorted(map(str, query(workdir, f"SELECT * FROM {t}"))) for t in tables}
    assert after == before
