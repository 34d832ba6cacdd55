"""The stages of a PipelineRun, in order: the one list every part of the project reads."""

from __future__ import annotations

from controller.spec import PipelineRunSpec

STAGES: tuple[str, ...] = ("validate", "load", "transform", "aggregate")

PHASE_OF_STAGE: dict[str, str] = {
    "validate": "Validating",
    "load": "Loading",
    "transform": "Transforming",
    "aggregate": "Aggregating",
}

PHASES: tuple[str, ...] = (
    "Pending",
    "Validating",
    "Loading",
    "Transforming",
    "Aggregating",
    "Succeeded",
    "Failed",
    "Cancelled",
)
TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})

# The Beam stages: with ``runner: dataflow`` they run as Dataflow jobs instead of Kubernetes Jobs.
DATAFLOW_STAGES: frozenset[str] = frozenset({"transform", "aggregate"})


def runs_on_dataflow(spec: PipelineRunSpec, stage: str) -> bool:
    return spec.runner == "dataflow" and stage in DATAFLOW_STAGES


def stages_of(spec: PipelineRunSpec) -> tuple[str, ...]:
    """The stages a spec asks for: validate and load always, transform and aggregate when declared."""
    wanted = {"validate", "load"}
    if spec.transform is not None:
        wanted.add("transform")
    if spec.aggregate:
        wanted.add("aggregate")
    return tuple(s for s in STAGES if s in wanted)
