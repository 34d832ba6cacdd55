"""``dataops``: the command line for people. The only module that prints.

dataops run SPEC.yaml --workdir DIR [--output json]
"""

from __future__ import annotations

import json
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
                k: s[k]
                for k in (
                    "name",
                    "state",
                    "attempt",
                    "rowsIn",
                    "rowsOut",
                    "rowsRejected",
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
        seconds = f"{s['durationSeconds']:.1f}" if s["durationSeconds"] is not None else "-"
        table.add_row(
            s["name"], s["state"], f"{s['rowsIn']:,}", f"{s['rowsOut']:,}", f"{s['rowsRejected']:,}", seconds
        )
    out.print(table)
    for t in summary["tables"]:
        out.print(f"  table {t['table']}  ({t['stage']})")
    out.print(f"  warehouse {summary['warehouse']}")


@app.command()
def run(
    spec: Annotated[Path, typer.Argument(help="PipelineRun YAML file")],
    workdir: Annotated[Path, typer.Option(help="Folder for the warehouse and run files")] = Path("work"),
    output: Annotated[
        OutputFormat, typer.Option(help="text for people, json for programs")
    ] = OutputFormat.text,
    resume: Annotated[bool, typer.Option(help="Re-run a failed run from its failed stage")] = False,
) -> None:
    """Run a PipelineRun locally: validate, load, transform, aggregate, on the embedded defaults."""
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
    if output == OutputFormat.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_table(summary)
    if summary["phase"] != "Succeeded":
        err.print(f"[red]{summary['phase']}[/]: ", markup=True, end="")
        err.print(summary["message"], markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def main() -> None:
    app()
