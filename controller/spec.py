"""The PipelineRun spec (v1alpha1): one typed model, the single source of the CRD schema.

Pure: no I/O here except :func:`load_spec_file`, which only reads the YAML it is given.
The data plane (``beam/``) imports this module too; it imports neither kopf nor Beam.
"""

from __future__ import annotations

import codecs
import difflib
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

API_VERSION = "dataops.io/v1alpha1"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TABLE_REF = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


class SpecError(Exception):
    """A spec a user wrote is wrong. ``problems`` are (yaml path, line or None, message)."""

    def __init__(self, source: str, problems: list[tuple[str, int | None, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [
            f"{source}{f':{line}' if line else ''}: {f'{path}: ' if path else ''}{msg}"
            for path, line, msg in problems
        ]
        super().__init__("\n".join(lines))


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ColumnType(StrEnum):
    STRING = "STRING"
    INT64 = "INT64"
    NUMERIC = "NUMERIC"
    FLOAT64 = "FLOAT64"
    BOOL = "BOOL"
    DATE = "DATE"
    TIMESTAMP = "TIMESTAMP"


TYPE_ALIASES = {
    "INTEGER": "INT64",
    "INT": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "DECIMAL": "NUMERIC",
}


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a valid identifier (letters, digits, underscore)")
    return value


def _table(value: str) -> str:
    if not TABLE_REF.match(value):
        raise ValueError(f"table {value!r} must be 'dataset.table' (letters, digits, underscore)")
    return value


ONE_OR_MANY: dict[str, Any] = {
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 16}],
    "description": "One column, or a list of columns.",
}


def _STRING_OR(model: type[BaseModel]) -> dict[str, Any]:
    """A field a user may write as a bare string or as the full object."""
    return {"anyOf": [{"type": "string"}, model.model_json_schema(by_alias=True)]}


def bare_on(data: Any) -> Any:
    """YAML 1.1 reads a bare ``on:`` key as true (PyYAML) or "true" (kubectl); take it back."""
    if isinstance(data, dict) and "on" not in data:
        for key in (True, "true"):
            if key in data:
                data = dict(data)
                data["on"] = data.pop(key)
                break
    return data


class Column(Model):
    name: str = Field(description="Column name in the warehouse table.")
    type: ColumnType = Field(default=ColumnType.STRING, description="BigQuery type of the column.")
    required: bool = Field(default=False, description="A row with no value here is rejected.")
    from_: str | None = Field(default=None, alias="from", description="Header the column is read from.")
    description: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _alias_type(cls, v: Any) -> Any:
        return TYPE_ALIASES.get(str(v).upper(), str(v).upper()) if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _identifier(v, "column name")


class Source(Model):
    uri: str = Field(
        description="Local path, file:// or gs:// URI; may be a glob. Relative to the YAML file."
    )
    format: Literal["csv"] = "csv"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = Field(default=True, description="The first row is a header.")
    encoding: str = Field(default="utf-8")
    quote: str = Field(default='"', max_length=1)
    escape: str = Field(default='"', max_length=1)
    null_markers: list[str] = Field(
        default_factory=lambda: [""], alias="nullMarkers", description="Cell values read as NULL."
    )
    header_case: Literal["asis", "snake"] = Field(default="asis", alias="headerCase")
    columns: list[Column] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _lift_csv_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("csv"), dict):
            data = dict(data)
            data.update(data.pop("csv"))
        return data

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, v: str) -> str:
        try:
            info = codecs.lookup(v)
        except LookupError:
            raise ValueError(f"{v!r} is not a known encoding (utf-8, latin-1, cp1252, utf-16, ...)") from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{v!r} is a codec, not a text encoding (utf-8, latin-1, cp1252, utf-16, ...)")
        return v

    @model_validator(mode="after")
    def _distinct_delimiter(self) -> Source:
        if self.quote and self.quote == self.delimiter:
            raise ValueError(f"quote {self.quote!r} is also the delimiter; give them different characters")
        return self

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, v: list[Column]) -> list[Column]:
        seen: set[str] = set()
        for c in v:
            if c.name.lower() in seen:
                raise ValueError(f"column {c.name!r} is declared twice")
            seen.add(c.name.lower())
        return v


