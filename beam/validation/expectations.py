"""The validate stage's expectations, run by Great Expectations 1.x on a pandas DataFrame.

A spec lists expectations as ``(name, kwargs)`` pairs, e.g.
``("expect_column_values_to_be_between", {"column": "monthly_cost", "min_value": 0})``. Each name is
GE's own expectation type; `build_suite` turns the list into a `gx.ExpectationSuite` and `validate_frame`
runs it through an ephemeral context (pandas datasource, dataframe asset, whole-frame batch definition,
`ValidationDefinition`) with result format COMPLETE. The frame's index holds the row numbers that
`RowFailure.row_number` reports.

Great Expectations is imported on first use: importing it takes seconds, and commands that never
validate should not pay for it.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation import Expectation

SPEC_PATH = "spec.validate.expectations"
_SUITE_NAME = "validate"
_SAMPLE_SIZE = 20
_NAME = re.compile(r"^expect_[a-z0-9_]+$")
_COLUMN_KEYS = ("column", "column_A", "column_B")
_ISIN_DATETIME_WARNING = r"The behavior of 'isin' with dtype=datetime64"


class ExpectationConfigError(Exception):
    """An expectation of the spec that Great Expectations cannot run: unknown name, bad kwargs, no column."""


@dataclass(frozen=True)
class RowFailure:
    """One row that broke one expectation."""

    row_number: int
    column: str | None
    rule: str
    value: str | None
    message: str


@dataclass(frozen=True)
class ExpectationOutcome:
    """How one expectation of the suite went.

    ``row_level`` is true when GE attributed the failures to rows (``unexpected_index_list``);
    ``error`` carries GE's message when computing the expectation raised (e.g. incomparable types).
    """

    type: str
    kwargs: dict[str, Any]
    success: bool
    row_level: bool
    unexpected_count: int
    unexpected_percent: float | None
    sample: list[str]
    observed_value: str | None
    error: str | None = None

    def summary_line(self) -> str:
        status = "PASS" if self.success else "FAIL"
        line = f"{status} {self.type}({_render_kwargs(self.kwargs)})"
        if self.error is not None:
            return f"{line}: error: {self.error}"
        if self.row_level:
            percent = "" if self.unexpected_percent is None else f" ({self.unexpected_percent:.4g}%)"
            line = f"{line}: {self.unexpected_count} unexpected{percent}"
            return f"{line}; sample: {', '.join(self.sample)}" if self.sample else line
        return f"{line}: observed {self.observed_value}" if self.observed_value is not None else line


@dataclass(frozen=True)
class ValidationOutcome:
    """The suite's verdict, its failures by row and by table, and GE's own result.

    ``row_failures`` lists every (row, expectation) failure, sorted by row then spec order, including
    rows of expectations that still passed thanks to ``mostly``; it stops at ``max_row_failures``
    (``row_failures_truncated``), while each outcome's ``unexpected_count`` stays exact.
    """

    success: bool
    expectations: list[ExpectationOutcome]
    row_failures: list[RowFailure]
    table_failures: list[ExpectationOutcome]
    ge_result: dict[str, Any]
    row_failures_truncated: bool = False

    def summary(self) -> str:
        failed = sum(not outcome.success for outcome in self.expectations)
        verdict = "passed" if self.success else "FAILED"
        truncated = " (truncated)" if self.row_failures_truncated else ""
        head = (
            f"validation {verdict}: {len(self.expectations) - failed} of {len(self.expectations)} "
            f"expectations passed, {len(self.row_failures)} row failures{truncated}"
        )
        return "\n".join([head, *(outcome.summary_line() for outcome in self.expectations)])


def build_suite(expectations: Sequence[tuple[str, Mapping[str, Any]]]) -> gx.ExpectationSuite:
    """The spec's expectations as a GE suite; raises ExpectationConfigError for the first bad one."""
    built = [_build_expectation(index, name, kwargs) for index, (name, kwargs) in enumerate(expectations)]
    suite: gx.ExpectationSuite = _gx().ExpectationSuite(name=_SUITE_NAME, expectations=built)
    return suite


