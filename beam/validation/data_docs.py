"""Great Expectations' own Data Docs page for one validation result, rendered from ``ge_result.json``.

GE 1.x renders Data Docs sites from a file-backed context; a run has only an ephemeral one, so this
rebuilds the result object from its JSON and renders it with GE's page renderer and Jinja view, the same
code a Data Docs site uses. The page loads GE's styles from public CDNs (as every Data Docs page does):
offline it is plain but complete. The run report links to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beam.validation.expectations import _gx

_CONFIG_KEYS = ("type", "kwargs", "meta", "id", "notes", "rendered_content", "description")


def render_data_docs(ge_result: Mapping[str, Any]) -> str:
    """The Data Docs HTML page of ``ge_result`` (``ExpectationSuiteValidationResult.to_json_dict()``)."""
    _gx()
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    results = []
    for item in ge_result.get("results", []):
        config = item.get("expectation_config") or {}
        results.append(
            ExpectationValidationResult(
                success=item.get("success"),
                expectation_config=ExpectationConfiguration(
                    **{k: v for k, v in config.items() if k in _CONFIG_KEYS and v is not None}
                ),
                result=item.get("result") or {},
                meta=item.get("meta") or {},
                exception_info=item.get("exception_info"),
            )
        )
    suite_result = ExpectationSuiteValidationResult(
        success=bool(ge_result.get("success")),
        results=results,
        suite_name=str(ge_result.get("suite_name") or "validate"),
        statistics=dict(ge_result.get("statistics") or {}),
        meta=dict(ge_result.get("meta") or {}),
    )
    document = ValidationResultsPageRenderer().render(suite_result)
    return str(DefaultJinjaPageView().render(document))
