"""The controller's reading of GCS object notifications and gs:// prefixes (pure parts of controller/gcs.py)."""

from __future__ import annotations

import pytest

from controller.gcs import Prefix, object_of
from controller.manifests import build_file_run
from controller.objects import ListingError

pytestmark = pytest.mark.unit

FINALIZE = {
    "eventType": "OBJECT_FINALIZE",
    "bucketId": "landing",
    "objectId": "in/a.csv",
    "objectGeneration": "17",
}


def test_a_finalize_notification_names_bucket_object_and_generation() -> None:
    assert object_of(FINALIZE, b"{}") == ("landing", "in/a.csv", "17")


def test_the_generation_is_taken_from_the_body_when_the_attribute_is_missing() -> None:
    attributes = {k: v for k, v in FINALIZE.items() if k != "objectGeneration"}

    assert object_of(attributes, b'{"generation": "18"}') == ("landing", "in/a.csv", "18")


@pytest.mark.parametrize("event", ["OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"])
def test_other_events_are_not_new_objects(event: str) -> None:
    assert object_of(dict(FINALIZE, eventType=event), b"{}") is None


@pytest.mark.parametrize(
    ("bucket", "name", "expected"),
    [
        ("landing", "in/a.csv", True),
        ("landing", "in/2026/a.csv", True),
        ("landing", "in/a.txt", False),
        ("landing", "in/.hidden.csv", False),
        ("landing", "out/a.csv", False),
        ("other", "in/a.csv", False),
        ("landing", "in/", False),
    ],
)
def test_an_object_belongs_to_a_prefix_by_bucket_name_and_pattern(
    bucket: str, name: str, expected: bool
) -> None:
    assert Prefix.parse("gs://landing/in/").matches(bucket, name, "*.csv") is expected


def test_a_prefix_without_bucket_is_refused() -> None:
    with pytest.raises(ListingError, match="expected gs://BUCKET/PREFIX"):
        Prefix.parse("gs:///in/")


def test_a_bucket_object_run_reads_the_generation_it_is_named_for() -> None:
    source = {
        "metadata": {"name": "drops", "uid": "u"},
        "spec": {"files": {"template": {"load": {"table": "r.t"}}}},
    }

    run = build_file_run(source, "gs://landing/in/a.csv", "17")
    again = build_file_run(source, "gs://landing/in/a.csv", "17")
    newer = build_file_run(source, "gs://landing/in/a.csv", "18")

    assert run["spec"]["source"]["uri"] == "gs://landing/in/a.csv#17"
    assert run["metadata"]["name"] == again["metadata"]["name"] != newer["metadata"]["name"]


def test_notifications_on_a_local_folder_are_a_spec_error() -> None:
    from controller.ingestion import parse_source_spec

    body = {
        "spec": {
            "files": {
                "prefix": "/data/drop",
                "notifications": {"subscription": "drops"},
                "template": {"source": {"columns": [{"name": "id"}]}, "load": {"table": "raw.items"}},
            }
        }
    }

    assert "notifications need a gs:// prefix" in str(parse_source_spec(body))
