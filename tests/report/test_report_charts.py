"""KPI charts: one bar per KPI row, a series per other groupBy value, lines over dates."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from beam.report.charts import kpi_chart
from beam.report.facts import KpiMetric, KpiTable

pytestmark = pytest.mark.unit

METRICS = [KpiMetric("items", "count"), KpiMetric("mean", "avg")]


def _kpi(group_by: list[str], rows: dict[str, list[object]]) -> KpiTable:
    table = pa.table(rows)
    return KpiTable("k", "bds.k", group_by, METRICS, table, table.num_rows)


def test_each_kpi_row_is_one_bar_in_the_series_of_its_second_dimension() -> None:
    kpi = _kpi(
        ["grp", "region"],
        {
            "grp": ["a", "a", "b", None],
            "region": ["n", "s", "n", "n"],
            "items": [2, 1, 4, 1],
            "mean": [1.0] * 4,
        },
    )

    fig = kpi_chart(kpi, "items")

    assert {t.name: list(t.x) for t in fig.data} == {"n": ["a", "b", "∅"], "s": ["a"]}
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert fig.layout.barmode == "stack"


def test_rows_without_a_value_draw_no_bar_and_averages_stand_side_by_side() -> None:
    kpi = _kpi(
        ["grp"],
        {"grp": ["a", "b"], "items": [1, 2], "mean": pa.array([Decimal("1.5"), None], pa.decimal128(9, 2))},
    )

    fig = kpi_chart(kpi, "mean")

    assert [list(t.y) for t in fig.data] == [[1.5]]
    assert fig.layout.barmode == "group"


def test_a_date_as_first_dimension_draws_a_line() -> None:
    days = [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]
    kpi = _kpi(["day"], {"day": days, "items": [3, 5], "mean": [1.0, 2.0]})

    fig = kpi_chart(kpi, "items")

    assert [t.type for t in fig.data] == ["scatter"]
    assert list(fig.data[0].x) == ["2026-01-01", "2026-01-02"]


def test_a_table_without_groupby_is_one_bar() -> None:
    kpi = _kpi([], {"items": [7], "mean": [1.0]})

    fig = kpi_chart(kpi, "items")

    assert [list(t.y) for t in fig.data] == [[7]]
