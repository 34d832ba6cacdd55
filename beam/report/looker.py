"""The Looker Studio data source of a run's KPI (BDS) tables: each field's type, role, default
aggregation and meaning, from the spec and the tables' own schemas. Written as Markdown beside the
report (``looker-studio.md``) and shown in it, so a dashboard can be built without reading code.

In production the BDS tables are BigQuery tables: Looker Studio's BigQuery connector reads them as
they are; this names the fields it will show and how to aggregate each.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from beam.sql import REPORT_DATE
from beam.warehouse.bigquery_types import bigquery_type as warehouse_type
from beam.warehouse.bigquery_types import standard_name
from controller.spec import Aggregate, Metric, PipelineRun

LOOKER_FILE = "looker-studio.md"

LOOKER_TYPES = {
    "STRING": "Text",
    "INT64": "Number",
    "NUMERIC": "Number",
    "FLOAT64": "Number",
    "BOOL": "Boolean",
    "DATE": "Date",
    "TIMESTAMP": "Date & Time",
}
DEFAULT_AGGREGATION = {
    "count": "Sum",
    "sum": "Sum",
    "min": "Min",
    "max": "Max",
    "avg": "Average (approximate across rows: see the field)",
    "count_distinct": "None (not additive across rows)",
}


@dataclass(frozen=True)
class Field:
    name: str
    bigquery_type: str
    role: str  # Dimension | Metric
    aggregation: str
    description: str

    @property
    def looker_type(self) -> str:
        return LOOKER_TYPES.get(self.bigquery_type, "Text")


def bigquery_type(kind: pa.DataType) -> str:
    """The standard SQL type Looker Studio names for a column as the warehouse holds it: any decimal
    is NUMERIC, any timestamp TIMESTAMP, and a type Looker does not type is STRING."""
    if pa.types.is_decimal(kind):
        return "NUMERIC"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    name = standard_name(warehouse_type(kind))
    return name if name in LOOKER_TYPES else "STRING"


def fields_of(run: PipelineRun, aggregate: Aggregate, schema: pa.Schema | None) -> list[Field]:
    """The fields of one KPI table, in its column order; types from ``schema`` when the table exists."""
    types = {f.name: bigquery_type(f.type) for f in schema} if schema is not None else {}
    source = {c.name: c for c in run.spec.source.columns}
    derived = {d.name: d.expr for d in (run.spec.transform.derive if run.spec.transform else [])}
    tds = run.spec.transform.output.table if run.spec.transform else run.spec.load.table
    out = []
    for name in aggregate.group_by:
        column = source.get(name)
        if name in derived:
            meaning = f"derived in the TDS table: {derived[name]}"
        elif column is not None:
            header = f" (header '{column.from_}')" if column.from_ else ""
            meaning = column.description or f"the source's {name}{header}{_cleaning(run, name)}"
        else:
            meaning = "column of the TDS table"
        kind = types.get(name) or (column.type.value if column is not None else "STRING")
        out.append(Field(name, kind, "Dimension", "-", f"Group: {meaning} (from {tds})."))
    for metric in aggregate.metrics:
        out.append(
            Field(
                metric.name,
                types.get(metric.name, "INT64" if metric.agg in ("count", "count_distinct") else "NUMERIC"),
                "Metric",
                DEFAULT_AGGREGATION[metric.agg],
                _metric_meaning(metric, aggregate),
            )
        )
    if aggregate.report_date:
        out.append(
            Field(
                REPORT_DATE, "DATE", "Dimension", "-", "The date (UTC) the run that computed the row started."
            )
        )
    return out


def _cleaning(run: PipelineRun, column: str) -> str:
    """How the transform cleans a column, in words (", trimmed, lower case, NULL as 'unassigned'")."""
    words: list[str] = []
    for rule in run.spec.transform.standardize if run.spec.transform else []:
        if rule.column not in (column, "*"):
            continue
        words += ["trimmed"] if rule.trim else []
        words += [f"{rule.case} case"] if rule.case else []
        words += [f"{', '.join(map(repr, rule.null_values))} as NULL"] if rule.null_values else []
        words += [f"NULL as {rule.fill_null!r}"] if rule.fill_null is not None else []
    return f", {', '.join(words)}" if words else ""


def _cell(text: str) -> str:
    """Markdown table cells end at a bare |."""
    return text.replace("|", "\\|")


def _metric_meaning(metric: Metric, aggregate: Aggregate) -> str:
    groups = ", ".join(aggregate.group_by) or "the whole table"
    what = metric.column or (f"({metric.expr})" if metric.expr else "")
    text = {
        "count": "Number of rows",
        "sum": f"Sum of {what}",
        "avg": f"Average of {what}",
        "min": f"Smallest {what}",
        "max": f"Largest {what}",
        "count_distinct": f"Number of distinct {what}",
    }[metric.agg]
    text += f" per {groups}."
    if metric.agg == "avg":
        text += " Averaging it again over rows weighs every group alike: chart it with all its dimensions."
    if metric.agg == "count_distinct":
        text += " Distinct counts do not add up across groups: chart it with all its dimensions."
    return text


def markdown(run: PipelineRun, schemas: dict[str, pa.Schema | None]) -> str:
    """The data-source document of every KPI table of ``run`` (``schemas``: table -> its schema)."""
    lines = [
        f"# Looker Studio data sources of PipelineRun {run.metadata.name}",
        "",
        "Connect each table with Looker Studio's BigQuery connector (project, dataset, table). Each row",
        "of a KPI table is one group; dimensions are its groupBy columns, metrics are computed per group.",
        "Set each field's type and default aggregation as below. The table's description (and",
        "`_dataops.lineage` locally) names the run, source and spec generation that wrote it.",
    ]
    for i, aggregate in enumerate(run.spec.aggregate):
        table = aggregate.output.table
        lines += [
            "",
            f"## `{table}` ({aggregate.name or f'aggregate {i}'})",
            "",
            "| field | BigQuery type | Looker Studio type | role | default aggregation | description |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| `{f.name}` | {f.bigquery_type} | {f.looker_type} | {f.role} | {f.aggregation}"
            f" | {_cell(f.description)} |"
            for f in fields_of(run, aggregate, schemas.get(table))
        ]
    return "\n".join(lines) + "\n"
