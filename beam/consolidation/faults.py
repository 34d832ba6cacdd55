"""Fault points: where a cycle can be killed in tests, as a pod is killed in a cluster.

``DATAOPS_FAULTPOINT=<name>`` makes the cycle exit at once with status 137 (SIGKILL's) when it
reaches that point: no cleanup, no lock release, no acknowledgement, nothing flushed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

FAULT_POINTS = ("after_extract", "after_publish", "after_stage", "after_merge")
"""In cycle order; ``after_merge``: the merge has committed, the acknowledgement has not happened."""
DATAFLOW_FAULT_POINTS = ("after_launch",)
"""Reached only with ``runner: dataflow``: the job is launched, the pod dies before it is done."""

FAULT_EXIT_STATUS = 137
FAULTPOINT_ENV = "DATAOPS_FAULTPOINT"

FaultHook = Callable[[str], None]
"""Called with each fault point's name as the cycle passes it."""


def no_faults(point: str) -> None:
    """The hook of a normal cycle."""


def exit_at(name: str) -> FaultHook:
    """A hook that kills the process at ``name``."""
    if name not in FAULT_POINTS + DATAFLOW_FAULT_POINTS:
        raise ValueError(
            f"{FAULTPOINT_ENV}={name!r} is not a fault point; use one of"
            f" {', '.join(FAULT_POINTS + DATAFLOW_FAULT_POINTS)}"
        )

    def hook(point: str) -> None:
        if point == name:
            os._exit(FAULT_EXIT_STATUS)

    return hook


def faults_from_env(env: Mapping[str, str] | None = None) -> FaultHook:
    """The hook ``$DATAOPS_FAULTPOINT`` asks for (none when unset or empty)."""
    name = (os.environ if env is None else env).get(FAULTPOINT_ENV, "").strip()
    return exit_at(name) if name else no_faults