def validate_frame(
    df: pd.DataFrame,
    expectations: Sequence[tuple[str, Mapping[str, Any]]],
    max_row_failures: int = 100_000,
) -> ValidationOutcome:
    """Run the expectations on ``df``, whose integer index holds the row numbers to report."""
    if not pd.api.types.is_integer_dtype(df.index):
        raise TypeError(f"validate_frame needs an integer index of row numbers, got {df.index.dtype}")
    classes = [_expectation_class(index, name) for index, (name, _) in enumerate(expectations)]
    for index, ((name, kwargs), cls) in enumerate(zip(expectations, classes, strict=True)):
        _check_columns(index, name, _domain_columns(cls, kwargs), df)
    aligned = [
        (name, _align_dates(index, name, kwargs, _domain_columns(cls, kwargs), df))
        for index, ((name, kwargs), cls) in enumerate(zip(expectations, classes, strict=True))
    ]
    suite, result = _run_suite(build_suite(aligned), df)
    by_id = {item.expectation_config.id: item for item in result.results if item.expectation_config}
    ordered = [by_id[expectation.id] for expectation in suite.expectations]
    outcomes = [
        _outcome(name, kwargs, item) for (name, kwargs), item in zip(expectations, ordered, strict=True)
    ]
    columns = [_domain_columns(cls, kwargs) for cls, (_, kwargs) in zip(classes, expectations, strict=True)]
    row_failures, truncated = _row_failures(outcomes, ordered, columns, max_row_failures)
    return ValidationOutcome(
        success=bool(result.success),
        expectations=outcomes,
        row_failures=row_failures,
        table_failures=[outcome for outcome in outcomes if not outcome.success and not outcome.row_level],
        ge_result=result.to_json_dict(),  # type: ignore[no-untyped-call]  # untyped in GE 1.24
        row_failures_truncated=truncated,
    )


@functools.cache
def _gx() -> ModuleType:
    """Great Expectations, imported once, with analytics off and its INFO chatter kept out of our logs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with warnings.catch_warnings():
        # GE 1.24 imports sre_constants/sre_parse, deprecated since Python 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    return great_expectations


def _where(index: int, name: str) -> str:
    return f"{SPEC_PATH}[{index}] ({name})"


def _expectation_class(index: int, name: str) -> type[Expectation]:
    """GE's class for a snake_case name: expect_column_values_to_be_between -> ExpectColumnValuesToBeBetween."""
    module = _gx().expectations
    camel = "".join(part.capitalize() for part in name.split("_"))
    found = getattr(module, camel, None) if _NAME.match(name) else None
    if found is None and _NAME.match(name):
        # GE capitalises some acronyms (ExpectColumnKLDivergenceToBeLessThan).
        found = next((getattr(module, n) for n in dir(module) if n.casefold() == camel.casefold()), None)
    if not (
        isinstance(found, type) and issubclass(found, module.Expectation) and found is not module.Expectation
    ):
        raise ExpectationConfigError(
            f"{_where(index, name)}: unknown expectation (Great Expectations has no {camel})"
        )
    return found


