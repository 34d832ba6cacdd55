"""The namespace queue: at most N active runs, the rest admitted in creation order."""

from __future__ import annotations

from typing import Any

import pytest

from controller.admission import ACTIVE, DONE, WAITING, Admission, state_of

pytestmark = pytest.mark.unit


def run(name: str, created: str, phase: str = "Pending", attempt: int = 0, ns: str = "a") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
        "status": {"phase": phase, "stages": [{"name": "validate", "attempt": attempt}]},
    }


def test_state_follows_the_status() -> None:
    assert state_of(run("x", "t")) == WAITING
    assert state_of({"metadata": {"name": "x"}}) == WAITING
    assert state_of(run("x", "t", "Validating", 1)) == ACTIVE
    assert state_of(run("x", "t", "Pending", 1)) == ACTIVE  # backing off between attempts
    assert state_of(run("x", "t", "Failed", 1)) == DONE


def test_the_oldest_waiting_runs_are_admitted_up_to_the_limit() -> None:
    q = Admission(2)
    for name, created in [
        ("c", "2026-01-01T00:00:03Z"),
        ("a", "2026-01-01T00:00:01Z"),
        ("b", "2026-01-01T00:00:02Z"),
    ]:
        q.observe(run(name, created))
    assert q.admit("a", "c") == 3  # two older runs first
    assert q.admit("a", "a") == 0
    assert q.admit("a", "b") == 0
    assert q.admit("a", "c") == 1
    assert q.active("a") == 2 and q.next_up("a") == []
    q.observe(run("a", "2026-01-01T00:00:01Z", "Succeeded", 1))
    assert q.next_up("a") == ["c"]
    assert q.admit("a", "c") == 0


def test_a_reserved_slot_is_not_lost_to_a_stale_event() -> None:
    q = Admission(1)
    q.observe(run("a", "1"))
    assert q.admit("a", "a") == 0
    q.observe(run("a", "1"))  # the watch still shows it Pending: it keeps its slot
    q.observe(run("b", "2"))
    assert q.admit("a", "b") == 1


def test_namespaces_are_counted_apart_and_zero_means_no_limit() -> None:
    q = Admission(1)
    q.observe(run("a", "1", ns="x"))
    q.observe(run("b", "2", ns="y"))
    assert q.admit("x", "a") == 0 and q.admit("y", "b") == 0
    free = Admission(0)
    for i in range(50):
        free.observe(run(f"r{i}", str(i)))
        assert free.admit("a", f"r{i}") == 0


def test_a_forgotten_run_frees_its_slot() -> None:
    q = Admission(1)
    q.observe(run("a", "1"))
    q.observe(run("b", "2"))
    assert q.admit("a", "a") == 0 and q.admit("a", "b") == 1
    q.forget("a", "a")
    assert q.admit("a", "b") == 0
