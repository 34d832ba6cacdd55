"""Run one stage: ``python -m beam.stages STAGE --spec FILE --workdir DIR [options] [-- beam options]``.

The worker image's entrypoint and the local executor both call exactly this.
Exit status: 0 succeeded, 65 bad input (do not retry), 1 failed (may be retried).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

from beam.stages.context import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, StageContext, StageFailed, StageResult
from beam.storage import StorageError
from beam.storage.workdir import StageWorkdir
from controller.spec import PipelineRun, SpecError
from controller.spec_check import load_checked, load_checked_text
from controller.stages import STAGES, stages_of

log = logging.getLogger("dataops.stage")


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m beam.stages", description=__doc__)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument(
        "--spec",
        required=True,
        help="the PipelineRun: a YAML file, or env:NAME for JSON in an environment variable",
    )
    parser.add_argument(
        "--workdir", required=True, help="a local folder, or gs://bucket/prefix (run files kept there)"
    )
    parser.add_argument("--started-at", default=None, help="the run's start time, ISO 8601 UTC")
    parser.add_argument("--result-file", type=Path, default=None, help="where to write the result JSON")
    return parser.parse_known_args(argv)


def _load_run(spec: str) -> PipelineRun:
    """From a file, or from ``env:NAME`` (the controller passes the run this way); a relative
    ``source.uri`` in the latter resolves against ``$DATAOPS_SOURCE_BASE`` (or the working folder)."""
    if spec.startswith("env:"):
        name = spec[len("env:") :]
        text = os.environ.get(name)
        if text is None:
            raise SpecError(spec, [("", None, f"environment variable {name} is not set")])
        return load_checked_text(text, spec, Path(os.environ.get("DATAOPS_SOURCE_BASE", ".")).resolve())
    return load_checked(Path(spec))


def _quiet_optional_gcp(record: logging.LogRecord) -> bool:
    """Beam says at import that GCS and BigQuery clients are absent; locally that is expected."""
    text = record.getMessage()
    return not ("GCSFileSystem" in text or "apitools not found" in text)


def _record_in_catalog(run: PipelineRun, result: StageResult, started: str) -> None:
    """Lineage and aspects of the tables written, when a catalog is configured (``beam.catalog``).

    The data is written by then: a catalog that refuses is reported in the result, not a failed stage.
    """
    from google.api_core.exceptions import RetryError

    from beam.catalog import CatalogError, catalog_settings, record_stage

    try:
        settings = catalog_settings(os.environ)
        if settings is None:
            return
        result.details["catalog"] = record_stage(
            settings, run, result.stage, result.tables, result.rows_out, started
        )
    except (CatalogError, RetryError) as exc:
        result.details["catalog"] = f"not updated: {exc}"
        result.message = f"{result.message} (catalog not updated: {exc})"
        log.warning("stage %s: catalog not updated: %s", result.stage, exc)


def main(argv: list[str] | None = None) -> int:
    args, beam_args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_optional_gcp)
    logging.getLogger("dataops").setLevel(logging.INFO)
    started = args.started_at or datetime.now(UTC).isoformat(timespec="seconds")
    result = StageResult(stage=args.stage)
    code = EXIT_OK
    workdir = StageWorkdir.open(args.workdir)
    run: PipelineRun | None = None
    begun = datetime.now(UTC)
    try:
        run = _load_run(args.spec)
        log.info("stage %s of %s: %s", args.stage, run.metadata.name, _adapters(run, args.workdir))
        workdir.pull(run.metadata.namespace, run.metadata.name)
        ctx = StageContext(
            run=run,
            workdir=workdir.local,
            started_at=started,
            beam_args=[a for a in beam_args if a != "--"],
        )
        module = importlib.import_module(f"beam.stages.{args.stage}")
        result = module.run(ctx)
    except SpecError as exc:
        result = StageResult(stage=args.stage, state="Failed", reason="InvalidSpec", message=str(exc))
        code = EXIT_BAD_INPUT
    except StageFailed as exc:
        result = exc.result or StageResult(stage=args.stage)
        result.state, result.reason, result.message = "Failed", exc.reason, str(exc)
        code = EXIT_BAD_INPUT if exc.bad_input else EXIT_FAILED
    except StorageError as exc:  # the workdir's bucket: named, with the role when one is missing
        result = StageResult(stage=args.stage, state="Failed", reason="StorageError", message=str(exc))
        code = EXIT_FAILED
    except Exception as exc:  # an unexpected failure: retryable, with the traceback kept aside
        trace = workdir.local / f"{args.stage}-traceback.txt"
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text(traceback.format_exc(), encoding="utf-8")
        result = StageResult(
            stage=args.stage,
            state="Failed",
            reason="InternalError",
            message=f"{type(exc).__name__}: {exc} (traceback in {trace})",
        )
        code = EXIT_FAILED
    if code == EXIT_OK and run is not None:
        _record_in_catalog(run, result, started)
    result.timing = {"start": _iso(begun), "end": _iso(datetime.now(UTC))}
    # The stage's folder keeps its result too (in a pod --result-file is the termination log): the
    # report reads every stage's from there. With a bucket workdir, both go up with the run's files.
    kept = (
        workdir.local / "runs" / run.metadata.namespace / run.metadata.name / args.stage / "result.json"
        if run
        else None
    )
    if run is not None and (code != EXIT_OK or args.stage == stages_of(run.spec)[-1]):
        result.report = _write_report(run, workdir.local)
    _write_result(kept, result)
    code, result = _push(workdir, run, code, result)
    _write_result(args.result_file, result)
    if code != EXIT_OK:
        log.error("stage %s failed: %s", args.stage, result.message)
    return code


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_result(path: Path | None, result: StageResult) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(result.to_json(), encoding="utf-8")


def _write_report(run: PipelineRun, workdir: Path) -> str:
    """The run report, written by the run's last stage (and by a failed one) into the run's folder, and
    copied under ``$DATAOPS_REPORT_URI`` (a gs:// prefix in production) when set: its location, or ""
    when it could not be written (a report never fails a stage)."""
    try:
        from beam.report.publish import REPORT_URI_ENV, publish
        from beam.report.run_report import write_run_report

        written = write_run_report(run, workdir)
        base = os.environ.get(REPORT_URI_ENV)
        if not base:
            return str(written)
        return publish(written, run.metadata.namespace, run.metadata.name, base)
    except Exception as exc:
        log.warning("the run report could not be written: %s: %s", type(exc).__name__, exc)
        return ""


def _adapters(run: PipelineRun, workdir: str) -> str:
    from beam.adapters import adapters_for

    return adapters_for(run.spec, workdir, os.environ).describe()


def _push(
    workdir: StageWorkdir, run: PipelineRun | None, code: int, result: StageResult
) -> tuple[int, StageResult]:
    """With a bucket workdir: the run's new files up, and artifacts named by their gs:// URIs."""
    if run is None or workdir.remote is None:
        return code, result
    try:
        workdir.push(run.metadata.namespace, run.metadata.name)
    except StorageError as exc:
        failed = StageResult(stage=result.stage, state="Failed", reason="StorageError", message=str(exc))
        return EXIT_FAILED, failed
    result.artifacts = {k: workdir.published(v) for k, v in result.artifacts.items()}
    if result.report:
        result.report = workdir.published(result.report)
    return code, result


if __name__ == "__main__":
    sys.exit(main())