def _build_expectation(index: int, name: str, kwargs: Mapping[str, Any]) -> Expectation:
    cls = _expectation_class(index, name)
    if not isinstance(kwargs, Mapping):
        raise ExpectationConfigError(f"{_where(index, name)}: kwargs must be a mapping, got {kwargs!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, _gx().exceptions.GreatExpectationsError) as err:
        raise ExpectationConfigError(f"{_where(index, name)}: {_one_line(err)}") from err


def _one_line(err: Exception) -> str:
    """GE's complaint on one line; pydantic's errors grouped by field."""
    errors = getattr(err, "errors", None)
    if not callable(errors):
        return " ".join(str(err).split())
    by_field: dict[str, list[str]] = {}
    for error in errors():
        field = ".".join(str(part) for part in error["loc"] if part != "__root__") or "kwargs"
        by_field.setdefault(field, []).append(error["msg"])
    return "; ".join(f"{field}: {' or '.join(messages)}" for field, messages in by_field.items())


def _domain_columns(cls: type[Expectation], kwargs: Mapping[str, Any]) -> list[str]:
    """The frame columns an expectation reads, from GE's domain keys (not e.g. an expected column_list)."""
    columns: list[str] = []
    for key in cls.domain_keys:
        value = kwargs.get(key)
        if key in _COLUMN_KEYS and value is not None:
            columns.append(str(value))
        elif key == "column_list" and isinstance(value, list | tuple):
            columns.extend(str(column) for column in value)
    return columns


def _check_columns(index: int, name: str, columns: list[str], df: pd.DataFrame) -> None:
    available = [str(column) for column in df.columns]
    for column in columns:
        if column not in available:
            raise ExpectationConfigError(
                f"{_where(index, name)}: column {column!r} is not in the data; "
                f"available columns: {', '.join(available)}"
            )


def _align_dates(
    index: int, name: str, kwargs: Mapping[str, Any], columns: list[str], df: pd.DataFrame
) -> Mapping[str, Any]:
    """Bounds given as dates (YAML dates, ISO strings) become datetimes for a datetime64 column.

    GE validates min_value/max_value as dates and pandas refuses to compare datetime64 with a date.
    """
    if len(columns) != 1 or not pd.api.types.is_datetime64_any_dtype(df[columns[0]]):
        return kwargs
    aligned = dict(kwargs)
    for key in ("min_value", "max_value"):
        value = aligned.get(key)
        if isinstance(value, str | dt.date) and not isinstance(value, dt.datetime):
            try:
                aligned[key] = pd.Timestamp(value).to_pydatetime()
            except ValueError as err:
                raise ExpectationConfigError(f"{_where(index, name)}: {key}: {err}") from err
    return aligned


def _run_suite(
    suite: gx.ExpectationSuite, df: pd.DataFrame
) -> tuple[gx.ExpectationSuite, ExpectationSuiteValidationResult]:
    ge = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = ge.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas(name="frame").add_dataframe_asset(name="rows")
    batch_definition = asset.add_batch_definition_whole_dataframe(name="whole_frame")
    added = context.suites.add(suite)
    definition = context.validation_definitions.add(
        ge.ValidationDefinition(name=_SUITE_NAME, data=batch_definition, suite=added)
    )
    with warnings.catch_warnings():
        # GE stores a value_set as JSON strings, so pandas warns when isin() matches them to datetime64.
        warnings.filterwarnings("ignore", message=_ISIN_DATETIME_WARNING, category=FutureWarning)
        result = definition.run(batch_parameters={"dataframe": df}, result_format="COMPLETE")
    return added, result


def _outcome(name: str, kwargs: Mapping[str, Any], item: ExpectationValidationResult) -> ExpectationOutcome:
    result: Mapping[str, Any] = item.result or {}
    unexpected = result.get("unexpected_list")
    if unexpected is None:
        unexpected = result.get("partial_unexpected_list") or []
    percent = result.get("unexpected_percent")
    return ExpectationOutcome(
        type=name,
        kwargs=dict(kwargs),
        success=bool(item.success),
        row_level="unexpected_index_list" in result,
        unexpected_count=int(result.get("unexpected_count") or 0),
        unexpected_percent=None if percent is None else float(percent),
        sample=[_text(value) for value in unexpected[:_SAMPLE_SIZE]],
        observed_value=_render_value(result["observed_value"]) if "observed_value" in result else None,
        error=_error_message(item.exception_info or {}),
    )


def _error_message(info: Mapping[str, Any]) -> str | None:
    """GE reports a raised metric either flat or keyed by metric configuration id."""
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for nested in info.values():
        if isinstance(nested, Mapping) and nested.get("raised_exception"):
            return str(nested.get("exception_message"))
    return None


def _row_failures(
    outcomes: list[ExpectationOutcome],
    results: list[ExpectationValidationResult],
    columns: list[list[str]],
    limit: int,
) -> tuple[list[RowFailure], bool]:
    """Every (row, expectation) failure, by row then spec order, cut at ``limit``."""
    indexes = [list((item.result or {}).get("unexpected_index_list") or []) for item in results]
    values = [list((item.result or {}).get("unexpected_list") or []) for item in results]
    problems = [_problem(outcome) for outcome in outcomes]
    rows = np.fromiter((int(row) for index in indexes for row in index), dtype=np.int64)
    which = np.repeat(np.arange(len(indexes)), [len(index) for index in indexes])
    position = np.concatenate([np.arange(len(index)) for index in indexes]) if indexes else which
    order = np.lexsort((which, rows))[: max(limit, 0)]
    failures = []
    for at in order:
        exp, pos = int(which[at]), int(position[at])
        value = values[exp][pos] if len(values[exp]) == len(indexes[exp]) else None
        failures.append(_row_failure(int(rows[at]), outcomes[exp].type, columns[exp], problems[exp], value))
    return failures, len(rows) > len(order)


def _row_failure(row: int, rule: str, columns: list[str], problem: str, value: Any) -> RowFailure:
    subject = ", ".join(columns) if columns else "row"
    text = _render_value(value)
    if text is None and rule == "expect_column_values_to_not_be_null":
        message = f"{subject} is null"
    else:
        message = f"{subject} = {_text(value)} {problem}"
    return RowFailure(
        row_number=row,
        column=columns[0] if columns else None,
        rule=rule,
        value=text,
        message=message,
    )


def _problem(outcome: ExpectationOutcome) -> str:
    """What a failing value did wrong, e.g. "is not between 0 and 100000"."""
    describe = _DESCRIPTIONS.get(outcome.type)
    return describe(outcome.kwargs) if describe else f"fails {outcome.type}"


def _between(kwargs: Mapping[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None:
        return f"is above {_text(high)}"
    if high is None:
        return f"is below {_text(low)}"
    return f"is not between {_text(low)} and {_text(high)}"


def _length_between(kwargs: Mapping[str, Any]) -> str:
    return f"has a length that {_between(kwargs)}"


_DESCRIPTIONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "expect_column_values_to_be_between": _between,
    "expect_column_value_lengths_to_be_between": _length_between,
    "expect_column_value_lengths_to_equal": lambda kw: f"does not have length {_text(kw.get('value'))}",
    "expect_column_values_to_match_regex": lambda kw: f"does not match /{kw.get('regex')}/",
    "expect_column_values_to_not_match_regex": lambda kw: f"matches /{kw.get('regex')}/",
    "expect_column_values_to_be_in_set": lambda kw: f"is not in {_text(kw.get('value_set'))}",
    "expect_column_values_to_not_be_in_set": lambda kw: f"is in {_text(kw.get('value_set'))}",
    "expect_column_values_to_be_null": lambda kw: "is not null",
    "expect_column_values_to_not_be_null": lambda kw: "is null",
    "expect_column_values_to_be_unique": lambda kw: "is not unique",
}


def _render_kwargs(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={_text(value)}" for key, value in kwargs.items())


def _text(value: Any) -> str:
    rendered = _render_value(value)
    return "NULL" if rendered is None else rendered


def _render_value(value: Any) -> str | None:
    """A cell as text: None for NULL/NaN/NaT, integral floats without '.0', dates ISO."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key}={_text(item)}" for key, item in value.items())
    if isinstance(value, tuple):
        return f"({', '.join(_text(item) for item in value)})"
    if isinstance(value, list | set | frozenset | np.ndarray):
        return f"[{', '.join(_text(item) for item in value)}]"
    if value is None or pd.isna(value):
        return None
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, dt.datetime):
        midnight = value.tzinfo is None and value.time() == dt.time()
        return value.date().isoformat() if midnight else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
