"""The consolidation flex template's entry file: one cycle's Beam pipeline, launched by the cycle.

Dataflow's Python launcher runs this file as ``python flex.py --source=JSON --workdir=DIR --ids=FILE
--staging=DIR [--upto_cursor=C --upto_id=I] [--buckets=N] [Beam options...]`` (the parameters of
``images/dataflow-template/consolidation-metadata.json``, then the pipeline options Dataflow adds).
It runs exactly the pipeline a cycle runs in its own pod on the direct runner,
``python -m beam.consolidation.pipeline --spec env:DATAOPS_SOURCE ...``, with the IngestionSource
document in ``DATAOPS_SOURCE``; the cycle that launched it loads the parts it writes and merges them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping

SOURCE_ENV = "DATAOPS_SOURCE"
PARAMETERS = ("source", "workdir", "ids", "staging", "upto_cursor", "upto_id", "buckets")
REQUIRED = ("source", "workdir", "ids", "staging")


def pipeline_command(parameters: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The ``beam.consolidation.pipeline`` arguments and the environment of one launch's parameters."""
    missing = [p for p in REQUIRED if not parameters.get(p)]
    if missing:
        raise ValueError(f"template parameters missing: {', '.join(missing)}")
    argv = ["--spec", f"env:{SOURCE_ENV}", "--workdir", parameters["workdir"], "--ids", parameters["ids"]]
    argv += ["--staging", parameters["staging"]]
    if parameters.get("upto_cursor"):
        argv += ["--upto-cursor", parameters["upto_cursor"], "--upto-id", parameters.get("upto_id", "")]
    if parameters.get("buckets"):
        argv += ["--buckets", parameters["buckets"]]
    return argv, {SOURCE_ENV: parameters["source"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flex.py", description=__doc__)
    for name in PARAMETERS:
        parser.add_argument(f"--{name}", default="")
    known, beam_options = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        pipeline_argv, env = pipeline_command(vars(known))
    except ValueError as exc:
        sys.stderr.write(f"consolidation pipeline not started: {exc}\n")
        return 2
    os.environ.update(env)
    from beam.consolidation.pipeline import run
    from beam.consolidation.plan import ConsolidationError
    from controller.spec import SpecError

    try:
        counts = run([*pipeline_argv, *beam_options])
    except (SpecError, ConsolidationError, OSError) as exc:
        sys.stderr.write(f"consolidation pipeline failed: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(counts, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
