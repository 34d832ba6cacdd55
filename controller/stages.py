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


def needs_cleanup(spec: PipelineRunSpec) -> bool:
    """Whether a run starts what the garbage collector cannot stop (a Dataflow job): only such a run
    carries the controller's finalizer. Stage Jobs are owned by their run: the collector removes them
    (and their pods) with it, even while the controller is down, at no write per run."""
    return any(runs_on_dataflow(spec, s) for s in stages_of(spec))


def stages_of(spec: PipelineRunSpec) -> tuple[str, ...]:
    """The stages a spec asks for: validate and load always, transform and aggregate when declared."""
    wanted = {"validate", "load"}
    if spec.transform is not None:
        wanted.add("transform")
    if spec.aggregate:
        wanted.add("aggregate")
    return tuple(s for s in STAGES if s in wanted)
