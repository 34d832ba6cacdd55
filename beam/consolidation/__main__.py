"""Run one consolidation cycle: ``python -m beam.consolidation SPEC.yaml --workdir DIR [--output json]``.

The worker image's CronJob entrypoint and ``dataops consolidate`` both run exactly this. ``SPEC`` is
an IngestionSource YAML file, or ``env:NAME`` for its JSON/YAML in an environment variable. Options
after the known ones go to Beam (``--runner``, ...).

Exit status: 0 the cycle merged, had nothing to do, or found another cycle running (status Skipped);
65 bad input (the spec, a missing table, an unknown column, no Dataflow settings: do not retry); 1 failed
(retry later: the bus refused, the Dataflow job failed, timed out or was cancelled).

With ``spec.consolidation.runner: dataflow`` the pipeline runs as a Dataflow job
(:mod:`beam.consolidation.dataflow`), reached with the ``DATAOPS_DATAFLOW_*`` variables the controller
gives the CronJob's pod (:func:`controller.settings.consolidation_dataflow_env`).
With ``--output json`` the summary is JSON on stdout; otherwise a human summary goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from beam.bus import BUS_KINDS, DEFAULT_ACK_DEADLINE_SECONDS, BusError, open_bus
from beam.consolidation.cycle import DEFAULT_PULL_TIMEOUT_SECONDS, CycleResult, run_cycle
from beam.consolidation.dataflow import CycleCancelled, DataflowCycleError, DataflowRun
from beam.consolidation.lock import DEFAULT_TTL_SECONDS, DEFAULT_WAIT_SECONDS
from beam.consolidation.merge import MergeRefused
from beam.consolidation.messages import IdsNotReturned
from beam.consolidation.plan import ConsolidationError
from beam.consolidation.spec_file import load_ingestion_source
from beam.stages.context import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from beam.storage.workdir import StageWorkdir
from controller.settings import SettingsError, dataflow_settings
from controller.spec import SpecError

log = logging.getLogger("dataops.consolidation")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m beam.consolidation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("spec", help="IngestionSource YAML file, or env:NAME")
    parser.add_argument(
        "--workdir",
        required=True,
        help="folder of the warehouse and the embedded queue (a gs:// workdir: a local scratch folder)",
    )
    parser.add_argument(
        "--output", choices=("text", "json"), default="text", help="text for people, json for programs"
    )
    parser.add_argument(
        "--bus", choices=BUS_KINDS, default=None, help="message bus (default: $DATAOPS_BUS or embedded)"
    )
    parser.add_argument(
        "--lock-wait", type=float, default=DEFAULT_WAIT_SECONDS, help="seconds to wait for a running cycle"
    )
    parser.add_argument("--lock-ttl", type=float, default=DEFAULT_TTL_SECONDS, help="seconds a lock lasts")
    parser.add_argument(
        "--ack-deadline",
        type=int,
        default=DEFAULT_ACK_DEADLINE_SECONDS,
        help="ack deadline of a new subscription",
    )
    parser.add_argument(
        "--result-file",
        type=Path,
        default=None,
        help="also write a short JSON result here (a pod's termination log)",
    )
    parser.add_argument(
        "--pull-timeout", type=float, default=DEFAULT_PULL_TIMEOUT_SECONDS, help="seconds to get the ids back"
    )
    return parser.parse_known_args(argv)


def _failure(reason: str, message: str) -> dict[str, Any]:
    return {"status": "Failed", "reason": reason, "message": message}


def _human(result: CycleResult) -> str:
    lines = [f"consolidation {result.source} -> {result.target}: {result.status} (cycle {result.cycle_id})"]
    if result.status != "Skipped":
        lines += [
            f"  extracted {result.extracted:,}   re-merged for late joined rows {result.rejoined:,}"
            f"   published {result.published:,} ids in {result.messages_published:,} message(s)"
            f"   received {result.received:,} message(s)",
            f"  staged {result.staged:,}   inserted {result.inserted:,}   updated {result.updated:,}"
            f"   unchanged {result.unchanged:,}   acked {result.acked:,}",
            f"  already merged {result.already_merged:,}   duplicates {result.duplicates:,}"
            f"   deferred {result.deferred:,}",
        ]
        for stream, after in result.watermark_after.items():
            before = result.watermark_before.get(stream)
            lines.append(f"  watermark {stream}: {_position(before)} -> {_position(after)}")
    lines.append(f"  {result.message}")
    lines.append(f"  {result.duration_seconds:.2f}s")
    return "\n".join(lines) + "\n"


def _position(p: dict[str, Any] | None) -> str:
    return "(start)" if p is None else f"({p['cursor']}, {', '.join(p['key'])})"


def main(argv: list[str] | None = None) -> int:
    args, beam_args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    json_out = args.output == "json"
    try:
        source = load_ingestion_source(args.spec)
        workdir = StageWorkdir.open(args.workdir).local  # no run files: nothing to mirror to a bucket
        dataflow = DataflowRun(dataflow_settings(os.environ), _poll_seconds(os.environ))
        bus = open_bus(workdir, args.bus)
        try:
            result = run_cycle(
                source,
                workdir,
                bus,
                lock_wait_seconds=args.lock_wait,
                lock_ttl_seconds=args.lock_ttl,
                ack_deadline_seconds=args.ack_deadline,
                pull_timeout_seconds=args.pull_timeout,
                beam_args=[a for a in beam_args if a != "--"],
                dataflow=dataflow,
            )
        finally:
            bus.close()
    except (SpecError, ConsolidationError, SettingsError) as exc:
        return _fail(args, "BadInput", str(exc), EXIT_BAD_INPUT)
    except DataflowCycleError as exc:  # nothing merged: the job's own words, and its name and id
        return _fail(args, exc.reason, str(exc), EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED)
    except CycleCancelled as exc:
        return _fail(args, "Cancelled", f"{exc}; its Dataflow job was cancelled, nothing merged", EXIT_FAILED)
    except (BusError, IdsNotReturned, MergeRefused) as exc:  # retryable: nothing merged, nothing lost
        return _fail(args, type(exc).__name__, str(exc), EXIT_FAILED)
    except Exception as exc:  # unexpected: the traceback helps, and the next cycle starts over all the same
        log.warning("the cycle failed", exc_info=True)
        return _fail(args, type(exc).__name__, str(exc), EXIT_FAILED)
    if args.result_file is not None:
        _write_result(args.result_file, short_result(result))
    if json_out:
        sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
    else:
        sys.stderr.write(_human(result))
    return EXIT_OK


def _fail(args: argparse.Namespace, reason: str, message: str, code: int) -> int:
    failure = _failure(reason, message)
    if args.result_file is not None:
        _write_result(args.result_file, failure | {"message": message[:RESULT_MESSAGE_CHARS]})
    if args.output == "json":
        sys.stdout.write(json.dumps(failure, indent=2) + "\n")
    sys.stderr.write(f"consolidation failed ({reason}): {message}\n")
    return code


def _poll_seconds(env: Mapping[str, str]) -> float:
    raw = env.get("DATAOPS_DATAFLOW_POLL_SECONDS") or "30"
    try:
        return max(float(raw), 0.1)
    except ValueError:
        raise SettingsError(f"DATAOPS_DATAFLOW_POLL_SECONDS={raw!r} is not a number of seconds") from None


RESULT_MESSAGE_CHARS = 1000
"""A termination message holds 4 KiB: the result file keeps the message short."""


def short_result(result: CycleResult) -> dict[str, Any]:
    """The result a pod leaves in its termination log: counts, the watermark, a short message."""
    return {
        "status": result.status,
        "cycleId": result.cycle_id,
        "merged": result.merged,
        "inserted": result.inserted,
        "updated": result.updated,
        "extracted": result.extracted,
        "rejoined": result.rejoined,
        "backlog": result.backlog,
        "watermark": result.watermark_after,
        "durationSeconds": result.duration_seconds,
        "message": result.message[:RESULT_MESSAGE_CHARS],
    } | ({"dataflowJob": result.dataflow_job} if result.dataflow_job else {})


def _write_result(path: Path, doc: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True), encoding="utf-8")
    except OSError as exc:
        log.warning("cannot write the result file %s: %s", path, exc)


if __name__ == "__main__":
    sys.exit(main())
