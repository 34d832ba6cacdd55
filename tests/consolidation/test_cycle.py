"""One cycle and a few in a row, on DuckDB, the embedded queue and the in-process Beam runner."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from beam.bus import OutgoingMessage
from beam.consolidation import ConsolidationError, MergeRefused
from beam.consolidation.lock import WarehouseLock
from tests.consolidation.helpers import ACK_DEADLINE, DuplicatingBus, World, crash_at, spec_doc

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path / "work", spec_doc(batch_size=4))


def test_first_cycle_merges_new_operations_with_their_transactions(world: World) -> None:
    world.insert_transactions(["T00001", "T00002"])
    world.insert_operations(3, tx_ids=["T00001", "T00002", "T00009"])

    result = world.cycle()

    assert (result.status, result.extracted, result.inserted, result.updated) == ("Merged", 3, 3, 0)
    assert world.target_rows() == world.reference()
    assert result.watermark_after["source:ops.operations"]["key"] == ["3"]
    assert world.bus.backlog("ops-ids-sub") == 0


def test_cycle_with_nothing_new_is_idle_and_moves_nothing(world: World) -> None:
    world.insert_operations(2)
    world.cycle()

    result = world.cycle()

    assert (result.status, result.extracted, result.published, result.merged) == ("Idle", 0, 0, 0)
    assert result.watermark_after == result.watermark_before


def test_backlog_larger_than_batch_size_drains_over_cycles(world: World) -> None:
    world.insert_operations(10)

    results = world.drain()

    assert [r.extracted for r in results] == [4, 4, 2, 0]
    assert [r.backlog for r in results] == [True, True, False, False]
    assert world.target_rows() == world.reference()
    assert world.inserted_total() == 10


def test_ties_on_the_cursor_split_across_batches_are_all_merged(world: World) -> None:
    world.insert_operations(3)
    world.insert_operations(4, tie=True)
    world.insert_operations(2, tie=True)

    results = world.drain()

    assert [r.extracted for r in results] == [4, 4, 1, 0]
    assert world.target_rows() == world.reference()


def test_updated_operation_is_merged_again_with_its_new_values(world: World) -> None:
    world.insert_operations(2)
    world.cycle()
    world.update_operation(1, "settled")

    result = world.cycle()

    assert (result.extracted, result.inserted, result.updated) == (1, 0, 1)
    assert world.target_rows() == world.reference()


def test_late_transaction_row_is_merged_next_cycle(world: World) -> None:
    world.insert_operations(2, tx_ids=["T00001", "T00002"])
    world.insert_transactions(["T00001"])
    world.cycle()
    world.insert_transactions(["T00002"])

    result = world.cycle()

    assert (result.extracted, result.rejoined, result.updated) == (0, 1, 1)
    assert world.target_rows() == world.reference()


def test_late_transaction_row_brings_an_inner_joined_operation_in(tmp_path: Path) -> None:
    world = World(tmp_path / "work", spec_doc(join_type="inner"))
    world.insert_operations(2, tx_ids=["T00001", "T00002"])
    world.insert_transactions(["T00001"])
    first = world.cycle()
    world.insert_transactions(["T00002"])

    second = world.cycle()

    assert (first.inserted, second.rejoined, second.inserted) == (1, 1, 1)
    assert world.target_rows() == world.reference()


def test_changed_transaction_row_updates_every_operation_it_joins(world: World) -> None:
    world.insert_transactions(["T00001"])
    world.insert_operations(3, tx_ids=["T00001", "T00001", "T00001"])
    world.cycle()
    world.update_transaction("T00001")

    result = world.cycle()

    assert (result.rejoined, result.updated) == (3, 3)
    assert world.target_rows() == world.reference()


def test_same_payload_published_twice_is_merged_once(world: World) -> None:
    world.insert_operations(3)

    result = world.cycle(DuplicatingBus(world.bus))

    assert (result.published, result.messages_published, result.received, result.duplicates) == (3, 1, 2, 1)
    assert (result.inserted, result.updated, result.staged) == (3, 0, 3)
    assert world.bus.backlog("ops-ids-sub") == 0


def test_payload_republished_after_its_merge_is_acked_without_merging(world: World) -> None:
    world.insert_operations(2)
    first = world.cycle()
    mark = first.watermark_after["source:ops.operations"]
    stale = [
        OutgoingMessage(
            json.dumps(["1", "2"]).encode(),
            {"source": "tests/ops", "cycle": first.cycle_id, "stream": "source:ops.operations"}
            | {"cursor": mark["cursor"], "key0": mark["key"][0]},
        ),
        OutgoingMessage(
            b"2",
            {"source": "tests/ops", "cycle": "seed-style", "stream": "source:ops.operations"}
            | {"cursor": mark["cursor"], "key0": mark["key"][0]},
        ),
    ]
    world.bus.publish("ops-ids", stale)

    second = world.cycle()

    assert (second.status, second.already_merged, second.merged) == ("Idle", 2, 0)
    assert world.bus.backlog("ops-ids-sub") == 0


def test_ids_redelivered_after_a_slow_cycle_are_merged_once(world: World) -> None:
    world.insert_operations(3)

    def slow(point: str) -> None:
        if point == "after_stage":  # the deadline passes; another consumer gets the messages
            world.clock.advance(ACK_DEADLINE + 1)
            taken = world.bus.pull("ops-ids-sub", 100)
            assert [json.loads(m.data) for m in taken] == [["1", "2", "3"]]

    first = world.cycle(faults=slow)
    world.clock.advance(ACK_DEADLINE + 1)
    second = world.cycle()

    assert (first.inserted, second.status, second.already_merged, second.merged) == (3, "Idle", 1, 0)
    assert world.inserted_total() == 3
    assert world.bus.backlog("ops-ids-sub") == 0


def test_messages_of_a_crashed_cycle_are_merged_by_the_next_one(world: World) -> None:
    world.insert_operations(3)
    with pytest.raises(BaseException, match="after_publish"):
        world.cycle(faults=crash_at("after_publish"))

    result = world.cycle()

    assert (result.received, result.published, result.inserted) == (2, 3, 3)
    assert world.bus.backlog("ops-ids-sub") == 0


def test_merge_is_refused_when_the_lock_was_taken_over(world: World) -> None:
    world.insert_operations(2)

    def steal(point: str) -> None:
        if point == "after_stage":
            with world.warehouse.connect() as con:
                con.execute("UPDATE _dataops.locks SET owner = 'someone-else'")

    with pytest.raises(MergeRefused, match="no longer holds the lock"):
        world.cycle(faults=steal)

    assert world.target_rows() == []
    with world.warehouse.connect() as con:
        con.execute("DELETE FROM _dataops.locks")
    assert world.drain()[0].inserted == 2


def test_second_cycle_exits_cleanly_while_the_first_holds_the_lock(world: World) -> None:
    world.insert_operations(2)
    holder = WarehouseLock(world.warehouse, "consolidation:tests/ops", "cycle-running", wall_clock)
    holder.acquire()

    result = world.cycle(lock_wait_seconds=0.3)

    assert result.status == "Skipped"
    assert "consolidation:tests/ops is locked by cycle cycle-running" in result.message
    assert world.target_rows() == []
    holder.release()
    assert world.cycle().inserted == 2


def test_expired_lock_of_another_host_is_taken_over(world: World) -> None:
    world.insert_operations(1)
    world.cycle()  # creates the tables
    with world.warehouse.connect() as con:
        con.execute(
            "INSERT INTO _dataops.locks VALUES ('consolidation:tests/ops', 'gone', 'other-host', 1,"
            " TIMESTAMP '2020-01-01 00:00:00+00', TIMESTAMP '2020-01-01 00:15:00+00')"
        )
    world.insert_operations(1)

    assert world.cycle(lock_wait_seconds=0).inserted == 1


def test_missing_source_table_is_a_clear_error(tmp_path: Path) -> None:
    doc = spec_doc()
    doc["spec"]["consolidation"]["source"]["table"] = "ops.nothing"
    world = World(tmp_path / "work", doc)

    with pytest.raises(
        ConsolidationError, match=r"spec.consolidation.source.table: table ops.nothing does not exist"
    ):
        world.cycle()


def test_unknown_join_column_is_a_clear_error(tmp_path: Path) -> None:
    doc = spec_doc()
    doc["spec"]["consolidation"]["joins"][0]["columns"] = ["fee", "colour"]
    world = World(tmp_path / "work", doc)

    with pytest.raises(
        ConsolidationError, match=r"joins\[0\].columns\[1\]: unknown column 'colour' in ops.transactions"
    ):
        world.cycle()


def wall_clock() -> datetime:
    return datetime.now(UTC)
