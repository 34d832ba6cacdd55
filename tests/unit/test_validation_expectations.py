"""The validate stage's expectations, run by Great Expectations on small frames."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pandas as pd
import pytest

from beam.validation.expectations import (
    ExpectationConfigError,
    RowFailure,
    build_suite,
    validate_frame,
)

pytestmark = pytest.mark.unit

COSTS = [10.0, -5.0, 50.0, 200.0, None, 0.0, 100.0, 101.0]
PLANS = ["basic", "pro", "Pro!", "basic", None, "team", "x1", "pro"]
CUSTOMERS = ["c1", "c2", None, "c4", "c5", None, "c7", "c8"]
SIGNUPS = [
    "2024-01-05",
    "2023-12-31",
    "2024-02-01",
    None,
    "2024-03-01",
    "2025-01-01",
    "2024-06-30",
    "2024-01-01",
]


def frame() -> pd.DataFrame:
    """Eight data rows whose index is the 1-based data row number."""
    return pd.DataFrame(
        {
            "monthly_cost": COSTS,
            "plan": PLANS,
            "customer_id": CUSTOMERS,
            "signed_up": pd.to_datetime(SIGNUPS),
        },
        index=pd.RangeIndex(1, len(COSTS) + 1),
    )


def test_between_expectation_rejects_the_rows_outside_the_range() -> None:
    expected_rows = [row for row, cost in enumerate(COSTS, 1) if cost is not None and not 0 <= cost <= 100]

    outcome = validate_frame(
        frame(),
        [
            (
                "expect_column_values_to_be_between",
                {"column": "monthly_cost", "min_value": 0, "max_value": 100},
            )
        ],
    )

    assert [failure.row_number for failure in outcome.row_failures] == expected_rows
    assert outcome.success is False
    assert outcome.expectations[0].unexpected_count == len(expected_rows)


def test_between_failure_renders_the_cell_and_a_readable_message() -> None:
    outcome = validate_frame(
        frame(),
        [
            (
                "expect_column_values_to_be_between",
                {"column": "monthly_cost", "min_value": 0, "max_value": 100},
            )
        ],
    )

    assert outcome.row_failures[0] == RowFailure(
        row_number=2,
        column="monthly_cost",
        rule="expect_column_values_to_be_between",
        value="-5",
        message="monthly_cost = -5 is not between 0 and 100",
    )


def test_regex_expectation_rejects_values_that_do_not_match() -> None:
    expected = [
        (row, plan)
        for row, plan in enumerate(PLANS, 1)
        if plan is not None and not re.fullmatch("[a-z]+", plan)
    ]

    outcome = validate_frame(
        frame(), [("expect_column_values_to_match_regex", {"column": "plan", "regex": "^[a-z]+$"})]
    )

    assert [(failure.row_number, failure.value) for failure in outcome.row_failures] == expected
    assert outcome.row_failures[0].message == "plan = Pro! does not match /^[a-z]+$/"


def test_not_null_expectation_rejects_null_cells_with_no_value() -> None:
    expected_rows = [row for row, customer in enumerate(CUSTOMERS, 1) if customer is None]

    outcome = validate_frame(frame(), [("expect_column_values_to_not_be_null", {"column": "customer_id"})])

    assert [failure.row_number for failure in outcome.row_failures] == expected_rows
    assert {failure.value for failure in outcome.row_failures} == {None}
    assert outcome.row_failures[0].message == "customer_id is null"


def test_between_on_a_date_column_accepts_dates_from_the_spec() -> None:
    expected = [
        (row, day) for row, day in enumerate(SIGNUPS, 1) if day is not None and not "2024" <= day < "2025"
    ]

    outcome = validate_frame(
        frame(),
        [
            (
                "expect_column_values_to_be_between",
                {"column": "signed_up", "min_value": dt.date(2024, 1, 1), "max_value": "2024-12-31"},
            )
        ],
    )

    assert [(failure.row_number, failure.value) for failure in outcome.row_failures] == expected


def test_failed_row_count_expectation_lands_in_table_failures_not_row_failures() -> None:
    outcome = validate_frame(
        frame(), [("expect_table_row_count_to_be_between", {"min_value": 1, "max_value": 3})]
    )

    assert outcome.success is False
    assert outcome.row_failures == []
    assert [failure.type for failure in outcome.table_failures] == ["expect_table_row_count_to_be_between"]
    assert outcome.table_failures[0].observed_value == str(len(COSTS))
    assert outcome.table_failures[0].row_level is False


def test_row_failures_are_ordered_by_row_then_spec_order() -> None:
    outcome = validate_frame(
        frame(),
        [
            ("expect_column_values_to_not_be_null", {"column": "customer_id"}),
            ("expect_column_values_to_match_regex", {"column": "plan", "regex": "^[a-z]+$"}),
        ],
    )

    assert [(failure.row_number, failure.column) for failure in outcome.row_failures] == [
        (3, "customer_id"),
        (3, "plan"),
        (6, "customer_id"),
        (7, "plan"),
    ]


def test_row_failures_stop_at_the_limit_and_say_so() -> None:
    outcome = validate_frame(
        frame(),
        [("expect_column_values_to_be_between", {"column": "monthly_cost", "min_value": 1000})],
        max_row_failures=2,
    )

    assert [failure.row_number for failure in outcome.row_failures] == [1, 2]
    assert outcome.row_failures_truncated is True
    assert outcome.expectations[0].unexpected_count == len([cost for cost in COSTS if cost is not None])


def test_column_pair_failures_name_the_first_column_and_both_values() -> None:
    pairs = pd.DataFrame({"paid": [5, 1, 7], "due": [3, 4, 7]}, index=pd.RangeIndex(1, 4))

    outcome = validate_frame(
        pairs, [("expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "paid", "column_B": "due"})]
    )

    assert [(failure.row_number, failure.column, failure.value) for failure in outcome.row_failures] == [
        (2, "paid", "(1, 4)"),
        (3, "paid", "(7, 7)"),
    ]


def test_passing_frame_has_no_failures() -> None:
    outcome = validate_frame(
        frame(),
        [
            (
                "expect_column_values_to_be_between",
                {"column": "monthly_cost", "min_value": -10, "max_value": 1000},
            ),
            ("expect_table_row_count_to_be_between", {"min_value": 1}),
        ],
    )

    assert outcome.success is True
    assert outcome.row_failures == []
    assert outcome.table_failures == []


def test_ge_result_is_the_suite_validation_result_as_json() -> None:
    outcome = validate_frame(frame(), [("expect_column_values_to_not_be_null", {"column": "customer_id"})])

    assert outcome.ge_result["success"] is False
    assert (
        outcome.ge_result["results"][0]["expectation_config"]["type"] == "expect_column_values_to_not_be_null"
    )


def test_unknown_expectation_name_raises_naming_its_index() -> None:
    expectations: list[tuple[str, dict[str, Any]]] = [
        ("expect_column_values_to_not_be_null", {"column": "customer_id"}),
        ("expect_table_row_count_to_be_between", {"min_value": 1}),
        ("expect_foo", {}),
    ]

    with pytest.raises(
        ExpectationConfigError, match=r"spec\.validate\.expectations\[2\] \(expect_foo\): unknown"
    ):
        validate_frame(frame(), expectations)


def test_kwargs_great_expectations_rejects_raise_naming_the_field() -> None:
    expectations = [("expect_column_values_to_be_between", {"column": "monthly_cost", "maximum": 5})]

    with pytest.raises(
        ExpectationConfigError, match=r"expectations\[0\] .*maximum: extra fields not permitted"
    ):
        build_suite(expectations)


def test_kwarg_naming_a_missing_column_raises_naming_the_column() -> None:
    expectations = [("expect_column_values_to_not_be_null", {"column": "customer"})]

    with pytest.raises(ExpectationConfigError, match=r"column 'customer' is not in the data.*customer_id"):
        validate_frame(frame(), expectations)


def test_summary_mentions_each_expectation() -> None:
    outcome = validate_frame(
        frame(),
        [
            ("expect_column_values_to_not_be_null", {"column": "customer_id"}),
            ("expect_table_row_count_to_be_between", {"min_value": 1}),
            ("expect_column_mean_to_be_between", {"column": "monthly_cost", "max_value": 10}),
        ],
    )

    lines = outcome.summary().splitlines()
    assert lines[1].startswith("FAIL expect_column_values_to_not_be_null(column=customer_id): 2 unexpected")
    assert lines[2].startswith("PASS expect_table_row_count_to_be_between(min_value=1)")
    assert lines[3].startswith("FAIL expect_column_mean_to_be_between(column=monthly_cost, max_value=10)")
