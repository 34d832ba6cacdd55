"""Table tags as Dataplex Catalog aspects (``dataplex.googleapis.com/v1``), Data Catalog's successor.

Every table a stage writes gets the ``dataops-table`` aspect on its BigQuery entry (entry group
``@bigquery``): which run, stage, spec generation and source wrote it, when, and how many rows. The
aspect type is created on first use if it is missing.
"""

from __future__ import annotations

from typing import Any

from beam.catalog.rest import GoogleRest

DEFAULT_ENDPOINT = "https://dataplex.googleapis.com"
DEFAULT_ASPECT_TYPE = "dataops-table"
ROLE = "roles/dataplex.catalogEditor on the project (or roles/dataplex.aspectTypeUser on the aspect type and roles/dataplex.entryOwner on @bigquery)"

# The aspect type's template: one record, its fields in this order.
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("run", "string", "The PipelineRun that wrote the table (namespace/name)."),
    ("stage", "string", "The stage that wrote it."),
    ("generation", "int", "The spec generation of the run."),
    ("source_uri", "string", "The file the run read."),
    ("inputs", "string", "The tables and files the table was made from, comma-separated."),
    ("rows", "int", "Rows written."),
    ("written_at", "string", "When the run started (ISO 8601 UTC)."),
)


def metadata_template() -> dict[str, Any]:
    return {
        "name": "dataops_table",
        "type": "record",
        "recordFields": [
            {"name": name, "type": kind, "index": i + 1, "annotations": {"description": text}}
            for i, (name, kind, text) in enumerate(FIELDS)
        ],
    }


def table_entry(project: str, location: str, table: str) -> str:
    """The Dataplex entry of a BigQuery ``dataset.table``."""
    dataset, name = table.split(".", 1)
    return (
        f"projects/{project}/locations/{location}/entryGroups/@bigquery/entries/"
        f"bigquery.googleapis.com/projects/{project}/datasets/{dataset}/tables/{name}"
    )


class AspectWriter:
    def __init__(self, rest: GoogleRest, project: str, location: str, aspect_type: str) -> None:
        self.rest = rest
        self.project = project
        self.location = location
        self.aspect_type = aspect_type
        self._type_checked = False

    @property
    def key(self) -> str:
        return f"{self.project}.{self.location}.{self.aspect_type}"

    def ensure_aspect_type(self) -> None:
        if self._type_checked:
            return
        parent = f"projects/{self.project}/locations/{self.location}"
        self.rest.call(
            "POST",
            f"v1/{parent}/aspectTypes",
            f"create aspect type {self.aspect_type}",
            json={
                "displayName": "dataops table",
                "description": "Which dataops-operator run wrote this table.",
                "metadataTemplate": metadata_template(),
            },
            params={"aspectTypeId": self.aspect_type},
            ok=(409,),
        )
        self._type_checked = True

    def tag(self, table: str, data: dict[str, Any]) -> str:
        """Set the aspect on a table's entry; the entry's name."""
        self.ensure_aspect_type()
        entry = table_entry(self.project, self.location, table)
        self.rest.call(
            "PATCH",
            f"v1/{entry}",
            f"set aspect {self.aspect_type} on {table}",
            json={"aspects": {self.key: {"data": data}}},
            params={"updateMask": "aspects", "aspectKeys": self.key},
        )
        return entry