class Expectation(Model):
    type: str = Field(
        description="Great Expectations expectation name, e.g. expect_column_values_to_be_between."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _snake(cls, v: str) -> str:
        if not re.match(r"^expect_[a-z0-9_]+$", v):
            raise ValueError(f"{v!r} is not a Great Expectations expectation name (expect_...)")
        return v


TOPIC_NAME = r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$"


class Notify(Model):
    """Pub/Sub topics told of each validated file: one message per file, on one of the two."""

    success_topic: str | None = Field(
        default=None,
        alias="successTopic",
        pattern=TOPIC_NAME,
        description="Topic told of each file of a run whose validation passed (the seed's csv-success-topic).",
    )
    error_topic: str | None = Field(
        default=None,
        alias="errorTopic",
        pattern=TOPIC_NAME,
        description="Topic told of each file of a run whose validation failed (the seed's csv-error-topic).",
    )


class Validate(Model):
    expectations: list[Expectation] = Field(default_factory=list)
    notify: Notify | None = Field(
        default=None,
        description="Pub/Sub topics (in the bus's project) that get one message per validated file.",
    )
    on_failure: Literal["fail", "quarantine"] = Field(default="fail", alias="onFailure")
    max_rejected_percent: float | None = Field(default=None, ge=0, le=100, alias="maxRejectedPercent")

    def rejected_threshold(self) -> float:
        """Largest share of rejected rows (percent) that still lets the run go on."""
        if self.max_rejected_percent is not None:
            return self.max_rejected_percent
        return 0.0 if self.on_failure == "fail" else 100.0


class Partition(Model):
    column: str
    granularity: Literal["HOUR", "DAY", "MONTH", "YEAR"] = "DAY"


class Load(Model):
    table: str
    write_mode: Literal["append", "replace"] = Field(default="replace", alias="writeMode")
    partition_by: Annotated[Partition | None, WithJsonSchema(_STRING_OR(Partition))] = Field(
        default=None, alias="partitionBy", description="Time partitioning of the raw table (BigQuery)."
    )
    cluster_by: list[str] = Field(
        default_factory=list, alias="clusterBy", max_length=4, description="Clustering columns (BigQuery)."
    )

    @field_validator("partition_by", mode="before")
    @classmethod
    def _part(cls, v: Any) -> Any:
        return {"column": v} if isinstance(v, str) else v

    @model_validator(mode="before")
    @classmethod
    def _mode_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mode" in data and "writeMode" not in data:
            data = dict(data)
            data["writeMode"] = data.pop("mode")
        return data

    @field_validator("table")
    @classmethod
    def _t(cls, v: str) -> str:
        return _table(v)


class Standardize(Model):
    column: str = Field(description="Column to clean, or '*' for every STRING column.")
    trim: bool = True
    case: Literal["lower", "upper", "title"] | None = None
    empty_as_null: bool = Field(default=True, alias="emptyAsNull")
    null_values: list[str] = Field(
        default_factory=list, alias="nullValues", description="Values (after trim and case) read as NULL."
    )
    fill_null: str | int | float | bool | None = Field(
        default=None, alias="fillNull", description="Value that replaces NULL."
    )


class Dedupe(Model):
    key: list[str] = Field(min_length=1)
    order_by: Annotated[list[str], WithJsonSchema(ONE_OR_MANY)] = Field(
        alias="orderBy", min_length=1, description="Column(s) ordering versions of a key; the largest wins."
    )

    @field_validator("order_by", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


class Derive(Model):
    name: str
    expr: str = Field(min_length=1, description="SQL expression over the row's columns (BigQuery dialect).")

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _identifier(v, "derived column name")


class Output(Model):
    table: str
    partition_by: Annotated[Partition | None, WithJsonSchema(_STRING_OR(Partition))] = Field(
        default=None, alias="partitionBy"
    )
    cluster_by: list[str] = Field(default_factory=list, alias="clusterBy", max_length=4)
    metadata: bool = Field(default=False, description="Add ingestion_timestamp and source_uri columns.")

    @field_validator("partition_by", mode="before")
    @classmethod
    def _part(cls, v: Any) -> Any:
        return {"column": v} if isinstance(v, str) else v

    @field_validator("table")
    @classmethod
    def _t(cls, v: str) -> str:
        return _table(v)


class LookupColumn(Model):
    name: str = Field(description="Column of the reference data.")
    as_: str | None = Field(default=None, alias="as", description="Its name in the output (default: name).")

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @field_validator("name", "as_")
    @classmethod
    def _n(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v, "column name")

    @property
    def output_name(self) -> str:
        return self.as_ or self.name


LOOKUP_KEYS: dict[str, Any] = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 16},
        {"type": "object", "additionalProperties": {"type": "string"}},
    ]
}


