"""The object-store port: where sources are read from and run files are written to.

Two adapters, picked by the URI's scheme (never by code edits):

- local paths and ``file://`` URIs (the embedded default);
- ``gs://bucket/name`` through ``google-cloud-storage`` (:mod:`beam.storage.gcs`), which honours
  ``STORAGE_EMULATOR_HOST`` (fake-gcs-server in tests) and ``GOOGLE_CLOUD_PROJECT``.

A ``gs://`` URI may pin one generation of its object with gsutil's ``#generation`` suffix
(``gs://landing/in/items.csv#1718000000000000``): the IngestionSource writes the generation it
discovered this way, so a file overwritten while its run goes on is never mixed with the new one.
"""

from __future__ import annotations

import fnmatch
import glob
import shutil
from dataclasses import dataclass
from pathlib import Path

GLOB_CHARS = "*?["


class StorageError(Exception):
    """An object or prefix cannot be read or written; the message names the URI and what to do."""


@dataclass(frozen=True)
class GcsUri:
    bucket: str
    name: str  # the object's name, or a prefix (may be empty: the whole bucket)
    generation: int | None = None

    def __str__(self) -> str:
        base = f"gs://{self.bucket}/{self.name}"
        return base if self.generation is None else f"{base}#{self.generation}"

    @property
    def unpinned(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


def is_gcs(uri: str) -> bool:
    return uri.startswith("gs://")


def parse_gcs_uri(uri: str) -> GcsUri:
    """``gs://bucket/name[#generation]``; a clear error for anything else."""
    if not is_gcs(uri):
        raise StorageError(f"{uri}: not a gs:// URI")
    rest = uri[len("gs://") :]
    bucket, _, name = rest.partition("/")
    generation: int | None = None
    if "#" in name:
        name, _, gen = name.rpartition("#")
        if not gen.isdigit():
            raise StorageError(
                f"{uri}: the part after '#' must be an object generation (digits), not {gen!r}"
            )
        generation = int(gen)
    if not bucket:
        raise StorageError(f"{uri}: no bucket name (expected gs://BUCKET/NAME)")
    return GcsUri(bucket, name, generation)


def local_path(uri: str) -> Path:
    return Path(uri[len("file://") :] if uri.startswith("file://") else uri)


@dataclass(frozen=True)
class StagedFile:
    """A source file made readable locally: ``path`` to read, ``uri`` to name it in every message."""

    path: str
    uri: str
    generation: int | None = None


def expand_local(uri: str) -> list[str]:
    path = str(local_path(uri))
    if any(ch in path for ch in GLOB_CHARS):
        files = sorted(p for p in glob.glob(path, recursive=True) if Path(p).is_file())
        if not files:
            raise StorageError(f"{uri}: no file matches this pattern")
        return files
    if not Path(path).exists():
        raise StorageError(f"{uri}: no such file")
    if Path(path).is_dir():
        raise StorageError(f"{uri}: is a folder; name a file or a glob such as {path.rstrip('/')}/*.csv")
    return [path]


def stage_files(uri: str, tmpdir: Path) -> list[StagedFile]:
    """The files a source URI names (a path, file:// or gs:// URI, or a glob of any), readable locally.

    Local files are read in place; objects are downloaded into ``tmpdir``, each at one generation
    (the pinned one, else the one current when it was listed).
    """
    if not is_gcs(uri):
        return [StagedFile(p, p) for p in expand_local(uri)]
    from beam.storage.gcs import GcsStore

    store = GcsStore()
    ref = parse_gcs_uri(uri)
    if any(ch in ref.name for ch in GLOB_CHARS):
        if ref.generation is not None:
            raise StorageError(f"{uri}: a generation pins one object; it cannot follow a glob")
        cut = min(ref.name.index(ch) for ch in GLOB_CHARS if ch in ref.name)
        objects = [
            o
            for o in store.list(GcsUri(ref.bucket, ref.name[:cut]), named=uri)
            if fnmatch.fnmatchcase(o.name, ref.name)
        ]
        if not objects:
            raise StorageError(f"{uri}: no object matches this pattern")
    else:
        objects = [ref]
    tmpdir.mkdir(parents=True, exist_ok=True)
    staged = []
    for n, obj in enumerate(objects):
        dest = tmpdir / f"object-{n:04d}-{Path(obj.name).name}"
        generation = store.download(obj, dest)
        label = str(obj) if ref.generation is not None else obj.unpinned
        staged.append(StagedFile(str(dest), label, generation))
    return staged


def upload_tree(folder: Path, uri: str) -> list[str]:
    """Every file under ``folder`` to the same relative names under ``uri`` (a folder or gs:// prefix)."""
    return upload_files(folder, sorted(p for p in folder.rglob("*") if p.is_file()), uri)


def upload_files(folder: Path, files: list[Path], uri: str) -> list[str]:
    """``files`` (under ``folder``) to the same relative names under ``uri``; the URIs written."""
    if is_gcs(uri):
        from beam.storage.gcs import GcsStore

        store = GcsStore()
        ref = parse_gcs_uri(uri)
        base = ref.name.rstrip("/")
        out = []
        for path in files:
            rel = path.relative_to(folder).as_posix()
            target = GcsUri(ref.bucket, f"{base}/{rel}" if base else rel)
            store.upload(path, target)
            out.append(str(target))
        return out
    root = local_path(uri)
    for path in files:
        dest = root / path.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.resolve() != path.resolve():
            shutil.copy2(path, dest)
    return [str(root / p.relative_to(folder)) for p in files]


def download_tree(uri: str, folder: Path) -> list[Path]:
    """Every object under ``uri`` (a gs:// prefix or a folder) into ``folder``, by relative name."""
    if not is_gcs(uri):
        root = local_path(uri)
        if not root.is_dir():
            return []
        got = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            dest = folder / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.resolve() != path.resolve():
                shutil.copy2(path, dest)
            got.append(dest)
        return got
    from beam.storage.gcs import GcsStore

    store = GcsStore()
    ref = parse_gcs_uri(uri)
    base = ref.name.rstrip("/") + "/" if ref.name.strip("/") else ""
    got = []
    for obj in store.list(GcsUri(ref.bucket, base)):
        rel = obj.name[len(base) :]
        if not rel or rel.endswith("/"):
            continue
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        store.download(obj, dest)
        got.append(dest)
    return got


__all__ = [
    "GcsUri",
    "StagedFile",
    "StorageError",
    "download_tree",
    "expand_local",
    "is_gcs",
    "parse_gcs_uri",
    "stage_files",
    "upload_files",
    "upload_tree",
]
