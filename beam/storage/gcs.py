"""The GCS adapter (``google-cloud-storage``): the only module of the data plane that talks to GCS.

With ``STORAGE_EMULATOR_HOST`` set the client talks to that server (fake-gcs-server in tests) without
credentials; otherwise it uses Application Default Credentials (Workload Identity in the cluster).
Rate limits (429) and server errors (5xx) are retried with exponential backoff by the client's own
retry policy, uploads included (our uploads overwrite whole artifacts, so repeating one is harmless).
Every other failure becomes a :class:`~beam.storage.StorageError` naming the URI, and for a refused
permission the role that is missing and the bucket it is missing on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from beam.storage import GcsUri, StorageError

READ_ROLE = "roles/storage.objectViewer"
WRITE_ROLE = "roles/storage.objectCreator"
REPLACE_NOTE = " (roles/storage.objectUser to replace objects, as a stage run again does)"
RETRY = DEFAULT_RETRY.with_timeout(300.0)
"""429, 5xx and dropped connections: retried with exponential backoff for up to five minutes."""


def explain(exc: Exception, uri: str, role: str, action: str) -> StorageError:
    """One clear message for a failed call on ``uri``."""
    bucket = uri[len("gs://") :].split("/", 1)[0]
    if isinstance(exc, gexc.NotFound):
        text = str(getattr(exc, "message", "") or exc)
        if "bucket" in text.lower():
            return StorageError(f"{uri}: bucket {bucket!r} does not exist")
        return StorageError(f"{uri}: no such object (or bucket {bucket!r} does not exist)")
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        note = REPLACE_NOTE if role == WRITE_ROLE else ""
        return StorageError(
            f"{uri}: permission denied to {action}: grant {role} on bucket {bucket!r}{note} to the"
            " service account the stage runs as (Workload Identity)"
        )
    if isinstance(exc, gexc.TooManyRequests):
        return StorageError(f"{uri}: rate limit or quota exceeded, still after retries with backoff: {exc}")
    if isinstance(exc, gexc.RetryError):
        return StorageError(f"{uri}: gave up after retries with backoff: {exc.cause or exc}")
    return StorageError(f"{uri}: cannot {action}: {exc}")


@contextmanager
def _calling(uri: str, role: str, action: str) -> Iterator[None]:
    try:
        yield
    except gexc.GoogleAPIError as exc:
        raise explain(exc, uri, role, action) from None


class GcsStore:
    """Read, list and write objects; one client per store."""

    def __init__(self, client: storage.Client | None = None) -> None:
        self.client = client or storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT") or None)

    def list(self, prefix: GcsUri, named: str | None = None) -> list[GcsUri]:
        """Objects whose name starts with ``prefix.name``, each with its current generation (``named``:
        the URI to name in errors, e.g. the glob the user wrote)."""
        uri = named or prefix.unpinned
        with _calling(uri, READ_ROLE, "list objects"):
            blobs = list(self.client.list_blobs(prefix.bucket, prefix=prefix.name or None, retry=RETRY))
        return [GcsUri(prefix.bucket, b.name, int(b.generation)) for b in blobs if not b.name.endswith("/")]

    def download(self, ref: GcsUri, dest: Path) -> int:
        """The object into ``dest`` (atomically), at its pinned generation or the current one; which
        generation was read."""
        uri = str(ref)
        bucket = self.client.bucket(ref.bucket)
        with _calling(uri, READ_ROLE, "read the object"):
            blob = bucket.get_blob(ref.name, generation=ref.generation, retry=RETRY)
        if blob is None:
            if ref.generation is not None:
                raise StorageError(
                    f"{uri}: generation {ref.generation} of this object no longer exists (overwritten or"
                    " deleted since it was discovered); its newer generation is run on its own"
                )
            raise StorageError(f"{uri}: no such object (or bucket {ref.bucket!r} does not exist)")
        generation = int(blob.generation)
        tmp = dest.with_name(dest.name + ".part")
        with _calling(uri, READ_ROLE, "read the object"):
            blob.download_to_filename(str(tmp), retry=RETRY)  # pinned: blob.generation is set
        tmp.replace(dest)
        return generation

    def upload(self, path: Path, ref: GcsUri) -> int:
        """``path`` as the object ``ref`` (replacing it); the generation written."""
        uri = ref.unpinned
        blob = self.client.bucket(ref.bucket).blob(ref.name)
        with _calling(uri, WRITE_ROLE, "write the object"):
            blob.upload_from_filename(str(path), retry=RETRY)
        return int(blob.generation or 0)
