"""``dataops``: the command line for people. The only module that prints.

dataops run SPEC.yaml --workdir DIR [--output json] [--report]
dataops report RUN_DIR_OR_SPEC --workdir DIR [--output FILE]
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from controller.local import LocalRun, StageEvent
from controller.spec import SpecError
from controller.spec_check import load_checked

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run data pipelines as Kubernetes custom resources, or locally with no cloud.",
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """dataops: PipelineRuns and IngestionSources, on a laptop or on Kubernetes."""


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


class _Progress:
    """Stage progress on stderr: a spinner with elapsed time while a stage runs, a line when it ends."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        self.task: Any = None

    def __enter__(self) -> _Progress:
        if not self.quiet:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, ev: StageEvent) -> None:
        if self.quiet:
            return
        if ev.kind == "started":
            label = f"[bold]{ev.stage}[/]" + (f" (attempt {ev.attempt})" if ev.attempt > 1 else "")
            self.task = self.progress.add_task(label, total=None)
        elif ev.kind == "finished" and ev.outcome is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
                self.task = None
            o = ev.outcome
            rows = f"{o.rows.rows_in:>9,} in {o.rows.rows_out:>9,} out"
            rows += f" {o.rows.rows_rejected:,} rejected" if o.rows.rows_rejected else ""
            mark = "[green]✓[/]" if o.kind == "succeeded" else "[red]✗[/]"
            self.progress.console.print(f"{mark} {ev.stage:<10} {rows}  {ev.seconds:6.1f}s")
        elif ev.kind == "event" and ev.event is not None and ev.event.reason == "StageRetrying":
            self.progress.console.print(f"[yellow]↻[/] {ev.event.message}")


def _summary(doc: dict[str, Any], run_name: str, namespace: str, workdir: Path) -> dict[str, Any]:
    tables: list[dict[str, str]] = []
    for s in doc.get("stages", []):
        tables.extend({"table": t, "stage": s["name"]} for t in s.get("tables", []))
    return {
        "name": run_name,
        "namespace": namespace,
        "phase": doc["phase"],
        "reason": doc.get("reason", ""),
        "message": doc.get("message", ""),
        "startTime": doc.get("startTime"),
        "completionTime": doc.get("completionTime"),
        "durationSeconds": doc.get("durationSeconds"),
        "stages": [
            {
                k: s.get(k)
                for k in (
                    "name",
                    "state",
                    "attempt",
                    "rowsIn",
                    "rowsOut",
                    "rowsRejected",
                    "bytesBilled",
                    "durationSeconds",
                    "reason",
                    "message",
                    "tables",
                )
            }
            for s in doc.get("stages", [])
        ],
        "tables": tables,
        "workdir": str(workdir),
        "warehouse": str(workdir / "warehouse.duckdb"),
        "runDir": str(workdir / "runs" / namespace / run_name),
    }


