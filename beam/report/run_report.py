"""The report of one PipelineRun: :func:`write_run_report` reads the run's facts and writes the page."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from beam.report import REPORT_FILE, charts, looker
from beam.report.facts import RunFacts, collect
from beam.report.page import Page, badge, cards, esc, link, table
from controller.spec import PipelineRun


def report_path(run: PipelineRun, workdir: Path) -> Path:
    """Where a run's report lives: ``<workdir>/runs/<namespace>/<name>/report.html``."""
    return workdir / "runs" / run.metadata.namespace / run.metadata.name / REPORT_FILE


def write_run_report(
    run: PipelineRun, workdir: Path, output: Path | None = None, now: datetime | None = None
) -> Path:
    """Write the run's report (by default beside its status) and return where it is."""
    facts = collect(run, workdir)
    target = output or report_path(run, workdir)
    markup = render_run_report(facts, target, now or datetime.now(UTC), run)
    _atomic_write(target, markup)
    if run.spec.aggregate:
        schemas = {k.table: k.schema for k in facts.kpis}
        _atomic_write(target.with_name(looker.LOOKER_FILE), looker.markdown(run, schemas))
    return target


def _atomic_write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)


def render_run_report(facts: RunFacts, target: Path, now: datetime, run: PipelineRun | None = None) -> str:
    when = f"{facts.start:%Y-%m-%d %H:%M:%S} UTC" if facts.start else "not started"
    took = f", {(facts.end - facts.start).total_seconds():.1f}s" if facts.start and facts.end else ""
    shown = facts.source_uri if "://" in facts.source_uri else Path(facts.source_uri).name
    source = f'<span title="{esc(facts.source_uri)}">{esc(shown)}</span>'
    page = Page(
        title=f"PipelineRun {facts.namespace}/{facts.name}",
        subtitle=f"{source} · started {esc(when)}{esc(took)}",
        heading=f"PipelineRun {esc(facts.namespace)}/{esc(facts.name)} {badge(facts.phase)}",
    )
    _overview(page, facts)
    _stages(page, facts, target)
    _validation(page, facts, target)
    _rejects(page, facts)
    _kpis(page, facts)
    if run is not None:
        _looker(page, facts, run, target)
    return page.render(now)


def _overview(page: Page, facts: RunFacts) -> None:
    first = facts.stages[0] if facts.stages else None
    last_out = next((s.rows_out for s in reversed(facts.stages) if s.state == "Succeeded"), 0)
    items = [
        ("rows read", f"{first.rows_in:,}" if first else "0"),
        ("rows rejected", f"{facts.rejected_rows:,}"),
        ("rows out of the last stage", f"{last_out:,}"),
        ("KPI tables", str(sum(k.rows is not None for k in facts.kpis))),
    ]
    message = f'<p class="message">{esc(facts.message)}</p>' if facts.message else ""
    page.add(f'<section id="overview"><h2>Overview</h2>{cards(items)}{message}</section>')


def _stages(page: Page, facts: RunFacts, target: Path) -> None:
    rows = [
        [
            esc(s.name),
            badge(s.state),
            str(s.attempt),
            f"{s.rows_in:,}",
            f"{s.rows_out:,}",
            f"{s.rows_rejected:,}",
            "-" if s.seconds is None else f"{s.seconds:.1f}",
            f'<span class="message">{esc(s.message)}</span>',
            link(s.log, target, "log") if s.log else "",
        ]
        for s in facts.stages
    ]
    page.add(
        '<section id="stages"><h2>Stages</h2>'
        + page.chart(charts.stage_timeline(facts.stages), "timeline")
        + page.chart(charts.stage_rows(facts.stages), "stage-rows")
        + table(
            ["stage", "state", "attempt", "rows in", "rows out", "rejected", "seconds", "message", ""],
            rows,
            numeric=(2, 3, 4, 5, 6),
        )
        + "</section>"
    )


def _validation(page: Page, facts: RunFacts, target: Path) -> None:
    links = []
    if facts.data_docs is not None:
        links.append(link(facts.data_docs, target, "Great Expectations Data Docs"))
    for key, label in (("ge_result", "ge_result.json"), ("summary", "summary.txt")):
        if key in facts.files:
            links.append(link(facts.files[key], target, label))
    more = f'<p class="note">Great Expectations\' own pages: {" · ".join(links)}</p>' if links else ""
    if facts.expectations is None:
        body = '<p class="note">The validate stage left no verdict (it did not run, or stopped before its expectations).</p>'
    elif not facts.expectations:
        body = '<p class="note">The spec declares no expectations: only typing and required columns were checked.</p>'
    else:
        verdict = badge("passed", "pass") if facts.validation_success else badge("failed", "fail")
        rows = [
            [
                f"<code>{esc(e.type)}</code>",
                f"<code>{esc(', '.join(f'{k}={v}' for k, v in e.kwargs.items()))}</code>",
                badge("pass") if e.success else badge("fail"),
                f"{e.unexpected_count:,}",
                "" if e.unexpected_percent is None else f"{e.unexpected_percent:.3g}%",
                esc(
                    f"error: {e.error}"
                    if e.error
                    else ", ".join(e.sample[:10])
                    or (f"observed {e.observed_value}" if e.observed_value else "")
                ),
                _rows_link(facts, e.type, str(e.kwargs.get("column") or "")),
            ]
            for e in facts.expectations
        ]
        passed = sum(e.success for e in facts.expectations)
        validate = next((s for s in facts.stages if s.name == "validate"), None)
        if not facts.validation_success and validate is not None and validate.state == "Succeeded":
            verdict += (
                ' <span class="note">the rows that broke them were set aside (below) and the run went on,'
                f" within spec.validate (onFailure: {esc(facts.on_failure)})</span>"
            )
        body = f"<p>{passed} of {len(facts.expectations)} expectations passed {verdict}</p>" + table(
            ["expectation", "arguments", "result", "unexpected", "%", "sample values / observed", "rows"],
            rows,
            numeric=(3, 4),
        )
    page.add(f'<section id="validation"><h2>Validation</h2>{body}{more}</section>')