class Lookup(Model):
    """Reference data joined to each record: a warehouse table, or a CSV uri typed by schema."""

    # The order is fixed: standardize -> lookups (in list order) -> derive -> filter -> dedupe.
    # type left keeps a record whose key has no match; onMissing says what then becomes of it
    # (keep: its looked-up columns are NULL; reject: it goes to <output table>_rejects with the reason
    # lookup_missing:<label>; fail: the stage fails naming the first such keys). type inner drops it
    # (counted). A NULL key matches nothing. A key that repeats in the reference is an error naming it,
    # unless pick: latest keeps the row with the largest orderBy (then the later row).

    name: str | None = Field(
        default=None,
        description="Names the lookup in counts, rejects and errors (default: its table, or its file's name).",
    )
    table: str | None = Field(default=None, description="The reference table, 'dataset.table'.")
    uri: str | None = Field(
        default=None,
        description="The reference CSV: local path, file:// URI or glob; relative to the YAML file.",
    )
    schema_: list[Column] = Field(
        default_factory=list,
        alias="schema",
        description="With uri: the CSV's columns, as in spec.source.columns (name, type, required, from).",
    )
    delimiter: str = Field(
        default=",", min_length=1, max_length=1, description="With uri: the CSV's delimiter."
    )
    null_markers: list[str] = Field(
        default_factory=lambda: [""], alias="nullMarkers", description="With uri: cell values read as NULL."
    )
    on: Annotated[dict[str, str], WithJsonSchema(LOOKUP_KEYS)] = Field(
        description="Key columns: a list when both sides name them alike, or {record column: reference column}."
    )
    columns: list[Annotated[LookupColumn, WithJsonSchema(_STRING_OR(LookupColumn))]] = Field(
        min_length=1, description="Reference columns added to each record: a name, or {name, as} to rename."
    )
    type: Literal["left", "inner"] = Field(
        default="left", description="left keeps records whose key has no match; inner drops them."
    )
    on_missing: Literal["keep", "reject", "fail"] = Field(
        default="keep",
        alias="onMissing",
        description="With type left, a record whose key has no match: keep (NULLs), reject, or fail the run.",
    )
    pick: Literal["unique", "latest"] = Field(
        default="unique",
        description="unique: a repeated key in the reference is an error; latest: the largest orderBy wins.",
    )
    order_by: Annotated[list[str], WithJsonSchema(ONE_OR_MANY)] = Field(
        default_factory=list,
        alias="orderBy",
        description="With pick latest: reference column(s) ordering the rows of a key; the largest wins.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data: Any) -> Any:
        return bare_on(data)

    @field_validator("table")
    @classmethod
    def _t(cls, v: str | None) -> str | None:
        return None if v is None else _table(v)

    @field_validator("name")
    @classmethod
    def _n(cls, v: str | None) -> str | None:
        return None if v is None else _identifier(v, "lookup name")

    @field_validator("on", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {v: v}
        return {c: c for c in v} if isinstance(v, list) else v

    @field_validator("on")
    @classmethod
    def _key_names(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("give at least one key column")
        for left, right in v.items():
            _identifier(left, "key column")
            _identifier(right, "key column")
        return v

    @field_validator("order_by", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _consistent(self) -> Lookup:
        if (self.table is None) == (self.uri is None):
            raise ValueError("give the reference as 'table' or 'uri', one of them")
        if self.uri is not None and not self.schema_:
            raise ValueError("a uri lookup needs 'schema': the CSV's columns, as in spec.source.columns")
        if self.table is not None and self.schema_:
            raise ValueError("a table lookup reads its columns from the warehouse: remove 'schema'")
        if self.type == "inner" and self.on_missing != "keep":
            raise ValueError("onMissing applies to type: left; type: inner drops records with no match")
        if self.pick == "latest" and not self.order_by:
            raise ValueError("pick: latest needs orderBy: the column(s) saying which row of a key wins")
        if self.pick == "unique" and self.order_by:
            raise ValueError("orderBy only applies with pick: latest")
        return self

    @property
    def label(self) -> str:
        """The lookup's name: ``name``, else its table, else its file's name without extension."""
        if self.name is not None:
            return self.name
        if self.table is not None:
            return self.table
        return Path(str(self.uri)).name.split(".")[0]


class Transform(Model):
    standardize: list[Standardize] = Field(default_factory=list)
    lookups: list[Lookup] = Field(
        default_factory=list, description="Reference data joined to each record, in order, before derive."
    )
    derive: list[Derive] = Field(default_factory=list)
    filter: str | None = Field(
        default=None, description="Boolean SQL expression; rows where it is not TRUE go."
    )
    keep_filtered: bool = Field(
        default=False,
        alias="keepFiltered",
        description="Keep the rows the filter drops in <output table>_rejects, with the reason 'filtered'.",
    )
    dedupe: Dedupe | None = None
    output: Output


class Metric(Model):
    name: str
    agg: Literal["sum", "count", "count_distinct", "avg", "min", "max"]
    column: str | None = None
    expr: str | None = None

    @field_validator("name")
    @classmethod
    def _n(cls, v: str) -> str:
        return _identifier(v, "metric name")

    @model_validator(mode="after")
    def _one_input(self) -> Metric:
        if self.column is not None and self.expr is not None:
            raise ValueError(f"metric {self.name!r}: give 'column' or 'expr', not both")
        if self.column is None and self.expr is None and self.agg != "count":
            raise ValueError(f"metric {self.name!r}: agg {self.agg!r} needs 'column' or 'expr'")
        return self


class AggregateOutput(Model):
    table: str
    partition_by: Annotated[Partition | None, WithJsonSchema(_STRING_OR(Partition))] = Field(
        default=None, alias="partitionBy", description="Time partitioning of the KPI table (BigQuery)."
    )
    cluster_by: list[str] = Field(
        default_factory=list, alias="clusterBy", max_length=4, description="Clustering columns (BigQuery)."
    )

    @field_validator("partition_by", mode="before")
    @classmethod
    def _part(cls, v: Any) -> Any:
        return {"column": v} if isinstance(v, str) else v

    @field_validator("table")
    @classmethod
    def _t(cls, v: str) -> str:
        return _table(v)


class Aggregate(Model):
    name: str | None = None
    output: Annotated[AggregateOutput, WithJsonSchema(_STRING_OR(AggregateOutput))]
    group_by: list[str] = Field(default_factory=list, alias="groupBy")
    metrics: list[Metric] = Field(min_length=1)
    report_date: bool = Field(default=False, alias="reportDate")

    @field_validator("output", mode="before")
    @classmethod
    def _out(cls, v: Any) -> Any:
        return {"table": v} if isinstance(v, str) else v


class Retries(Model):
    limit: int = Field(default=2, ge=0, le=10, description="Application failures tolerated per stage.")
    backoff_seconds: float = Field(default=10, ge=0, le=3600, alias="backoffSeconds")
    max_backoff_seconds: float = Field(default=300, ge=0, le=86400, alias="maxBackoffSeconds")


class Timeouts(Model):
    stage_seconds: int | None = Field(default=None, ge=1, alias="stageSeconds")
    run_seconds: int | None = Field(default=None, ge=1, alias="runSeconds")


class Warehouse(Model):
    """Where this run's tables live; a field left unset keeps the installation's choice (Helm warehouse.*)."""

    type: Literal["duckdb", "bigquery"] | None = Field(
        default=None,
        description="duckdb (a file in the stage's workdir) or bigquery (default: DATAOPS_WAREHOUSE).",
    )
    project: str | None = Field(
        default=None, description="BigQuery project (default: DATAOPS_BIGQUERY_PROJECT)."
    )
    location: str | None = Field(
        default=None, description="BigQuery location, e.g. EU (default: DATAOPS_BIGQUERY_LOCATION)."
    )


# KPI tables per run: each is named in the aggregate stage's status record, which must stay small.
MAX_AGGREGATES = 50


class PipelineRunSpec(Model):
    source: Source
    validate_: Validate = Field(default_factory=Validate, alias="validate")
    load: Load
    transform: Transform | None = None
    aggregate: list[Aggregate] = Field(default_factory=list, max_length=MAX_AGGREGATES)
    runner: Literal["direct", "dataflow"] = "direct"
    warehouse: Warehouse | None = None
    retries: Retries = Field(default_factory=Retries)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    cancel: bool = Field(default=False, description="Set to true to cancel the run.")
    rerun: int = Field(default=0, ge=0, description="Raise it to re-run a failed run from its failed stage.")

    @model_validator(mode="after")
    def _aggregate_needs_transform(self) -> PipelineRunSpec:
        if self.aggregate and self.transform is None:
            raise ValueError("aggregate reads the transform's output table: add spec.transform")
        return self


class Metadata(Model):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str = "default"
    generation: int = 1


class PipelineRun(Model):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    api_version: Literal["dataops.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["PipelineRun"]
    metadata: Metadata
    spec: PipelineRunSpec


class SourceTemplate(Source):
    """A source whose ``uri`` the IngestionSource fills in with each new object."""

    uri: str = Field(default="", description="Filled in with the object's URI by the IngestionSource.")


class PipelineRunTemplate(PipelineRunSpec):
    """The spec of the PipelineRun an IngestionSource creates for each new object."""

    source: SourceTemplate


class FileNotifications(Model):
    """Where the bucket's OBJECT_FINALIZE notifications are pulled from (a gs:// prefix only)."""

    subscription: str = Field(
        pattern=TOPIC_NAME,
        description="Pub/Sub subscription (of this source alone) on the topic the bucket notifies.",
    )
    max_messages: int = Field(default=100, ge=1, le=1000, alias="maxMessages")


class FilesWatch(Model):
    prefix: str = Field(description="gs://bucket/prefix/ or a local folder whose new objects are run.")
    notifications: FileNotifications | None = Field(
        default=None,
        description="Notifications first (new objects within seconds), the listing as the fallback.",
    )
    pattern: str = Field(default="*.csv", description="Glob on the object name below the prefix.")
    template: PipelineRunTemplate
    max_concurrent_runs: int = Field(default=2, ge=1, le=100, alias="maxConcurrentRuns")
    poll_seconds: int = Field(
        default=60,
        ge=5,
        le=86400,
        alias="pollSeconds",
        description="How often the prefix is listed (the fallback to notifications).",
    )

    @model_validator(mode="after")
    def _notifications_need_a_bucket(self) -> FilesWatch:
        if self.notifications is not None and not self.prefix.startswith("gs://"):
            raise ValueError("notifications need a gs:// prefix (a bucket's object notifications)")
        return self


class TableRef(Model):
    table: str

    @field_validator("table")
    @classmethod
    def _t(cls, v: str) -> str:
        return _table(v)


class ConsolidationSource(TableRef):
    id: str = Field(description="The operation id column.")
    cursor: str = Field(description="The timestamp column that grows as rows arrive.")


class Join(TableRef):
    on: list[str] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _yaml11_on(cls, data: Any) -> Any:
        return bare_on(data)

    type: Literal["left", "inner"] = "left"
    columns: list[str] = Field(min_length=1)
    cursor: str | None = Field(
        default=None,
        description="A joined row changing after its operation was merged re-merges that operation.",
    )


class Target(TableRef):
    key: list[str] = Field(min_length=1)


CRON = re.compile(r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$")


class Consolidation(Model):
    schedule: str = Field(description="Cron schedule of the consolidation cycles (five fields).")
    time_zone: str | None = Field(
        default=None, alias="timeZone", description="IANA time zone of the schedule."
    )
    starting_deadline_seconds: int = Field(default=300, ge=10, alias="startingDeadlineSeconds")
    source: ConsolidationSource
    joins: list[Join] = Field(default_factory=list)
    target: Target
    topic: str = Field(default="operation-ids", pattern=TOPIC_NAME)
    subscription: str = Field(default="operation-ids-sub", pattern=TOPIC_NAME)
    batch_size: int = Field(default=10000, ge=1, le=10_000_000, alias="batchSize")
    runner: Literal["direct", "dataflow"] = Field(
        default="direct",
        description="Where each cycle's Beam pipeline runs: direct (inside the CronJob's pod) or dataflow"
        " (a job from the consolidation flex template, launched and awaited by the pod).",
    )
    job_timeout_seconds: int = Field(
        default=3600,
        ge=60,
        le=7 * 86400,
        alias="jobTimeoutSeconds",
        description="runner: dataflow: a cycle's job still running after this long is cancelled, and the"
        " cycle fails (nothing merged).",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        if v.strip().upper().startswith(("CRON_TZ=", "TZ=")):
            raise ValueError("a CRON_TZ= or TZ= prefix is not allowed in schedule: use the timeZone field")
        if not CRON.match(v.strip()):
            raise ValueError(f"schedule {v!r} is not a five-field cron expression")
        return v.strip()


GrantPattern = Annotated[str, Field(min_length=1, max_length=1024)]


class SourceGrants(Model):
    """What the runs of this source's namespace may also use (added to Helm's tenancy.grants)."""

    datasets: list[GrantPattern] = Field(
        default_factory=list,
        max_length=500,
        description="Glob patterns of BigQuery datasets / DuckDB schemas.",
    )
    buckets: list[GrantPattern] = Field(
        default_factory=list, max_length=500, description="Glob patterns of GCS bucket names."
    )
    paths: list[GrantPattern] = Field(
        default_factory=list, max_length=500, description="Folder prefixes of local or file:// URIs."
    )
    projects: list[GrantPattern] = Field(
        default_factory=list, max_length=500, description="Glob patterns of BigQuery projects."
    )


class IngestionSourceSpec(Model):
    suspend: bool = False
    grants: SourceGrants | None = Field(
        default=None,
        description=(
            "Datasets, buckets, folders and projects the PipelineRuns of this namespace may use, in addition"
            " to the Helm value tenancy.grants; creating an IngestionSource is therefore a namespace"
            " admin's right (the chart's <release>-admin role), not a run author's."
        ),
    )
    files: FilesWatch | None = None
    consolidation: Consolidation | None = None
    history_limit: int = Field(
        default=10,
        ge=0,
        le=1000,
        alias="historyLimit",
        description="Finished runs kept per outcome (succeeded, failed).",
    )

    @model_validator(mode="after")
    def _something(self) -> IngestionSourceSpec:
        if self.files is None and self.consolidation is None:
            raise ValueError("an IngestionSource needs spec.files, spec.consolidation, or both")
        return self


class IngestionSource(Model):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    api_version: Literal["dataops.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["IngestionSource"]
    metadata: Metadata
    spec: IngestionSourceSpec


Loc = Annotated[tuple[Any, ...], "pydantic error location"]


# Limits on what a spec file may hold. A PipelineRun is a Kubernetes object (etcd stores at most about
# 1.5 MiB); anything near these sizes is a mistake or an attack, refused before it is expanded or checked.
MAX_SPEC_BYTES = 1024 * 1024
MAX_YAML_NODES = 100_000  # after expanding aliases: a "billion laughs" document stops here
MAX_YAML_DEPTH = 64
MAX_STRING_CHARS = 64 * 1024
MAX_LIST_ITEMS = 5000  # BigQuery allows 10,000 columns; a spec naming half of them is already rare


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key and sequence item, refuses a duplicate
    key, and measures a document (aliases expanded) before building it."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise YamlLimitError(f"refused: nested more than {MAX_YAML_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_document(self, node: yaml.Node) -> Any:
        _check_node_size(node)
        return super().construct_document(node)


class YamlLimitError(yaml.YAMLError):
    """A document too big or too deep once its aliases are expanded."""

    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(message)
        self.problem_mark = mark


def _check_node_size(root: yaml.Node) -> None:
    """Count the nodes of a document as if every alias were copied out, without copying anything."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_YAML_DEPTH:
            raise YamlLimitError(f"refused: nested more than {MAX_YAML_DEPTH} levels deep", node.start_mark)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if id(node) in sizes:
            continue
        if not done and children:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
        if sizes[id(node)] > MAX_YAML_NODES:
            raise YamlLimitError(
                f"refused: more than {MAX_YAML_NODES:,} values once its aliases (*name) are expanded; "
                "a spec this big is refused (is it a 'billion laughs' document?)",
                node.start_mark,
            )


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    lines: dict[Any, int] = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode):
            if key.value in lines and key.tag != "tag:yaml.org,2002:merge":
                raise YamlLimitError(
                    f"not valid YAML: key {key.value!r} appears twice in one mapping"
                    f" (first on line {lines[key.value]})",
                    key.start_mark,
                )
            lines[key.value] = key.start_mark.line + 1
    mapping = loader.construct_mapping(node, deep=True)
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(data: Any, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> Any:
    if isinstance(data, dict):
        lines = data.pop("__lines__", {})
        for key, value in list(data.items()):
            if key in lines:
                index[(*path, key)] = lines[key]
            data[key] = _strip_lines(value, (*path, key), index)
        return data
    if isinstance(data, list):
        return [_strip_lines(v, (*path, i), index) for i, v in enumerate(data)]
    return data


def yaml_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(index: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for cut in range(len(loc), 0, -1):
        if loc[:cut] in index:
            return index[loc[:cut]]
    return None


def parse_documents(text: str, source: str) -> list[tuple[dict[str, Any], dict[tuple[Any, ...], int]]]:
    """Parse YAML text into documents, each with its (path -> line) index."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            source,
            [("", None, f"the file is {size:,} bytes; a spec must stay under {MAX_SPEC_BYTES:,} bytes")],
        )
    try:
        docs = list(yaml.load_all(text, Loader=_LineLoader))
    except YamlLimitError as exc:
        mark = exc.problem_mark
        raise SpecError(source, [("", mark.line + 1 if mark else None, str(exc))]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(source, [("", mark.line + 1 if mark else None, _yaml_message(exc))]) from None
    except RecursionError:
        raise SpecError(
            source, [("", None, f"refused: nested more than {MAX_YAML_DEPTH} levels deep")]
        ) from None
    out = []
    for n, doc in enumerate(docs):
        if doc is None:
            continue
        index: dict[tuple[Any, ...], int] = {}
        doc = _strip_lines(doc, (), index)
        if not isinstance(doc, dict):
            what = type(doc).__name__
            raise SpecError(
                source,
                [
                    (
                        "",
                        None,
                        f"document {n + 1} is a {what}, not a mapping (apiVersion, kind, metadata, spec)",
                    )
                ],
            )
        problems = _giant_values(doc, (), index)
        if problems:
            raise SpecError(source, problems)
        out.append((doc, index))
    return out


def _yaml_message(exc: yaml.YAMLError) -> str:
    """PyYAML's problem on one line: what is wrong, the column, and what it was parsing."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark, context, since = (getattr(exc, k, None) for k in ("problem_mark", "context", "context_mark"))
    text = f"not valid YAML: {problem}" + (f" at column {mark.column + 1}" if mark else "")
    if context:
        text += f" ({context}" + (f" from line {since.line + 1})" if since else ")")
    return text


def unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a spec file cannot be read, said for people."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save the spec as UTF-8"
    return f"cannot read the spec: {exc.strerror or exc}"


def _giant_values(
    data: Any, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]
) -> list[tuple[str, int | None, str]]:
    """Strings and lists far bigger than any sound spec holds, each named by its YAML path."""
    found: list[tuple[str, int | None, str]] = []
    if isinstance(data, str) and len(data) > MAX_STRING_CHARS:
        found.append(
            (
                yaml_path(path),
                line_of(index, path),
                f"a {len(data):,}-character value; at most {MAX_STRING_CHARS:,}",
            )
        )
    elif isinstance(data, list):
        if len(data) > MAX_LIST_ITEMS:
            found.append(
                (
                    yaml_path(path),
                    line_of(index, path),
                    f"a list of {len(data):,} items; at most {MAX_LIST_ITEMS:,}",
                )
            )
        else:
            for i, item in enumerate(data):
                found += _giant_values(item, (*path, i), index)
    elif isinstance(data, dict):
        for key, value in data.items():
            found += _giant_values(value, (*path, key), index)
    return found[:20]


def _pydantic_problems(
    exc: ValidationError, index: dict[tuple[Any, ...], int]
) -> list[tuple[str, int | None, str]]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and loc:
            msg = f"unknown field {loc[-1]!r}" + _did_you_mean(str(loc[-1]))
        problems.append((yaml_path(loc), line_of(index, loc), msg))
    return problems


def _field_names() -> set[str]:
    """Every field name a spec may use, as written in YAML (aliases), for spelling hints."""
    names: set[str] = set()
    for model in Model.__subclasses__() + [m for c in Model.__subclasses__() for m in c.__subclasses__()]:
        names.update(f.alias or name for name, f in model.model_fields.items())
    return names


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, sorted(_field_names()), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_pipelinerun(doc: dict[str, Any], index: dict[tuple[Any, ...], int], source: str) -> PipelineRun:
    try:
        return PipelineRun.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(source, _pydantic_problems(exc, index)) from None


def resolve_uri(uri: str, base_dir: Path) -> str:
    """A relative local path resolves against the YAML file's folder; URIs with a scheme stay."""
    if "://" in uri:
        return uri
    path = Path(uri)
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def load_spec_document(path: Path) -> tuple[PipelineRun, dict[tuple[Any, ...], int]]:
    """Read one PipelineRun from a YAML file (source.uri resolved against the file's folder), with the
    line of every YAML path for error messages."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(source, [("", None, unreadable(exc))]) from None
    return parse_spec_text(text, source, path.parent.resolve())


def parse_spec_text(text: str, source: str, base_dir: Path) -> tuple[PipelineRun, dict[tuple[Any, ...], int]]:
    """One PipelineRun from YAML (or JSON) text; a relative source.uri (and lookup uri) resolves against
    ``base_dir``."""
    docs = parse_documents(text, source)
    runs = [(d, i) for d, i in docs if d.get("kind") == "PipelineRun"]
    if not runs:
        raise SpecError(source, [("kind", None, "no document of kind PipelineRun in the file")])
    if len(runs) > 1:
        raise SpecError(source, [("kind", None, "more than one PipelineRun in the file: give one per file")])
    doc, index = runs[0]
    run = parse_pipelinerun(doc, index, source)
    src = run.spec.source.model_copy(update={"uri": resolve_uri(run.spec.source.uri, base_dir)})
    update: dict[str, Any] = {"source": src}
    transform = run.spec.transform
    if transform is not None and any(lookup.uri for lookup in transform.lookups):
        lookups = [
            lookup.model_copy(update={"uri": resolve_uri(lookup.uri, base_dir)}) if lookup.uri else lookup
            for lookup in transform.lookups
        ]
        update["transform"] = transform.model_copy(update={"lookups": lookups})
    return run.model_copy(update={"spec": run.spec.model_copy(update=update)}), index


def load_spec_file(path: Path) -> PipelineRun:
    """Read one PipelineRun from a YAML file, with source.uri resolved against the file's folder."""
    return load_spec_document(path)[0]


def path_to_loc(path: str) -> tuple[Any, ...]:
    """``spec.transform.derive[1].expr`` -> ("spec", "transform", "derive", 1, "expr")."""
    loc: list[Any] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        loc.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(loc)
