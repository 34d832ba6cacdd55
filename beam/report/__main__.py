"""Write a report: ``python -m beam.report run RUN_DIR --workdir DIR [--output FILE]`` or
``python -m beam.report consolidation SPEC --workdir DIR [--output FILE]``.

Prints ``{"report": PATH}`` on stdout. Exit status: 0 written, 2 the input cannot be read (the message
names the file and the problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from beam.report.facts import ReportInputError, load_run


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m beam.report", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    run = sub.add_parser("run", help="the report of one PipelineRun")
    run.add_argument("run_dir", type=Path, help="the run's folder: <workdir>/runs/<namespace>/<name>")
    cons = sub.add_parser("consolidation", help="the cycles of an IngestionSource's consolidation")
    cons.add_argument("spec", type=Path, help="the IngestionSource YAML file")
    for p in (run, cons):
        p.add_argument("--workdir", type=Path, required=True, help="the workdir (warehouse.duckdb)")
        p.add_argument("--output", type=Path, default=None, help="the HTML file (default: in the workdir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.kind == "run":
            from beam.report.run_report import write_run_report

            written = write_run_report(load_run(args.run_dir.resolve()), args.workdir.resolve(), args.output)
        else:
            from beam.report.consolidation import write_consolidation_report

            written = write_consolidation_report(args.spec, args.workdir.resolve(), args.output)
    except ReportInputError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    sys.stdout.write(json.dumps({"report": str(written)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
