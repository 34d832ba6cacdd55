"""The flex template's entry file: a stage, launched by Dataflow with the template's parameters.

Dataflow's Python launcher runs this file as ``python flex.py --stage=transform --run=JSON
--workdir=DIR --started_at=ISO [Beam options...]`` (the parameters of
``images/dataflow-template/stage-metadata.json``, then the pipeline options Dataflow adds:
``--runner``, ``--project``, ``--region``, ``--temp_location``, ...). It runs exactly the stage command
a pod or the local executor runs, ``python -m beam.stages STAGE --spec env:DATAOPS_RUN --workdir DIR
--started-at ISO -- [Beam options]``, with the run document in ``DATAOPS_RUN``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

RUN_ENV = "DATAOPS_RUN"
PARAMETERS = ("stage", "run", "workdir", "started_at")


def stage_command(parameters: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The ``beam.stages`` arguments and the environment of one launch's parameters."""
    missing = [p for p in ("stage", "run", "workdir") if not parameters.get(p)]
    if missing:
        raise ValueError(f"template parameters missing: {', '.join(missing)}")
    argv = [parameters["stage"], "--spec", f"env:{RUN_ENV}", "--workdir", parameters["workdir"]]
    if parameters.get("started_at"):
        argv += ["--started-at", parameters["started_at"]]
    return argv, {RUN_ENV: parameters["run"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flex.py", description=__doc__)
    for name in PARAMETERS:
        parser.add_argument(f"--{name}", default="")
    known, beam_options = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    stage_argv, env = stage_command(vars(known))
    os.environ.update(env)
    from beam.stages.__main__ import main as run_stage

    return run_stage([*stage_argv, "--", *beam_options])


if __name__ == "__main__":
    sys.exit(main())
