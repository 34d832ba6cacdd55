"""terraform/gke: every file parses, the security-relevant settings hold, checkov leaves nothing unexplained.

There is no terraform binary here (so no ``terraform validate``): the files are read with python-hcl2 and
checked by checkov (the graph of resources it builds from them) and hclfmt (the HCL parser and formatter
``terraform fmt`` is built on).
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2 import SerializationOptions

from tests.deploy.deploy_tools import ROOT, isolated_tool

pytestmark = pytest.mark.unit

TF_DIR = ROOT / "terraform" / "gke"
TF_FILES = sorted(TF_DIR.glob("*.tf"))
PLAIN = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)

# Every check checkov is told to skip, and where. A new skip is a security decision: add it here on purpose.
EXPECTED_SKIPS = {
    ("CKV_GCP_12", "google_container_cluster.autopilot"),
    ("CKV_GCP_61", "google_container_cluster.autopilot"),
    ("CKV_GCP_69", "google_container_cluster.autopilot"),
    ("CKV_GCP_49", "google_project_iam_member.dataflow_launchers"),
    ("CKV_GCP_62", "google_storage_bucket.access_logs"),
}
PROJECT_ROLES_ALLOWED = {
    "roles/bigquery.jobUser",
    "roles/container.defaultNodeServiceAccount",
    "roles/dataflow.developer",
    "roles/dataflow.worker",
}
PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")


def parse(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = hcl2.load(handle, serialization_options=PLAIN)
    return data


@cache
def stack() -> dict[str, dict[str, Any]]:
    """All files merged: {"resource": {"type.name": body}, "variable": {...}, ..., "terraform": {file: blocks}}."""
    merged: dict[str, dict[str, Any]] = {
        "resource": {},
        "data": {},
        "variable": {},
        "output": {},
        "locals": {},
        "terraform": {},
    }
    for path in TF_FILES:
        doc = parse(path)
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        merged[kind][f"{rtype}.{name}"] = body
        for kind in ("variable", "output"):
            for block in doc.get(kind, []):
                merged[kind].update(block)
        for block in doc.get("locals", []):
            merged["locals"].update(block)
        merged["terraform"][path.name] = doc.get("terraform", [])
    return merged


def resource(address: str) -> dict[str, Any]:
    body: dict[str, Any] = stack()["resource"][address]
    return body


def resources_of(rtype: str) -> dict[str, dict[str, Any]]:
    return {a: b for a, b in stack()["resource"].items() if a.startswith(f"{rtype}.")}


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block `name` (hcl2 gives blocks as lists)."""
    blocks = body.get(name)
    assert isinstance(blocks, list) and len(blocks) == 1, f"expected one {name} block, got {blocks!r}"
    inner: dict[str, Any] = blocks[0]
    return inner


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


CLUSTERS = ["google_container_cluster.standard", "google_container_cluster.autopilot"]


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: p.name)
def test_every_file_parses(path: Path) -> None:
    assert parse(path) is not None


def test_every_variable_has_a_type_and_a_description() -> None:
    for name, body in stack()["variable"].items():
        assert body.get("type"), f"variable {name} has no type"
        assert len(body.get("description", "")) > 20, f"variable {name} has no real description"


def test_every_non_boolean_variable_is_validated() -> None:
    for name, body in stack()["variable"].items():
        if body["type"] != "bool":
            assert body.get("validation"), f"variable {name} has no validation block"
            for rule in body["validation"]:
                assert rule["condition"] and rule["error_message"], f"variable {name}: empty validation"


def test_every_output_has_a_description() -> None:
    for name, body in stack()["output"].items():
        assert body.get("description"), f"output {name} has no description"


def test_outputs_give_what_the_helm_values_need() -> None:
    outputs = stack()["output"]
    for needed in (
        "controller_service_account_email",
        "worker_service_account_email",
        "landing_bucket",
        "staging_bucket",
        "dataset_ids",
        "topic_names",
        "image_repository",
        "helm_values",
    ):
        assert needed in outputs


