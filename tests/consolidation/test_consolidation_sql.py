"""The SQL of a cycle: one BigQuery source, its DuckDB translation, BigQuery's transaction script, and
the checks of a spec against the tables. Pure: no warehouse, no bus."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import duckdb
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st

from beam.consolidation.plan import ConsolidationError, Position
from beam.consolidation.sql import (
    after,
    bigquery_cycle_script,
    merge_sql,
    transaction_steps,
    watermark_guard_sql,
)
from controller.spec import Consolidation
from tests.consolidation.helpers import OPS, TXS, consolidation, plan, transaction

pytestmark = pytest.mark.unit

# ---- BigQuery: the multi-statement transaction -----------------------------------------------------


def test_bigquery_script_merges_and_moves_watermarks_in_one_transaction() -> None:
    script = bigquery_cycle_script(plan(), transaction(plan())).text
    order = [
        "CREATE SCHEMA IF NOT EXISTS `cons`;",
        "CREATE TABLE IF NOT EXISTS `cons`.`operations` AS SELECT `op_id`, `tx_id`, `amount`, `status`,"
        " `updated_at`, `fee`, `channel` FROM `_dataops`.`staging_tests_ops` LIMIT 0;",
        "BEGIN\n  BEGIN TRANSACTION;",
        "  IF NOT (SELECT COUNT(*) = 1 FROM `_dataops`.`locks` WHERE name = @s0_lock_name AND owner = @s0_lock_owner)",
        "    RAISE USING MESSAGE = 'dataops: the cycle stopped: it no longer holds the lock';",
        "AND cursor_text = @s1_cursor_text AND key_json = @s1_key_json) THEN",
        "  IF NOT (SELECT COUNT(*) = 0 FROM `_dataops`.`consolidation_watermarks`",
        "  INSERT INTO `_dataops`.`consolidation_cycles`",
        "  MERGE `cons`.`operations` AS T USING `_dataops`.`staging_tests_ops` AS S ON T.`op_id` IS NOT DISTINCT FROM S.`op_id`",
        "  MERGE `_dataops`.`consolidation_watermarks` AS T USING (SELECT @s5_source_name AS source_name",
        "  MERGE `_dataops`.`consolidation_watermarks` AS T USING (SELECT @s6_source_name AS source_name",
        "  COMMIT TRANSACTION;\nEXCEPTION WHEN ERROR THEN\n  ROLLBACK TRANSACTION;\n"
        "  RAISE USING MESSAGE = @@error.message;\nEND;\n",
    ]
    positions = [script.find(part) for part in order]

    assert -1 not in positions, [part for part, at in zip(order, positions, strict=True) if at < 0]
    assert positions == sorted(positions)


def test_bigquery_script_parameters_are_all_given_and_all_used() -> None:
    script = bigquery_cycle_script(plan(), transaction(plan()))

    used = set(re.findall(r"(?<![@\w])@(\w+)", script.text))

    assert used == set(script.params)
    assert script.params["s1_cursor_text"] == "2026-03-02 08:00:00"
    assert script.params["s5_cursor_text"] == "2026-03-02 08:10:00"
    assert script.params["s6_key_json"] == '["T9"]'


def test_every_statement_of_the_transaction_is_one_bigquery_statement_and_translates() -> None:
    for step in transaction_steps(plan(), transaction(plan())):
        assert len(sqlglot.parse(step.sql.text, read="bigquery")) == 1
        assert step.sql.duckdb.split()[0] in {"SELECT", "INSERT", "MERGE"}


def test_without_staged_rows_the_transaction_only_moves_watermarks() -> None:
    script = bigquery_cycle_script(plan(), transaction(plan(), staged=False)).text

    assert "MERGE `cons`.`operations`" not in script
    assert "CREATE TABLE" not in script
    assert script.count("MERGE `_dataops`.`consolidation_watermarks`") == 2


def test_merge_updates_only_from_a_row_at_least_as_recent() -> None:
    text = merge_sql(plan()).text

    assert (
        "WHEN MATCHED AND COALESCE(S.`updated_at` > T.`updated_at` OR (S.`updated_at` = T.`updated_at`"
        " AND S.`op_id` >= T.`op_id`) OR T.`updated_at` IS NULL, FALSE) THEN UPDATE SET"
    ) in text
    assert (
        "WHEN NOT MATCHED THEN INSERT (`op_id`, `tx_id`, `amount`, `status`, `updated_at`, `fee`, `channel`)"
        in text
    )


def test_values_are_parameters_never_pasted_into_the_text() -> None:
    p = plan()
    sneaky = Position("2026-03-02 08:00:00'; DROP TABLE x; --", ("1' OR '1'='1",))

    sql = watermark_guard_sql(p, p.source, sneaky)

    assert "DROP" not in sql.text and "OR '1'" not in sql.text
    assert sql.params["cursor_text"] == sneaky.cursor


# ---- positions: (cursor, id) compared as typed values ----------------------------------------------

CURSORS = st.integers(min_value=0, max_value=5).map(lambda s: datetime(2026, 1, 1) + timedelta(seconds=s))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(CURSORS, st.integers(min_value=0, max_value=12)), min_size=1, max_size=12),
    mark=st.tuples(CURSORS, st.integers(min_value=0, max_value=12)),
    numeric_ids=st.booleans(),
)
def test_after_orders_positions_like_python_tuples(
    rows: list[tuple[datetime, int]], mark: tuple[datetime, int], numeric_ids: bool
) -> None:
    types = dict(OPS, op_id="INT64" if numeric_ids else "STRING")
    p = plan(ops__operations=types)
    key = (lambda i: i) if numeric_ids else (lambda i: f"id{i:02d}")
    position = Position(mark[0].strftime("%Y-%m-%d %H:%M:%S"), (str(key(mark[1])),))
    condition, params = after(p.source, position, "updated_at", ["op_id"], "w")
    con = duckdb.connect()
    con.execute(f"CREATE TABLE r (updated_at TIMESTAMP, op_id {'BIGINT' if numeric_ids else 'VARCHAR'})")
    con.executemany("INSERT INTO r VALUES (?, ?)", [(c, key(i)) for c, i in rows])

    sql = sqlglot.transpile(
        f"SELECT updated_at, op_id FROM r WHERE {condition}", read="bigquery", write="duckdb"
    )[0]
    found = sorted(con.execute(sql, params).fetchall())

    assert found == sorted((c, key(i)) for c, i in rows if (c, key(i)) > (mark[0], key(mark[1])))


# ---- the spec against the tables -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "tables", "message"),
    [
        (
            consolidation(source={"table": "ops.nope", "id": "op_id", "cursor": "updated_at"}),
            {},
            r"spec.consolidation.source.table: table ops.nope does not exist",
        ),
        (
            consolidation(source={"table": "ops.operations", "id": "operation", "cursor": "updated_at"}),
            {},
            r"spec.consolidation.source.id: unknown column 'operation' in ops.operations \(known: amount, op_id,",
        ),
        (
            consolidation(source={"table": "ops.operations", "id": "op_id", "cursor": "flag"}),
            {"ops__operations": dict(OPS, flag="BOOL")},
            r"spec.consolidation.source.cursor: column 'flag' of ops.operations is BOOL; a cursor must be one of",
        ),
        (
            consolidation(target={"table": "cons.operations", "key": ["nope"]}),
            {},
            r"spec.consolidation.target.key\[0\]: unknown column 'nope'",
        ),
        (
            consolidation(target={"table": "cons.operations", "key": ["op_id", "OP_ID"]}),
            {},
            r"spec.consolidation.target.key: a column is listed twice",
        ),
        (
            consolidation(
                joins=[
                    {
                        "table": "ops.transactions",
                        "on": ["tx_id"],
                        "columns": ["status"],
                        "cursor": "changed_at",
                    }
                ]
            ),
            {"ops__transactions": dict(TXS, status="STRING")},
            r"joins\[0\].columns\[0\]: column 'status' already comes from ops.operations",
        ),
        (
            consolidation(joins=[{"table": "ops.transactions", "on": ["tx_id"], "columns": ["fee"]}]),
            {"ops__transactions": dict(TXS, tx_id="INT64")},
            r"joins\[0\].on\[0\]: 'tx_id' is STRING in ops.operations but INT64 in ops.transactions",
        ),
        (
            consolidation(),
            {"cons__operations": {"op_id": "INT64", "tx_id": "STRING"}},
            r"spec.consolidation.target.table: cons.operations exists but lacks column\(s\) amount, status,",
        ),
    ],
)
def test_spec_that_does_not_fit_the_tables_is_refused_with_its_path(
    spec: Consolidation, tables: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(ConsolidationError, match=message):
        plan(spec, **tables)


def test_column_names_resolve_case_insensitively_to_their_spelling() -> None:
    p = plan(consolidation(source={"table": "ops.operations", "id": "OP_ID", "cursor": "Updated_At"}))

    assert (p.id_column, p.cursor_column) == ("op_id", "updated_at")
    assert [s.name for s in p.streams] == ["source:ops.operations", "join:ops.transactions"]
