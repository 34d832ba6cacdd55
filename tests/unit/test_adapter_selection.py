"""Which adapter a stage uses comes from the spec and the environment, in one place."""

from __future__ import annotations

from typing import Any

import pytest

from beam.adapters import adapters_for
from controller.spec import PipelineRunSpec

pytestmark = pytest.mark.unit


def spec(uri: str = "data/items.csv", notify: dict[str, str] | None = None) -> PipelineRunSpec:
    doc: dict[str, Any] = {
        "source": {"uri": uri, "columns": [{"name": "id"}]},
        "load": {"table": "raw.items"},
    }
    if notify is not None:
        doc["validate"] = {"notify": notify}
    return PipelineRunSpec.model_validate(doc)


def test_a_laptop_gets_the_embedded_defaults() -> None:
    chosen = adapters_for(spec(), "work", {})

    assert (chosen.object_store, chosen.workdir_store, chosen.bus) == ("local", "local", "embedded")
    assert (chosen.success_topic, chosen.error_topic, chosen.gcs_endpoint) == (None, None, None)


def test_the_cluster_environment_selects_gcs_and_pubsub() -> None:
    env = {
        "DATAOPS_BUS": "pubsub",
        "DATAOPS_TOPIC_VALIDATION_SUCCESS": "prod-validation-success",
        "DATAOPS_TOPIC_VALIDATION_ERROR": "prod-validation-error",
    }

    chosen = adapters_for(spec("gs://landing/in/a.csv#12"), "gs://staging/work", env)

    assert (chosen.object_store, chosen.workdir_store, chosen.bus) == ("gcs", "gcs", "pubsub")
    assert (chosen.success_topic, chosen.error_topic) == ("prod-validation-success", "prod-validation-error")


def test_topics_in_the_spec_win_over_the_environment() -> None:
    env = {"DATAOPS_TOPIC_VALIDATION_SUCCESS": "from-env", "DATAOPS_TOPIC_VALIDATION_ERROR": "errors-env"}

    chosen = adapters_for(spec(notify={"successTopic": "from-spec"}), "work", env)

    assert (chosen.success_topic, chosen.error_topic) == ("from-spec", "errors-env")


def test_a_gcs_emulator_is_named_in_the_description() -> None:
    chosen = adapters_for(spec("gs://b/a.csv"), "work", {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"})

    assert chosen.describe().startswith("source=gcs (http://127.0.0.1:4443) workdir=local bus=embedded")
