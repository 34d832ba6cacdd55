"""What a schema cannot say: every column a spec names exists where it is used, every expression parses.

Pure. Run before anything is read or written, by ``dataops run``, ``dataops check`` and the controller,
so a wrong spec fails at once and leaves no table behind.
"""

from __future__ import annotations

from pathlib import Path

from controller.expressions import ExpressionError, parse_expression
from controller.spec import (
    Lookup,
    PipelineRun,
    PipelineRunSpec,
    SpecError,
    line_of,
    load_spec_document,
    parse_spec_text,
    path_to_loc,
)

METADATA_COLUMNS = ("ingestion_timestamp", "source_uri")

Problem = tuple[str, str]


def _known(name: str, columns: dict[str, str]) -> bool:
    return name.lower() in columns


def _check_names(path: str, names: list[str], columns: dict[str, str], problems: list[Problem]) -> None:
    for i, name in enumerate(names):
        if not _known(name, columns):
            problems.append(
                (f"{path}[{i}]", f"unknown column {name!r} (known: {', '.join(columns.values())})")
            )


def _expr(path: str, sql: str, columns: dict[str, str], problems: list[Problem]) -> None:
    try:
        parse_expression(sql, columns.values(), what=path)
    except ExpressionError as exc:
        problems.append((path, str(exc).removeprefix(f"{path} ")))


def _derive_reads_later(
    i: int, sql: str, derived_at: dict[str, int], columns: dict[str, str], problems: list[Problem]
) -> bool:
    """A derive reading itself or a later derive (a cycle, or the wrong order): say so plainly."""
    try:
        used = parse_expression(sql, None).columns
    except ExpressionError:
        return False
    for name in sorted(used):
        j = derived_at.get(name.lower())
        if j is not None and j >= i and not _known(name, columns):
            where = "itself" if j == i else f"spec.transform.derive[{j}] ({name!r}), which comes later"
            problems.append(
                (
                    f"spec.transform.derive[{i}].expr",
                    f"{sql!r} reads {where}; a derive reads the source's columns and earlier derives"
                    " only (no cycles): reorder the derives",
                )
            )
            return True
    return False


def _check_lookups(lookups: list[Lookup], cols: dict[str, str], problems: list[Problem]) -> None:
    """Keys exist where they are used (on the records: the source's columns and earlier lookups'; on a CSV
    reference: its schema); looked-up columns join ``cols`` for derive, filter and dedupe.

    A table reference's own columns are only known to the warehouse: the transform stage checks them."""
    labels: set[str] = set()
    for i, lookup in enumerate(lookups):
        path = f"spec.transform.lookups[{i}]"
        if lookup.label.lower() in labels:
            problems.append((f"{path}.name", f"lookup name {lookup.label!r} is used twice; give each a name"))
        labels.add(lookup.label.lower())
        for left in lookup.on:
            if not _known(left, cols):
                problems.append(
                    (f"{path}.on.{left}", f"unknown column {left!r} (known: {', '.join(cols.values())})")
                )
        if lookup.schema_:
            ref: dict[str, str] = {}
            for j, declared in enumerate(lookup.schema_):
                if declared.name.lower() in ref:
                    problems.append(
                        (f"{path}.schema[{j}].name", f"column {declared.name!r} is declared twice")
                    )
                ref[declared.name.lower()] = declared.name
            for left, right in lookup.on.items():
                if not _known(right, ref):
                    problems.append(
                        (
                            f"{path}.on.{left}",
                            f"unknown reference column {right!r} (schema: {', '.join(ref.values())})",
                        )
                    )
            names = [c.name for c in lookup.columns]
            _check_names(f"{path}.columns", names, ref, problems)
            _check_names(f"{path}.orderBy", lookup.order_by, ref, problems)
        for j, column in enumerate(lookup.columns):
            out = column.output_name
            if _known(out, cols):
                problems.append(
                    (f"{path}.columns[{j}]", f"column {out!r} already exists; rename it with 'as'")
                )
            cols[out.lower()] = out


