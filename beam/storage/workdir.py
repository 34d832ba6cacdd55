"""A run's workdir that may be a bucket prefix (``--workdir gs://bucket/prefix`` in the cluster).

A stage works on local files. With a ``gs://`` workdir, the stage runs in a local scratch folder
(``$DATAOPS_SCRATCH``, else a fresh folder under the temp dir: the pod's ``/tmp`` emptyDir):
before it starts, the run's folder ``runs/<namespace>/<name>/`` is downloaded from the bucket (what
earlier stages wrote: validated rows, rejects, reports); when it ends, succeeded or not, the files it
created or changed there are uploaded back (not its working copies under ``tmp/``). The warehouse is not part of it: with a bucket workdir the
warehouse adapter decides where tables live (BigQuery in the cluster); the embedded DuckDB file stays
in the scratch folder.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from beam.storage import download_tree, is_gcs, upload_files

SCRATCH_ENV = "DATAOPS_SCRATCH"


def _snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    if not folder.is_dir():
        return {}
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()}


def _scratch_only(rel: Path) -> bool:
    """Working copies a stage keeps to itself (downloaded sources, decoded copies, partial writes)."""
    return "tmp" in rel.parts[:-1] or rel.name.endswith((".tmp", ".part"))


@dataclass
class StageWorkdir:
    """Where a stage works (``local``), and the bucket prefix mirrored there (``remote``, or None)."""

    local: Path
    remote: str | None = None
    _before: dict[Path, tuple[int, int]] = field(default_factory=dict)

    @classmethod
    def open(cls, workdir: str) -> StageWorkdir:
        if not is_gcs(workdir):
            return cls(Path(workdir.removeprefix("file://")).resolve())
        scratch = os.environ.get(SCRATCH_ENV)
        local = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="dataops-stage-"))
        local.mkdir(parents=True, exist_ok=True)
        return cls(local.resolve(), workdir.rstrip("/"))

    def run_path(self, namespace: str, name: str) -> str:
        return f"runs/{namespace}/{name}"

    def pull(self, namespace: str, name: str) -> None:
        """The run's folder from the bucket (nothing to do for a local workdir)."""
        if self.remote is None:
            return
        rel = self.run_path(namespace, name)
        download_tree(f"{self.remote}/{rel}", self.local / rel)
        self._before = _snapshot(self.local / rel)

    def push(self, namespace: str, name: str) -> list[str]:
        """The files of the run's folder created or changed since :meth:`pull`, to the bucket."""
        if self.remote is None:
            return []
        rel = self.run_path(namespace, name)
        folder = self.local / rel
        changed = [
            p
            for p, sig in _snapshot(folder).items()
            if self._before.get(p) != sig and not _scratch_only(p.relative_to(folder))
        ]
        return upload_files(folder, sorted(changed), f"{self.remote}/{rel}")

    def published(self, path: str) -> str:
        """A local path as the stage reports it: under the bucket prefix when the workdir is one."""
        if self.remote is None or not path.startswith(str(self.local) + os.sep):
            return path
        return f"{self.remote}/{Path(path).relative_to(self.local).as_posix()}"
