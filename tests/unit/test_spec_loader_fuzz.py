"""Fuzzing the spec loader and checker: whatever text or structure comes in, the only error that comes
out is SpecError (a message with a YAML path), never another exception."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.cli import check_file
from controller.spec import SpecError, parse_spec_text
from controller.spec_check import load_checked, load_checked_text

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "inventory" / "pipelinerun.yaml").read_text(encoding="utf-8"))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _loads_or_spec_error(text: str) -> None:
    try:
        load_checked_text(text, "fuzz.yaml", ROOT)
    except SpecError as exc:
        assert exc.problems, "a SpecError names at least one problem"
        assert str(exc).startswith("fuzz.yaml")


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "*", "raw.items", "x; DROP TABLE y", "SELECT 1", "expect_x", "STRING", "INT64"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(), st.booleans()), inner, max_size=5),
    ),
    max_leaves=25,
)


@FUZZ
@given(st.text(max_size=400))
def test_any_text_gives_a_run_or_a_spec_error(text: str) -> None:
    _loads_or_spec_error(text)


@FUZZ
@given(values)
def test_any_yaml_value_gives_a_run_or_a_spec_error(value: Any) -> None:
    _loads_or_spec_error(yaml.safe_dump(value, allow_unicode=True))


YAML_TOKENS = st.sampled_from(
    ["a", ":", " ", "\n", "- ", "&x ", "*x", "[", "]", "{", "}", ",", "'", '"', "!!str ", "!!binary ", "---\n",
     "...\n", "? ", "|\n  ", ">\n  ", "<<: ", "#", "\t", "kind: PipelineRun\n", "spec:\n  ", "%YAML 1.1\n"]
)  # fmt: skip


@FUZZ
@given(st.lists(YAML_TOKENS, max_size=60).map("".join))
def test_yaml_syntax_soup_gives_a_spec_error(text: str) -> None:
    _loads_or_spec_error(text)


PATHS_TO_MUTATE = [
    ("spec",),
    ("spec", "source"),
    ("spec", "source", "columns"),
    ("spec", "source", "columns", 0),
    ("spec", "source", "columns", 0, "type"),
    ("spec", "validate"),
    ("spec", "validate", "expectations", 0, "kwargs"),
    ("spec", "validate", "expectations", 0, "kwargs", "column"),
    ("spec", "validate", "expectations", 0, "kwargs", "column_list"),
    ("spec", "validate", "expectations", 1, "kwargs", "column_A"),
    ("spec", "load", "table"),
    ("spec", "transform"),
    ("spec", "transform", "standardize", 0),
    ("spec", "transform", "derive"),
    ("spec", "transform", "derive", 0, "expr"),
    ("spec", "transform", "dedupe", "key"),
    ("spec", "transform", "dedupe", "orderBy"),
    ("spec", "transform", "output", "partitionBy"),
    ("spec", "transform", "output", "clusterBy"),
    ("spec", "aggregate"),
    ("spec", "aggregate", 0, "groupBy"),
    ("spec", "aggregate", 0, "metrics", 0),
    ("spec", "aggregate", 1, "metrics", 3, "expr"),
    ("metadata",),
    ("metadata", "name"),
    ("kind",),
]


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(PATHS_TO_MUTATE), st.sampled_from(["set", "delete", "add"]), values),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_example_gives_a_run_or_a_spec_error(
    mutations: list[tuple[tuple[Any, ...], str, Any]],
) -> None:
    doc = copy.deepcopy(EXAMPLE)
    for path, how, value in mutations:
        _mutate(doc, path, how, value)

    _loads_or_spec_error(yaml.safe_dump(doc, allow_unicode=True))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_in_a_file_give_a_spec_error_from_run_and_check(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(data)

    with contextlib.suppress(SpecError):
        load_checked(path)
    try:
        problems = check_file(path)
    except SpecError as exc:
        problems = exc.problems
    assert all(isinstance(p, str) and isinstance(m, str) for p, _, m in problems)


def test_example_itself_loads() -> None:
    run, _ = parse_spec_text(yaml.safe_dump(EXAMPLE), "example.yaml", ROOT / "examples" / "inventory")

    assert run.metadata.name == "inventory-demo"


def _mutate(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> None:
    node = doc
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    last = path[-1]
    if how == "set":
        try:
            node[last] = value
        except (IndexError, TypeError):
            return
    elif how == "delete":
        try:
            del node[last]
        except (KeyError, IndexError, TypeError):
            return
    else:
        try:
            target = node[last]
        except (KeyError, IndexError, TypeError):
            return
        if isinstance(target, list):
            target.append(value)
        elif isinstance(target, dict):
            target["extra"] = value
