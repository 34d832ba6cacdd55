"""Lineage through the Data Lineage API (``datalineage.googleapis.com/v1``): process, run, lineage event.

One process per (namespace, stage, output table): the transformation. One run per PipelineRun
generation: its execution. One lineage event per stage result: links from every input to every table
written. Names are deterministic and a resource that exists already (409) is kept, so a stage run again
records nothing twice.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from beam.catalog.rest import GoogleRest

DEFAULT_ENDPOINT = "https://datalineage.googleapis.com"
ROLE = "roles/datalineage.producer on the project"
_ID_INVALID = re.compile(r"[^a-zA-Z0-9_:.-]+")


def resource_id(*parts: str) -> str:
    """A lineage resource id: ``[a-zA-Z0-9_-:.]``, at most 200 characters."""
    text = _ID_INVALID.sub("-", "-".join(parts))
    if len(text) <= 200:
        return text
    return f"{text[:180]}-{uuid.uuid5(uuid.NAMESPACE_URL, text).hex[:16]}"


@dataclass(frozen=True)
class LineageEntry:
    """What a stage did: its inputs and outputs (fully qualified names), when, and for which run."""

    namespace: str
    run: str
    generation: int
    stage: str
    inputs: Sequence[str]
    outputs: Sequence[str]
    start_time: str
    end_time: str
    attributes: dict[str, Any]


class LineageWriter:
    def __init__(self, rest: GoogleRest, project: str, location: str) -> None:
        self.rest = rest
        self.parent = f"projects/{project}/locations/{location}"

    def record(self, entry: LineageEntry) -> str:
        """Write the process, the run and the event of one stage result; the event's name."""
        first_output = entry.outputs[0] if entry.outputs else "none"
        process = (
            f"{self.parent}/processes/{resource_id('dataops', entry.namespace, entry.stage, first_output)}"
        )
        self._create(
            f"v1/{self.parent}/processes",
            {
                "name": process,
                "displayName": f"dataops {entry.stage} -> {first_output}",
                "attributes": {"namespace": entry.namespace, "stage": entry.stage},
                "origin": {"sourceType": "CUSTOM", "name": "dataops-operator"},
            },
            f"create lineage process {process}",
        )
        run = f"{process}/runs/{resource_id(entry.run, f'g{entry.generation}')}"
        self._create(
            f"v1/{process}/runs",
            {
                "name": run,
                "displayName": f"{entry.namespace}/{entry.run} (generation {entry.generation})",
                "attributes": {**entry.attributes, "pipelineRun": entry.run, "generation": entry.generation},
                "startTime": entry.start_time,
                "endTime": entry.end_time,
                "state": "COMPLETED",
            },
            f"create lineage run {run}",
        )
        event = f"{run}/lineageEvents/{resource_id(entry.stage, 'event')}"
        links = [
            {"source": {"fullyQualifiedName": source}, "target": {"fullyQualifiedName": target}}
            for target in entry.outputs
            for source in entry.inputs
        ]
        self._create(
            f"v1/{run}/lineageEvents",
            {"name": event, "links": links[:100], "startTime": entry.start_time, "endTime": entry.end_time},
            f"record lineage event {event}",
        )
        return event

    def _create(self, path: str, body: dict[str, Any], what: str) -> None:
        request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, body["name"]))
        self.rest.call("POST", path, what, json=body, params={"requestId": request_id}, ok=(409,))