def _print_table(summary: dict[str, Any]) -> None:
    table = Table(title=f"PipelineRun {summary['name']}: {summary['phase']}", title_justify="left")
    for col in ("stage", "state", "rows in", "rows out", "rejected", "seconds"):
        table.add_column(col, justify="right" if col not in ("stage", "state") else "left")
    for s in summary["stages"]:
        seconds = f"{s['durationSeconds']:.1f}" if s.get("durationSeconds") is not None else "-"
        table.add_row(
            s["name"], s["state"], f"{s['rowsIn']:,}", f"{s['rowsOut']:,}", f"{s['rowsRejected']:,}", seconds
        )
    out.print(table)
    for t in summary["tables"]:
        out.print(f"  table {t['table']}  ({t['stage']})")
    out.print(f"  warehouse {summary['warehouse']}")
    if summary.get("report"):
        out.print(f"  report {summary['report']}", markup=False, highlight=False)


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="PipelineRun YAML file")],
    workdir: Annotated[Path, typer.Option(help="Folder for the warehouse and run files")] = Path("work"),
    output: Annotated[
        OutputFormat, typer.Option(help="text for people, json for programs")
    ] = OutputFormat.text,
    resume: Annotated[bool, typer.Option(help="Re-run a failed run from its failed stage")] = False,
    report: Annotated[
        bool, typer.Option("--report", help="Then write the run's HTML report and print where it is")
    ] = False,
) -> None:
    """Run a PipelineRun locally: validate, load, transform, aggregate, on the embedded defaults."""
    if str(workdir).startswith("gs:"):  # Path() has already folded gs:// into gs:/
        err.print(
            "--workdir: a local run keeps its workdir on this machine (its warehouse is a DuckDB file);"
            " gs://bucket/prefix workdirs are for stage pods (Helm worker.workdir). Sources may be gs:// URIs.",
            markup=False,
        )
        raise typer.Exit(2)
    try:
        pipeline_run = load_checked(spec)
    except SpecError as exc:
        if output == OutputFormat.json:
            failed = {
                "name": None,
                "phase": "Failed",
                "reason": "InvalidSpec",
                "message": str(exc),
                "problems": [{"path": p, "line": line, "message": m} for p, line, m in exc.problems],
                "stages": [],
                "tables": [],
            }
            sys.stdout.write(json.dumps(failed, indent=2) + "\n")
        err.print("[red]invalid spec[/]", markup=True)
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    workdir = workdir.resolve()
    quiet = output == OutputFormat.json
    if not quiet:
        err.print(f"PipelineRun [bold]{pipeline_run.metadata.name}[/] -> {workdir}")
    with _Progress(quiet=quiet) as progress:
        local = LocalRun(run=pipeline_run, spec_path=spec.resolve(), workdir=workdir, on_event=progress)
        doc = local.execute(resume=resume)
    summary = _summary(doc, pipeline_run.metadata.name, pipeline_run.metadata.namespace, workdir)
    if report:
        written = _write_report(["run", summary["runDir"], "--workdir", str(workdir)])
        if written:
            summary["report"] = written
    if output == OutputFormat.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_table(summary)
    if summary["phase"] != "Succeeded":
        err.print(f"[red]{summary['phase']}[/]: ", markup=True, end="")
        err.print(summary["message"], markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def consolidate(
    spec: Annotated[Path, typer.Argument(help="IngestionSource YAML file (with spec.consolidation)")],
    workdir: Annotated[Path, typer.Option(help="Folder for the warehouse and the embedded queue")] = Path(
        "work"
    ),
    output: Annotated[
        OutputFormat, typer.Option(help="text for people, json for programs")
    ] = OutputFormat.text,
    bus: Annotated[str | None, typer.Option(help="embedded (default) or pubsub ($DATAOPS_BUS)")] = None,
    lock_wait: Annotated[
        float, typer.Option(help="Seconds to wait while another cycle of this source runs")
    ] = 10.0,
    report: Annotated[
        bool,
        typer.Option("--report", help="Then write the HTML report of the source's cycles (path on stderr)"),
    ] = False,
) -> None:
    """Run one consolidation cycle: new rows merged into the target, the watermark moved with them."""
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "beam.consolidation",
        str(spec),
        "--workdir",
        str(workdir.resolve()),
        "--output",
        output.value,
        "--lock-wait",
        str(lock_wait),
    ]
    if bus is not None:
        cmd += ["--bus", bus]
    code = subprocess.call(cmd)
    if report and code in (0, 1):
        written = _write_report(["consolidation", str(spec), "--workdir", str(workdir.resolve())])
        if written:
            err.print(f"report {written}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _write_report(args: list[str], output: Path | None = None) -> str | None:
    """``python -m beam.report ARGS``: the report's path, or None (the reason is printed) when it failed."""
    import subprocess

    from controller.local import _child_env

    cmd = [sys.executable, "-m", "beam.report", *args] + (["--output", str(output)] if output else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_child_env())
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        message = lines[-1] if lines else f"the report failed (exit {proc.returncode})"
        err.print(message, markup=False, highlight=False, soft_wrap=True)
        return None
    return str(json.loads(proc.stdout.strip().splitlines()[-1])["report"])


@app.command()
def report(
    target: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR_OR_SPEC",
            help="A run's folder (<workdir>/runs/<namespace>/<name>), its PipelineRun YAML, "
            "or an IngestionSource YAML (its consolidation cycles)",
        ),
    ],
    workdir: Annotated[Path, typer.Option(help="The workdir the run used")] = Path("work"),
    output_file: Annotated[
        Path | None, typer.Option("--output", help="The HTML file (default: report.html in the run's folder)")
    ] = None,
) -> None:
    """Write one self-contained HTML report of a run (stages, validation, rejects, KPI charts), or of
    a consolidation's cycles, and print where it is."""
    workdir = workdir.resolve()
    if target.is_dir():
        args = ["run", str(target.resolve()), "--workdir", str(workdir)]
    else:
        kind, name, namespace = _kind_of(target)
        if kind == "PipelineRun":
            args = ["run", str(workdir / "runs" / namespace / name), "--workdir", str(workdir)]
        elif kind == "IngestionSource":
            args = ["consolidation", str(target.resolve()), "--workdir", str(workdir)]
        else:
            err.print(
                f"{target}: neither a run folder nor a PipelineRun or IngestionSource file", markup=False
            )
            raise typer.Exit(2)
    written = _write_report(args, output_file.resolve() if output_file else None)
    if written is None:
        raise typer.Exit(2)
    out.print(written, markup=False, highlight=False)