def test_terraform_and_providers_versions_are_pinned() -> None:
    [settings] = stack()["terraform"]["versions.tf"]
    assert settings["required_version"].startswith(">= 1.")
    providers = block(settings, "required_providers")
    for name in ("google", "google-beta"):
        assert providers[name]["source"] == f"hashicorp/{name}"
        assert re.fullmatch(r"~> \d+\.\d+", providers[name]["version"]), providers[name]["version"]


def test_providers_are_declared_only_in_versions_tf() -> None:
    assert [name for name, blocks in stack()["terraform"].items() if blocks] == ["versions.tf"]


@pytest.mark.parametrize("address", CLUSTERS)
def test_cluster_nodes_are_private(address: str) -> None:
    private = block(resource(address), "private_cluster_config")
    assert private["enable_private_nodes"] is True
    assert private["master_ipv4_cidr_block"] == "${var.master_ipv4_cidr}"


@pytest.mark.parametrize("address", CLUSTERS)
def test_cluster_has_the_workload_identity_pool(address: str) -> None:
    assert block(resource(address), "workload_identity_config")["workload_pool"] == "${local.workload_pool}"
    assert stack()["locals"]["workload_pool"] == "${var.project_id}.svc.id.goog"


@pytest.mark.parametrize("address", CLUSTERS)
def test_cluster_follows_a_release_channel(address: str) -> None:
    assert block(resource(address), "release_channel")["channel"] == "${var.release_channel}"


@pytest.mark.parametrize("address", CLUSTERS)
def test_cluster_encrypts_secrets_and_issues_no_client_certificate(address: str) -> None:
    body = resource(address)
    assert block(body, "database_encryption")["state"] == "ENCRYPTED"
    certificate = block(block(body, "master_auth"), "client_certificate_config")
    assert certificate["issue_client_certificate"] is False


def test_cluster_mode_variable_selects_exactly_one_cluster() -> None:
    assert resource("google_container_cluster.standard")["count"] == "${local.standard ? 1 : 0}"
    assert resource("google_container_cluster.autopilot")["count"] == "${local.autopilot ? 1 : 0}"
    assert resource("google_container_cluster.autopilot")["enable_autopilot"] is True
    assert stack()["locals"]["standard"] == '${var.cluster_mode == "standard"}'
    assert stack()["locals"]["autopilot"] == '${var.cluster_mode == "autopilot"}'


def test_node_pool_autoscales_with_hardened_nodes() -> None:
    pool = resource("google_container_node_pool.workloads")
    autoscaling = block(pool, "autoscaling")
    assert autoscaling["min_node_count"] == "${var.node_min_count}"
    assert autoscaling["max_node_count"] == "${var.node_max_count}"
    management = block(pool, "management")
    assert management["auto_repair"] is True and management["auto_upgrade"] is True
    node = block(pool, "node_config")
    assert block(node, "workload_metadata_config")["mode"] == "GKE_METADATA"
    shielded = block(node, "shielded_instance_config")
    assert shielded["enable_secure_boot"] is True and shielded["enable_integrity_monitoring"] is True
    assert node["service_account"] == "${google_service_account.nodes.email}"
    assert node["image_type"] == "COS_CONTAINERD"


def test_standard_cluster_drops_the_default_pool_and_enforces_network_policy() -> None:
    cluster = resource("google_container_cluster.standard")
    assert cluster["remove_default_node_pool"] is True
    assert block(cluster, "network_policy")["enabled"] is True
    assert cluster["enable_legacy_abac"] is False


@pytest.mark.parametrize("address", sorted(resources_of("google_storage_bucket")))
def test_bucket_is_uniform_versioned_private_encrypted_with_lifecycle(address: str) -> None:
    bucket = resource(address)
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert block(bucket, "versioning")["enabled"] is True
    assert block(bucket, "encryption")["default_kms_key_name"] == "${google_kms_crypto_key.data.id}"
    assert bucket.get("lifecycle_rule"), f"{address} has no lifecycle rule"


