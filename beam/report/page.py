"""Figures and tables as one self-contained HTML page: plotly's JavaScript is inlined once, the styles
are inline, nothing is fetched when the page opens (a Data Docs link is the only way out)."""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

STYLE = """
:root { --ok: #2e7d32; --bad: #c62828; --run: #1565c0; --muted: #607d8b; --line: #e0e6ea; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2a30; background: #f5f7f8; }
header { background: #12232e; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .meta { color: #b0c4cf; font-size: 13px; }
main { max-width: 1240px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 16px 20px;
          margin: 16px 0; }
section h2 { margin: 0 0 10px; font-size: 17px; }
section h3 { margin: 18px 0 6px; font-size: 15px; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; font-size: 12px; font-weight: 600;
         color: #fff; background: var(--muted); vertical-align: middle; margin-left: 8px; }
.badge.Succeeded, .badge.pass { background: var(--ok); }
.badge.Failed, .badge.fail { background: var(--bad); }
.badge.Running { background: var(--run); }
.cards { display: flex; gap: 12px; flex-wrap: wrap; }
.card { flex: 1 1 160px; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.card .n { font-size: 24px; font-weight: 600; }
.card .l { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.message { white-space: pre-wrap; word-break: break-word; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 8px; }
.note { color: var(--muted); font-size: 12px; }
a { color: var(--run); }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 12px; }
"""

CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def badge(text: str, kind: str | None = None) -> str:
    return f'<span class="badge {esc(kind or text)}">{esc(text)}</span>'


def link(target: Path, page: Path, label: str) -> str:
    """A relative link from the page to a file beside it (the run folder moves as one)."""
    href = os.path.relpath(target, page.parent).replace(os.sep, "/")
    return f'<a href="{esc(href)}">{esc(label)}</a>'


class Page:
    """An HTML page assembled section by section; each chart gets a stable id (``chart-<n>``)."""

    def __init__(self, title: str, subtitle: str, heading: str | None = None) -> None:
        self.title = title  # text: the browser tab's
        self.heading = heading or esc(title)  # markup: the page's
        self.subtitle = subtitle
        self.parts: list[str] = []
        self.charts = 0

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def chart(self, fig: go.Figure, kind: str) -> str:
        self.charts += 1
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{self.charts}",
            config=CONFIG,
            default_width="100%",
        )
        return f'<div class="chart" data-kind="{esc(kind)}">{div}</div>'

    def render(self, generated: datetime) -> str:
        return "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{esc(self.title)}</title>",
                f"<style>{STYLE}</style>",
                f'<script type="text/javascript">{get_plotlyjs()}</script>',
                "</head><body>",
                f"<header><h1>{self.heading}</h1><div class='meta'>{self.subtitle}</div></header>",
                "<main>",
                *self.parts,
                "</main>",
                f"<footer>generated {esc(generated.isoformat(timespec='seconds'))} by dataops</footer>",
                "</body></html>",
            ]
        )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] = ()) -> str:
    """Cells are markup: escape text with :func:`esc` before."""
    nums = set(numeric)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cards(items: Iterable[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="n">{n}</div><div class="l">{esc(label)}</div></div>'
            for label, n in items
        )
        + "</div>"
    )