def _anchor(rule: str, column: str) -> str:
    return "rejects-" + "".join(c if c.isalnum() else "-" for c in f"{rule}-{column}")


def _rows_link(facts: RunFacts, rule: str, column: str) -> str:
    """A link to the rejected rows of an expectation (row-level ones set rows aside), if any."""
    found = next((r for r in facts.rejects if r.rule == rule and r.column == column), None)
    if found is None:
        return ""
    return f'<a href="#{_anchor(rule, column)}">{found.rows:,} rejected</a>'


def _rejects(page: Page, facts: RunFacts) -> None:
    if not facts.rejects:
        page.add(
            '<section id="rejects"><h2>Rejected rows</h2><p class="note">No row was rejected.</p></section>'
        )
        return
    parts = [
        f'<section id="rejects"><h2>Rejected rows</h2><p>{facts.rejected_rows:,} rows rejected, by reason '
        "(a row may break several rules):</p>",
        page.chart(charts.rejects_by_reason(facts.rejects), "rejects"),
    ]
    for reason in facts.rejects:
        title = f"{reason.rule}" + (f" · {reason.column}" if reason.column else "")
        rows = [
            [
                esc(f"{Path(str(s['file'] or '')).name}:{s['row_number']}"),
                f"<code>{esc(s['value'])}</code>",
                esc(s["message"]),
                f"<code>{esc(s['line_text'])}</code>",
            ]
            for s in reason.samples
        ]
        shown = f" (first {len(reason.samples)})" if reason.rows > len(reason.samples) else ""
        rows_text = "1 row" if reason.rows == 1 else f"{reason.rows:,} rows"
        anchor = _anchor(reason.rule, reason.column)
        parts.append(f'<h3 id="{anchor}">{esc(title)}: {rows_text}{shown}</h3>')
        parts.append(table(["file:row", "value", "message", "row as read"], rows))
    parts.append("</section>")
    page.add("".join(parts))


def _kpis(page: Page, facts: RunFacts) -> None:
    if not facts.kpis:
        return
    parts = ['<section id="kpis"><h2>KPI tables</h2>']
    for kpi in facts.kpis:
        parts.append(f"<h3>{esc(kpi.name)} <code>{esc(kpi.table)}</code></h3>")
        if kpi.rows is None:
            parts.append('<p class="note">Not in the warehouse: the aggregate stage did not write it.</p>')
            continue
        note = f"{kpi.total_rows:,} rows, grouped by {', '.join(kpi.group_by) or 'nothing'}"
        if kpi.truncated:
            note += f"; the charts show the first {kpi.rows.num_rows:,} in groupBy order"
        parts.append(f'<p class="note">{esc(note)}</p><div class="grid">')
        parts += [page.chart(charts.kpi_chart(kpi, m.name), f"kpi:{kpi.table}:{m.name}") for m in kpi.metrics]
        parts.append("</div>")
    parts.append("</section>")
    page.add("".join(parts))


def _looker(page: Page, facts: RunFacts, run: PipelineRun, target: Path) -> None:
    if not run.spec.aggregate:
        return
    parts = [
        '<section id="looker"><h2>For Looker Studio</h2><p class="note">The KPI tables as data sources '
        "(BigQuery connector): each field's type, role and default aggregation; also in "
        f"{link(target.with_name(looker.LOOKER_FILE), target, looker.LOOKER_FILE)}.</p>"
    ]
    for aggregate, kpi in zip(run.spec.aggregate, facts.kpis, strict=True):
        parts.append(f"<h3><code>{esc(kpi.table)}</code></h3>")
        rows = [
            [
                f"<code>{esc(f.name)}</code>",
                esc(f.bigquery_type),
                esc(f.looker_type),
                esc(f.role),
                esc(f.aggregation),
                esc(f.description),
            ]
            for f in looker.fields_of(run, aggregate, kpi.schema)
        ]
        parts.append(
            table(
                [
                    "field",
                    "BigQuery type",
                    "Looker Studio type",
                    "role",
                    "default aggregation",
                    "description",
                ],
                rows,
            )
        )
    parts.append("</section>")
    page.add("".join(parts))