def test_datasets_are_raw_tds_bds_consolidated_with_partition_expiry_and_cmek() -> None:
    assert set(stack()["locals"]["datasets"]) == {"raw", "tds", "bds", "consolidated"}
    dataset = resource("google_bigquery_dataset.this")
    assert "expiration_days * 86400000" in dataset["default_partition_expiration_ms"]
    encryption = block(dataset, "default_encryption_configuration")
    assert encryption["kms_key_name"] == "${google_kms_crypto_key.data.id}"
    assert stack()["variable"]["partition_expiration_days"]["default"]["raw"] > 0


def test_topics_are_validation_success_error_and_operation_ids() -> None:
    assert set(stack()["locals"]["topics"]) == {"validation-success", "validation-error", "operation-ids"}


def test_every_topic_has_a_dead_letter_topic_kept_by_a_subscription() -> None:
    for_each = "${local.topics}"
    assert resource("google_pubsub_topic.main")["for_each"] == for_each
    assert resource("google_pubsub_topic.dead_letter")["for_each"] == for_each
    assert resource("google_pubsub_subscription.dead_letter")["for_each"] == for_each
    kept = resource("google_pubsub_subscription.dead_letter")["topic"]
    assert kept == "${google_pubsub_topic.dead_letter[each.key].id}"