def semantic_problems(spec: PipelineRunSpec) -> list[Problem]:
    """Every problem found, as (yaml path, message); empty when the spec is sound."""
    problems: list[Problem] = []
    cols = {c.name.lower(): c.name for c in spec.source.columns}
    string_cols = {c.name.lower() for c in spec.source.columns if c.type.value == "STRING"}
    for i, exp in enumerate(spec.validate_.expectations):
        for key in ("column", "column_A", "column_B"):
            name = exp.kwargs.get(key)
            if isinstance(name, str) and not _known(name, cols):
                problems.append((f"spec.validate.expectations[{i}].kwargs.{key}", f"unknown column {name!r}"))
        for key in ("column_list",):
            names = exp.kwargs.get(key) or []
            if not isinstance(names, list):
                problems.append(
                    (
                        f"spec.validate.expectations[{i}].kwargs.{key}",
                        f"must be a list of column names, not {names!r}",
                    )
                )
                continue
            for name in names:
                if isinstance(name, str) and not _known(name, cols):
                    problems.append(
                        (f"spec.validate.expectations[{i}].kwargs.{key}", f"unknown column {name!r}")
                    )
    if spec.load.partition_by is not None:
        _check_names("spec.load.partitionBy.column", [spec.load.partition_by.column], cols, problems)
    _check_names("spec.load.clusterBy", spec.load.cluster_by, cols, problems)
    t = spec.transform
    if t is None:
        return problems
    for i, st in enumerate(t.standardize):
        if st.column == "*":
            continue
        if not _known(st.column, cols):
            problems.append((f"spec.transform.standardize[{i}].column", f"unknown column {st.column!r}"))
        elif (st.case or st.trim) and st.column.lower() not in string_cols:
            problems.append(
                (
                    f"spec.transform.standardize[{i}]",
                    f"column {st.column!r} is not a STRING: trim and case apply to text only",
                )
            )
    _check_lookups(t.lookups, cols, problems)
    later = {d.name.lower(): j for j, d in enumerate(t.derive)}
    for i, d in enumerate(t.derive):
        if _known(d.name, cols):
            problems.append((f"spec.transform.derive[{i}].name", f"column {d.name!r} already exists"))
            continue
        if not _derive_reads_later(i, d.expr, later, cols, problems):
            _expr(f"spec.transform.derive[{i}].expr", d.expr, cols, problems)
        cols[d.name.lower()] = d.name
    if t.filter is not None:
        _expr("spec.transform.filter", t.filter, cols, problems)
    elif t.keep_filtered:
        problems.append(("spec.transform.keepFiltered", "keeps the rows the filter drops: add a filter"))
    if t.dedupe is not None:
        _check_names("spec.transform.dedupe.key", t.dedupe.key, cols, problems)
        _check_names("spec.transform.dedupe.orderBy", t.dedupe.order_by, cols, problems)
    if t.output.metadata:
        for m in METADATA_COLUMNS:
            cols[m] = m
    if t.output.partition_by is not None:
        _check_names(
            "spec.transform.output.partitionBy.column", [t.output.partition_by.column], cols, problems
        )
    _check_names("spec.transform.output.clusterBy", t.output.cluster_by, cols, problems)
    for i, agg in enumerate(spec.aggregate):
        _check_names(f"spec.aggregate[{i}].groupBy", agg.group_by, cols, problems)
        names = {g.lower() for g in agg.group_by}
        for j, metric in enumerate(agg.metrics):
            path = f"spec.aggregate[{i}].metrics[{j}]"
            if metric.name.lower() in names:
                problems.append((f"{path}.name", f"name {metric.name!r} is used twice in this aggregate"))
            names.add(metric.name.lower())
            if metric.column is not None and not _known(metric.column, cols):
                problems.append(
                    (
                        f"{path}.column",
                        f"unknown column {metric.column!r} (known: {', '.join(cols.values())})",
                    )
                )
            if metric.expr is not None:
                _expr(f"{path}.expr", metric.expr, cols, problems)
        kpi_cols = {n.lower(): n for n in [*agg.group_by, *(m.name for m in agg.metrics)]}
        if agg.output.partition_by is not None:
            column = [agg.output.partition_by.column]
            _check_names(f"spec.aggregate[{i}].output.partitionBy.column", column, kpi_cols, problems)
        _check_names(f"spec.aggregate[{i}].output.clusterBy", agg.output.cluster_by, kpi_cols, problems)
    tables = [
        spec.load.table,
        f"{spec.load.table}_rejects",
        t.output.table,
        *(a.output.table for a in spec.aggregate),
    ]
    if t.keep_filtered or any(lookup.on_missing == "reject" for lookup in t.lookups):
        tables.append(f"{t.output.table}_rejects")
    seen: set[str] = set()
    for table in tables:
        if table.lower() in seen:
            problems.append(
                ("spec", f"table {table} is written twice by this run; give each output its own table")
            )
        seen.add(table.lower())
    return problems


def load_checked(path: Path) -> PipelineRun:
    """Load a PipelineRun file and check it; every problem is raised at once, with its YAML line."""
    run, index = load_spec_document(path)
    return _checked(run, index, str(path))


def load_checked_text(text: str, source: str, base_dir: Path) -> PipelineRun:
    """The same, from text (a stage pod reads its run from an environment variable)."""
    run, index = parse_spec_text(text, source, base_dir)
    return _checked(run, index, source)


def _checked(run: PipelineRun, index: dict[tuple[object, ...], int], source: str) -> PipelineRun:
    problems = semantic_problems(run.spec)
    if problems:
        raise SpecError(source, [(p, line_of(index, path_to_loc(p)), msg) for p, msg in problems])
    return run
