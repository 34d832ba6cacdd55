"""A run's facts as plotly figures: the stage timeline, rows per stage, rejects by reason, KPI metrics.

Every figure is a ``plotly.graph_objects.Figure``; :mod:`beam.report.page` inlines them. One bar of a KPI
chart is one row of the KPI table: x is the first ``groupBy`` column, colour the others; a date or
time as first column draws lines instead.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import plotly.graph_objects as go
import pyarrow as pa

from beam.report.facts import KpiTable, RejectReason, StageFact

STATE_COLOURS = {
    "Succeeded": "#2e7d32",
    "Failed": "#c62828",
    "Running": "#1565c0",
    "Pending": "#9e9e9e",
    "Cancelled": "#6d4c41",
}
ROW_COLOURS = {"in": "#90a4ae", "out": "#1565c0", "rejected": "#c62828"}
LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "height": 340,
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": -0.2},
}


def stage_timeline(stages: list[StageFact]) -> go.Figure:
    """One horizontal bar per stage that ran, from its start to its end, coloured by its state."""
    ran = [s for s in stages if s.start is not None]
    t0 = min((s.start for s in ran if s.start), default=None)
    fig = go.Figure()
    for s in ran:
        assert s.start is not None and t0 is not None
        begin = (s.start - t0).total_seconds()
        length = s.seconds if s.seconds is not None else 0.0
        fig.add_trace(
            go.Bar(
                name=s.name,
                y=[s.name],
                x=[max(length, 0.05)],
                base=[begin],
                orientation="h",
                marker_color=STATE_COLOURS.get(s.state, "#9e9e9e"),
                text=[f"{s.state} · {length:.1f}s"],
                textposition="inside",
                hovertemplate=f"{s.name}: {s.state}<br>start +%{{base:.1f}}s<br>%{{x:.1f}}s<extra></extra>",
                showlegend=False,
            )
        )
    fig.update_layout(
        **LAYOUT | {"height": 110 + 40 * max(len(ran), 1)},
        title="Stages (seconds since the run started)",
        xaxis_title="seconds",
        yaxis={"autorange": "reversed", "type": "category"},
        barmode="overlay",
    )
    return fig


def stage_rows(stages: list[StageFact]) -> go.Figure:
    """Rows in, out and rejected per stage."""
    names = [s.name for s in stages]
    fig = go.Figure()
    for key, label, values in (
        ("in", "rows in", [s.rows_in for s in stages]),
        ("out", "rows out", [s.rows_out for s in stages]),
        ("rejected", "rejected", [s.rows_rejected for s in stages]),
    ):
        fig.add_trace(go.Bar(name=label, x=names, y=values, marker_color=ROW_COLOURS[key]))
    fig.update_layout(**LAYOUT, title="Rows per stage", barmode="group")
    return fig


def rejects_by_reason(reasons: list[RejectReason]) -> go.Figure:
    """Rejected rows per (rule, column), the most frequent first."""
    labels = [f"{r.rule} · {r.column}" if r.column else r.rule for r in reasons]
    fig = go.Figure(
        go.Bar(
            x=[r.rows for r in reasons],
            y=labels,
            orientation="h",
            marker_color=ROW_COLOURS["rejected"],
            text=[r.rows for r in reasons],
            textposition="auto",
        )
    )
    fig.update_layout(
        **LAYOUT
        | {"height": 110 + 32 * max(len(reasons), 1), "margin": {"l": 20, "r": 20, "t": 50, "b": 40}},
        title="Rejected rows by reason",
        yaxis={"autorange": "reversed", "type": "category", "automargin": True},
        xaxis_title="rows",
    )
    return fig


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def _is_temporal(rows: pa.Table, column: str) -> bool:
    kind = rows.schema.field(column).type
    return bool(pa.types.is_date(kind) or pa.types.is_timestamp(kind))


def kpi_chart(kpi: KpiTable, metric: str) -> go.Figure:
    """One metric of a KPI table: a bar per row (x: first groupBy column, colour: the others); lines
    when the first groupBy column is a date or a time."""
    assert kpi.rows is not None
    rows = kpi.rows.to_pylist()
    fig = go.Figure()
    if not kpi.group_by:
        fig.add_trace(go.Bar(x=[metric], y=[_plain(r[metric]) for r in rows], name=metric))
    else:
        x_col, series_cols = kpi.group_by[0], kpi.group_by[1:]
        line = _is_temporal(kpi.rows, x_col)
        series: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            if r[metric] is None:
                continue
            key = " / ".join("∅" if r[c] is None else str(r[c]) for c in series_cols) or metric
            series.setdefault(key, []).append(r)
        for key, found in series.items():
            xs = [_x_value(r[x_col]) for r in found]
            ys = [_plain(r[metric]) for r in found]
            trace = (
                go.Scatter(x=xs, y=ys, name=key, mode="lines+markers")
                if line
                else go.Bar(x=xs, y=ys, name=key)
            )
            fig.add_trace(trace)
        fig.update_layout(
            xaxis_title=x_col,
            legend_title_text=" / ".join(series_cols),
            showlegend=bool(series_cols),
            barmode="stack" if _additive(kpi, metric) else "group",
        )
        if not line:
            fig.update_xaxes(type="category")
        elif pa.types.is_date(kpi.rows.schema.field(x_col).type):
            days = len({r[x_col] for r in rows})
            fig.update_xaxes(tickformat="%Y-%m-%d", **({"dtick": 86_400_000} if days <= 31 else {}))
    agg = next((m.agg for m in kpi.metrics if m.name == metric), "")
    fig.update_layout(
        **LAYOUT
        | {
            "height": 380,
            "legend": {"orientation": "v", "x": 1.02, "y": 1, "font": {"size": 11}},
            "margin": {"l": 60, "r": 10, "t": 50, "b": 40},
        },
        title=f"{metric} ({agg}) by {' and '.join(kpi.group_by) or 'run'}",
    )
    fig.update_xaxes(automargin=True, tickangle=-30)
    fig.update_yaxes(title_text=metric)
    return fig


def _x_value(value: Any) -> Any:
    if value is None:
        return "∅"
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _additive(kpi: KpiTable, metric: str) -> bool:
    """Counts and sums stack (the stack's height means something); averages, extremes and distinct
    counts stand side by side."""
    return next((m.agg for m in kpi.metrics if m.name == metric), "") in ("count", "sum")
