"""What file discovery finds, whatever the store: object versions, and the error of a prefix that
cannot be read. Shared by the local lister (:mod:`controller.ingestion`) and GCS (:mod:`controller.gcs`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class ObjectVersion:
    """One version of one object: a GCS object generation, or a local file's modification time (ns)."""

    generation: str
    uri: str

    def key(self) -> tuple[int, str]:
        return (int(self.generation), self.uri)


class ListingError(Exception):
    """The prefix (or its notifications) cannot be read; the message says why and what to do."""
