"""The stages a PipelineRun runs, one module each, each with ``run(ctx) -> StageResult``."""
