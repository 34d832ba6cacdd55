"""Random interleavings of arrivals, updates, late joined rows, redeliveries and crashes at every fault
point: once the cycles have caught up, the target is exactly the reference computed in Python, every
key was inserted once, and no message is left unacknowledged. Messages carry 2 ids each here, so a
cycle publishes several and a crashed cycle leaves several behind."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beam.consolidation import FAULT_POINTS, messages
from tests.consolidation.helpers import ACK_DEADLINE, SimulatedCrash, World, crash_at, spec_doc

pytestmark = pytest.mark.integration

INSERT = st.tuples(
    st.just("insert"),
    st.integers(min_value=1, max_value=4),
    st.booleans(),  # a tie with the latest cursor
    st.sampled_from(["with_tx", "late_tx", "shared_tx", "no_tx"]),
)
UPDATE = st.tuples(
    st.just("update"), st.integers(min_value=0, max_value=40), st.sampled_from(["settled", "failed"])
)
LATE_TX = st.tuples(st.just("late_tx_arrives"))
CHANGE_TX = st.tuples(st.just("change_tx"), st.integers(min_value=0, max_value=40))
CYCLE = st.tuples(
    st.just("cycle"),
    st.sampled_from([None, None, *FAULT_POINTS]),  # crash here (in process), or not
    st.booleans(),  # the ack deadline passes first: leased messages come back
)
STEPS = st.lists(st.one_of(INSERT, UPDATE, LATE_TX, CHANGE_TX, CYCLE), min_size=3, max_size=9)


def apply(world: World, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "insert":
        _, count, tie, tx = step
        if tx == "with_tx":
            ids = [world.new_tx_id() for _ in range(count)]
            world.insert_transactions(ids, tie=True)
        elif tx == "late_tx":
            ids = [world.new_tx_id() for _ in range(count)]
        elif tx == "shared_tx":
            known = world.tx_ids() or [world.new_tx_id()]
            ids = [known[i % len(known)] for i in range(count)]
        else:
            ids = []
        world.insert_operations(count, tie=tie and world.next_op > 1, tx_ids=ids)
    elif kind == "update" and world.next_op > 1:
        world.update_operation(1 + step[1] % (world.next_op - 1), step[2])
    elif kind == "late_tx_arrives" and (missing := world.missing_tx_ids()):
        world.insert_transactions(missing[:1])
    elif kind == "change_tx" and (known := world.tx_ids()):
        world.update_transaction(known[step[1] % len(known)])
    elif kind == "cycle":
        _, fault, deadline_passes = step
        if deadline_passes:
            world.clock.advance(ACK_DEADLINE + 1)
        with contextlib.suppress(SimulatedCrash):
            world.cycle(faults=crash_at(fault) if fault else None, buckets=2)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=STEPS, batch_size=st.integers(min_value=2, max_value=5), join=st.sampled_from(["left", "inner"]))
def test_target_always_equals_the_reference_once_cycles_catch_up(
    steps: list[tuple[Any, ...]], batch_size: int, join: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp, patch.object(messages, "IDS_PER_MESSAGE", 2):
        world = World(Path(tmp) / "work", spec_doc(batch_size=batch_size, join_type=join))
        for step in steps:
            apply(world, step)

        world.drain(buckets=2)

        assert world.target_rows() == world.reference()
        assert world.inserted_total() == len(world.reference())
        assert world.bus.backlog("ops-ids-sub") == 0