def test_every_subscription_of_a_topic_has_dead_letter_and_retry_policies() -> None:
    subscription = resource("google_pubsub_subscription.main")
    assert subscription["for_each"] == "${local.topics}"
    dead_letter = block(subscription, "dead_letter_policy")
    assert dead_letter["dead_letter_topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert dead_letter["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    retry = block(subscription, "retry_policy")
    assert retry["minimum_backoff"] and retry["maximum_backoff"]


def test_pubsub_service_agent_may_forward_dead_letters() -> None:
    publisher = resource("google_pubsub_topic_iam_member.dead_letter_publisher")
    forwarder = resource("google_pubsub_subscription_iam_member.dead_letter_forwarder")
    assert publisher["role"] == "roles/pubsub.publisher"
    assert forwarder["role"] == "roles/pubsub.subscriber"
    for grant in (publisher, forwarder):
        assert grant["member"] == "serviceAccount:${google_project_service_identity.pubsub.email}"


def test_error_topic_alert_emails_the_alert_addresses() -> None:
    policy = resource("google_monitoring_alert_policy.validation_error")
    threshold = block(block(policy, "conditions"), "condition_threshold")
    assert 'google_pubsub_topic.main["validation-error"].name' in str(threshold["filter"])
    assert "send_message_operation_count" in str(threshold["filter"])
    assert (
        policy["notification_channels"]
        == "${[for channel in google_monitoring_notification_channel.email : channel.id]}"
    )
    channel = resource("google_monitoring_notification_channel.email")
    assert channel["type"] == "email"
    assert channel["for_each"] == "${toset(var.alert_emails)}"


def test_artifact_registry_is_docker_with_immutable_tags_and_cmek() -> None:
    repository = resource("google_artifact_registry_repository.images")
    assert repository["format"] == "DOCKER"
    assert block(repository, "docker_config")["immutable_tags"] is True
    assert repository["kms_key_name"] == "${google_kms_crypto_key.data.id}"


def test_no_resource_grants_anything_to_the_public() -> None:
    for address, body in stack()["resource"].items():
        for text in strings(body):
            assert not any(member in text for member in PUBLIC_MEMBERS), f"{address} names a public member"


def test_no_grant_is_a_primitive_or_admin_role() -> None:
    for address, body in stack()["resource"].items():
        role = body.get("role", "")
        assert role not in {"roles/owner", "roles/editor", "roles/viewer"}, address
        assert not role.lower().endswith("admin"), f"{address} grants {role}"


def test_project_wide_roles_are_only_those_without_a_narrower_scope() -> None:
    project_roles = {entry["role"] for entry in stack()["locals"]["project_roles"].values()}
    project_roles.add(resource("google_project_iam_member.dataflow_launchers")["role"])
    assert project_roles <= PROJECT_ROLES_ALLOWED


def test_data_roles_are_granted_per_dataset_bucket_and_topic() -> None:
    assert resource("google_bigquery_dataset_iam_member.worker_editor")["role"] == "roles/bigquery.dataEditor"
    assert (
        resource("google_bigquery_dataset_iam_member.worker_editor")["for_each"]
        == "${google_bigquery_dataset.this}"
    )
    assert (
        resource("google_storage_bucket_iam_member.landing_readers")["role"] == "roles/storage.objectViewer"
    )
    assert (
        resource("google_pubsub_topic_iam_member.worker_publisher")["for_each"]
        == "${google_pubsub_topic.main}"
    )


def test_workload_identity_binds_the_kubernetes_service_accounts() -> None:
    controller = resource("google_service_account_iam_member.controller_workload_identity")
    worker = resource("google_service_account_iam_member.worker_workload_identity")
    assert controller["role"] == worker["role"] == "roles/iam.workloadIdentityUser"
    assert controller["member"] == (
        "serviceAccount:${local.workload_pool}[${var.operator_namespace}/${var.controller_ksa_name}]"
    )
    assert worker["member"] == "serviceAccount:${local.workload_pool}[${each.value}/${var.worker_ksa_name}]"


def test_kms_keys_rotate_and_are_protected_from_destroy() -> None:
    for address, key in resources_of("google_kms_crypto_key").items():
        assert key["rotation_period"] == "7776000s", address
        assert block(key, "lifecycle")["prevent_destroy"] is True, address


def test_tfvars_example_sets_every_required_variable_and_nothing_undeclared() -> None:
    example = parse(TF_DIR / "terraform.tfvars.example")
    variables = stack()["variable"]
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= set(example)
    assert set(example) <= set(variables)


def test_every_checkov_skip_in_the_code_gives_its_reason() -> None:
    skips = [
        line.strip() for path in TF_FILES for line in path.read_text().splitlines() if "checkov:skip" in line
    ]
    assert skips
    for skip in skips:
        assert re.fullmatch(r"#checkov:skip=CKV2?_GCP_\d+:.{40,}", skip), (
            f"a skip without a real reason: {skip}"
        )


def test_checkov_finds_no_failed_check_and_only_the_explained_skips() -> None:
    checkov = isolated_tool("checkov")
    proc = subprocess.run(
        [
            str(checkov),
            "--directory",
            str(TF_DIR),
            "--framework",
            "terraform",
            "--output",
            "json",
            "--skip-download",
            "--compact",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    report = json.loads(proc.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["parsing_errors"] == 0
    assert failed == []
    assert summary["passed"] > 100
    skipped = report["results"]["skipped_checks"]
    assert all(c["check_result"]["suppress_comment"] for c in skipped)
    assert {(c["check_id"], re.sub(r"\[.*\]$", "", c["resource"])) for c in skipped} == EXPECTED_SKIPS


def test_files_are_valid_hcl_in_canonical_format() -> None:
    hclfmt = isolated_tool("hclfmt")
    files = [str(p) for p in [*TF_FILES, TF_DIR / "terraform.tfvars.example"]]
    syntax = subprocess.run([str(hclfmt), "-check", *files], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr
    layout = subprocess.run(
        [str(hclfmt), "-require-no-change", *files], capture_output=True, text=True, check=False
    )
    assert layout.returncode == 0, f"run `hclfmt -w` (or terraform fmt) on terraform/gke: {layout.stderr}"