def _kind_of(path: Path) -> tuple[str, str, str]:
    """(kind, name, namespace) of the first document of a YAML file; ("", "", "") if it has none."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        err.print(f"{path}: cannot read: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for doc in docs:
        meta = doc.get("metadata") or {}
        return str(doc.get("kind", "")), str(meta.get("name", "")), str(meta.get("namespace") or "default")
    return "", "", ""


@app.command("replay-rejects")
def replay_rejects(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="The run whose rejected rows were fixed")],
    workdir: Annotated[Path, typer.Option(help="The workdir the run used")] = Path("work"),
    namespace: Annotated[str, typer.Option(help="The run's namespace")] = "default",
    output: Annotated[
        OutputFormat, typer.Option(help="text for people, json for programs")
    ] = OutputFormat.text,
) -> None:
    """Load the corrected rows of a run's rejects export back through validation, appended to its raw table.

    The export is runs/<namespace>/<RUN>/validate/rejects-export/*.csv: each source file's header and its
    rejected rows as read; the reasons are in rejects-reasons.csv beside it. Fix the rows, then replay."""
    from controller.local import RUN_DOCUMENT

    workdir = workdir.resolve()
    run_dir = workdir / "runs" / namespace / run_name
    export = run_dir / "validate" / "rejects-export"
    try:
        doc = json.loads((run_dir / RUN_DOCUMENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        err.print(f"no run {namespace}/{run_name} in {workdir} (looked for {run_dir / RUN_DOCUMENT})")
        raise typer.Exit(2) from None
    files = sorted(export.glob("*.csv"))
    if not files:
        err.print(f"run {run_name} has no rejected rows to replay ({export} is empty)")
        raise typer.Exit(2)
    taken = {p.name for p in run_dir.parent.glob(f"{run_name}-replay-*")}
    replay = next(f"{run_name}-replay-{k}" for k in range(1, 10_000) if f"{run_name}-replay-{k}" not in taken)
    doc["metadata"] = {"name": replay[:63].rstrip("-"), "namespace": namespace}
    doc["spec"]["source"]["uri"] = str(export / "*.csv")
    doc["spec"]["source"]["encoding"] = "utf-8"
    doc["spec"]["load"]["writeMode"] = "append"
    spec_path = run_dir.parent / doc["metadata"]["name"] / "replay.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    import shutil

    frozen = spec_path.parent / "rejects-export"
    shutil.copytree(export, frozen, dirs_exist_ok=True)
    doc["spec"]["source"]["uri"] = str(frozen / "*.csv")
    spec_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    run(spec_path, workdir=workdir, output=output, resume=False, report=False)


def main() -> None:
    app()


@app.command()
def check(
    specs: Annotated[list[Path], typer.Argument(help="PipelineRun or IngestionSource YAML files")],
) -> None:
    """Check specs without running them: the CRD schema, every column name, every expression."""
    problems = 0
    for path in specs:
        try:
            found = check_file(path)
        except SpecError as exc:
            found = [(p, line, m) for p, line, m in exc.problems]
        for yaml_path, line, message in found:
            where = f"{path}:{line}" if line else str(path)
            field = f"{yaml_path}: " if yaml_path else ""
            out.print(f"{where}: {field}{message}", markup=False, highlight=False, soft_wrap=True)
        problems += len(found)
        if not found:
            out.print(f"{path}: ok", markup=False, highlight=False)
    if problems:
        err.print(f"{problems} problem(s) in {len(specs)} file(s)")
        raise typer.Exit(1)


@app.command()
def render(
    spec: Annotated[Path, typer.Argument(help="PipelineRun YAML file")],
    attempt: Annotated[int, typer.Option(help="The attempt number to render")] = 1,
) -> None:
    """Print the Kubernetes objects a run's stages would create, with the controller's settings.

    Stages that run on Dataflow (``runner: dataflow``) print the launch request the controller sends.
    """
    import os

    import yaml

    from controller.dataflow_stage import launch_document
    from controller.manifests import build_stage_job
    from controller.settings import settings_from_env
    from controller.stages import runs_on_dataflow, stages_of

    try:
        pipeline_run = load_checked(spec)
    except SpecError as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    body = {
        "apiVersion": "dataops.io/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {
            "name": pipeline_run.metadata.name,
            "namespace": pipeline_run.metadata.namespace,
            "generation": pipeline_run.metadata.generation,
            "uid": "<uid of the PipelineRun>",
        },
        "spec": pipeline_run.spec.model_dump(by_alias=True, exclude_defaults=True),
    }
    settings = settings_from_env(os.environ)
    docs = [
        launch_document(body, stage, attempt, "<run start time>", settings)
        if runs_on_dataflow(pipeline_run.spec, stage)
        else build_stage_job(body, stage, attempt, "<run start time>", settings)
        for stage in stages_of(pipeline_run.spec)
    ]
    sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False, width=120))


@app.command()
def controller(
    namespace: Annotated[list[str], typer.Option("--namespace", "-n", help="Watch this namespace")] = [],  # noqa: B006
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace")
    ] = False,
    standalone: Annotated[bool, typer.Option(help="No peering: for a single replica or a laptop")] = False,
    liveness: Annotated[str, typer.Option(help="kopf's liveness endpoint")] = "http://0.0.0.0:8080/healthz",
    metrics_port: Annotated[
        int, typer.Option(help="Port of the Prometheus /metrics endpoint (0: off)")
    ] = 9090,
    verbose: Annotated[
        bool, typer.Option(help="Also log every handler call and HTTP request (INFO)")
    ] = False,
) -> None:
    """Run the Kubernetes controller (kopf) for PipelineRuns and IngestionSources."""
    import kopf
    from prometheus_client import start_http_server

    import controller.handlers  # noqa: F401 - registers the handlers

    if not namespace and not all_namespaces:
        # The chart's watched namespaces arrive as DATAOPS_NAMESPACES (comma-separated).
        from controller.settings import SettingsError, settings_from_env

        try:
            namespace = list(settings_from_env(dict(os.environ)).namespaces)
        except SettingsError as exc:
            err.print(f"error: {exc}")
            raise typer.Exit(2) from None
    if not namespace and not all_namespaces:
        err.print("give --namespace NS (repeatable), --all-namespaces, or DATAOPS_NAMESPACES=ns1,ns2")
        raise typer.Exit(2)
    if metrics_port:
        start_http_server(metrics_port)
    kopf.configure(log_format=kopf.LogFormat.JSON if not sys.stderr.isatty() else kopf.LogFormat.PLAIN)
    if not verbose:
        # One line per handler call and per HTTP request costs more than the work at a few thousand runs
        # a minute; warnings and errors stay, and our own transitions are Events and INFO lines.
        import logging

        for noisy in ("kopf.objects", "httpx2", "httpx", "httpcore2", "aiohttp.access"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    kopf.run(
        clusterwide=all_namespaces, namespaces=namespace, standalone=standalone, liveness_endpoint=liveness
    )


def check_file(path: Path) -> list[tuple[str, int | None, str]]:
    """Every problem of one spec file (all documents), as (YAML path, line, message)."""
    from pydantic import ValidationError

    from controller.spec import IngestionSource, line_of, parse_documents, path_to_loc, unreadable
    from controller.spec_check import semantic_problems

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [("", None, unreadable(exc))]
    problems: list[tuple[str, int | None, str]] = []
    documents = parse_documents(text, str(path))
    if not documents:
        return [("", None, "the file holds no document (a PipelineRun or IngestionSource)")]
    for doc, index in documents:
        kind = doc.get("kind")
        if kind == "PipelineRun":
            from controller.spec import parse_pipelinerun

            try:
                run = parse_pipelinerun(doc, index, str(path))
            except SpecError as exc:
                problems += exc.problems
                continue
            problems += [(p, line_of(index, path_to_loc(p)), m) for p, m in semantic_problems(run.spec)]
        elif kind == "IngestionSource":
            try:
                source = IngestionSource.model_validate(doc)
            except ValidationError as exc:
                for e in exc.errors():
                    loc = tuple(e["loc"])
                    problems.append((".".join(map(str, loc)), line_of(index, loc), e["msg"]))
                continue
            template = source.spec.files.template if source.spec.files else None
            if template is not None:
                problems += [
                    (
                        f"spec.files.template{p.removeprefix('spec')}",
                        line_of(index, ("spec", "files", "template", *path_to_loc(p)[1:])),
                        m,
                    )
                    for p, m in semantic_problems(template)
                ]
        else:
            problems.append(
                (
                    "kind",
                    line_of(index, ("kind",)),
                    f"kind {kind!r} is not dataops.io's (PipelineRun, IngestionSource)",
                )
            )
    return problems
