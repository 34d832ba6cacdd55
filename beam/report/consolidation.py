"""The report of a consolidation: each committed cycle's rows merged and where its watermarks moved.

The history is ``_dataops.consolidation_cycles``, one row per cycle that committed (written in the
same transaction as its MERGE and watermark move, so it never disagrees with the target).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from beam.consolidation.sql import CYCLES
from beam.report import charts
from beam.report.facts import ReportInputError
from beam.report.page import Page, cards, esc, table
from beam.warehouse import open_warehouse
from beam.warehouse.duckdb_warehouse import quote_table
from controller.spec import SpecError

MAX_CYCLES = 500
"""The latest cycles drawn at most."""


@dataclass(frozen=True)
class Cycle:
    cycle_id: str
    started_at: datetime
    committed_at: datetime
    extracted: int
    rejoined: int
    staged: int
    inserted: int
    updated: int
    unchanged: int
    watermark_after: dict[str, Any]  # stream -> {"cursor": text, "key": [...]} or None


def read_cycles(workdir: Path, source_name: str) -> list[Cycle]:
    """The committed cycles of ``source_name`` (``namespace/name``), oldest first."""
    warehouse = open_warehouse(workdir)
    if not warehouse.path.exists():
        raise ReportInputError(f"{warehouse.path}: no warehouse in this workdir")
    if not warehouse.exists(CYCLES):
        return []
    rows = warehouse.query_arrow(
        "SELECT cycle_id, started_at, committed_at, coalesce(extracted, 0) AS extracted,"
        " coalesce(rejoined, 0) AS rejoined, coalesce(staged, 0) AS staged, coalesce(inserted, 0) AS inserted,"
        f" coalesce(updated, 0) AS updated, coalesce(unchanged, 0) AS unchanged, watermark_after FROM {quote_table(CYCLES)}"
        f" WHERE source_name = '{source_name.replace(chr(39), chr(39) * 2)}'"
        f" ORDER BY committed_at DESC, cycle_id DESC LIMIT {MAX_CYCLES}"
    ).to_pylist()
    return [
        Cycle(
            **{k: r[k] for k in r if k != "watermark_after"},
            watermark_after=json.loads(r["watermark_after"] or "{}"),
        )
        for r in reversed(rows)
    ]


def merged_per_cycle(cycles: list[Cycle]) -> go.Figure:
    """Rows inserted and updated by each cycle, at the time it committed."""
    when = [c.committed_at for c in cycles]
    fig = go.Figure()
    for label, values, colour in (
        ("inserted", [c.inserted for c in cycles], "#1565c0"),
        ("updated", [c.updated for c in cycles], "#f9a825"),
    ):
        fig.add_trace(
            go.Bar(
                name=label,
                x=when,
                y=values,
                marker_color=colour,
                customdata=[c.cycle_id for c in cycles],
                hovertemplate="%{customdata}<br>%{y} " + label + "<extra></extra>",
            )
        )
    fig.update_layout(**charts.LAYOUT, title="Rows merged per cycle", barmode="stack", yaxis_title="rows")
    return fig


def watermark_progress(cycles: list[Cycle]) -> go.Figure:
    """Each stream's watermark cursor after each cycle, against the time the cycle committed."""
    streams = sorted({s for c in cycles for s in c.watermark_after})
    fig = go.Figure()
    for stream in streams:
        xs, ys, keys = [], [], []
        for c in cycles:
            mark = c.watermark_after.get(stream)
            if mark:
                xs.append(c.committed_at)
                ys.append(_cursor_value(mark.get("cursor")))
                keys.append(", ".join(map(str, mark.get("key") or [])))
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                name=stream,
                mode="lines+markers",
                customdata=keys,
                hovertemplate="%{y} (key %{customdata})<extra>" + stream + "</extra>",
            )
        )
    fig.update_layout(
        **charts.LAYOUT, title="Watermark after each cycle", yaxis_title="cursor", xaxis_title="committed at"
    )
    return fig


def _cursor_value(text: Any) -> Any:
    """A cursor as plotly can place it: a number, an ISO time, else the text (a category axis)."""
    value = str(text)
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return value


def write_consolidation_report(spec: Path, workdir: Path, output: Path | None = None) -> Path:
    """Write the report of the IngestionSource in ``spec`` (default
    ``<workdir>/consolidation/<namespace>/<name>/report.html``) and return where it is."""
    from beam.consolidation import load_ingestion_source
    from beam.consolidation.cycle import consolidation_of

    try:
        source = load_ingestion_source(spec)
    except SpecError as exc:
        raise ReportInputError(str(exc)) from None
    name, consolidation = consolidation_of(source)
    cycles = read_cycles(workdir, name)
    target = (
        output or workdir / "consolidation" / source.metadata.namespace / source.metadata.name / "report.html"
    )
    markup = render_consolidation_report(name, consolidation.target.table, cycles, datetime.now(UTC))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(markup, encoding="utf-8")
    os.replace(tmp, target)
    return target


def render_consolidation_report(name: str, target: str, cycles: list[Cycle], now: datetime) -> str:
    page = Page(title=f"Consolidation {name}", subtitle=f"into {esc(target)}")
    items = [
        ("cycles committed", f"{len(cycles):,}"),
        ("rows inserted", f"{sum(c.inserted for c in cycles):,}"),
        ("rows updated", f"{sum(c.updated for c in cycles):,}"),
        ("last cycle", f"{cycles[-1].committed_at:%Y-%m-%d %H:%M}" if cycles else "none"),
    ]
    page.add(f'<section id="overview"><h2>Overview</h2>{cards(items)}</section>')
    if not cycles:
        page.add('<section id="cycles"><p class="note">No cycle has committed yet.</p></section>')
        return page.render(now)
    rows = [
        [
            f"<code>{esc(c.cycle_id)}</code>",
            esc(f"{c.committed_at:%Y-%m-%d %H:%M:%S}"),
            f"{c.extracted:,}",
            f"{c.rejoined:,}",
            f"{c.inserted:,}",
            f"{c.updated:,}",
            f"{c.unchanged:,}",
            esc("; ".join(f"{s}: {m['cursor']}" for s, m in sorted(c.watermark_after.items()) if m)),
        ]
        for c in reversed(cycles)
    ]
    page.add(
        '<section id="cycles"><h2>Cycles</h2>'
        + page.chart(merged_per_cycle(cycles), "merged")
        + page.chart(watermark_progress(cycles), "watermark")
        + table(
            [
                "cycle",
                "committed",
                "extracted",
                "re-merged",
                "inserted",
                "updated",
                "unchanged",
                "watermark after",
            ],
            rows,
            numeric=(2, 3, 4, 5, 6),
        )
        + "</section>"
    )
    return page.render(now)
