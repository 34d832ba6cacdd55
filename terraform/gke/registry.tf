# One Docker repository for the controller, worker and Dataflow flex-template images (images/README.md).
# Tags are immutable: publish each build under its version or commit, never overwrite one.

resource "google_artifact_registry_repository" "images" {
  repository_id          = local.name
  location               = var.region
  format                 = "DOCKER"
  description            = "dataops-operator images for ${var.environment}: controller, worker, dataflow-template."
  kms_key_name           = google_kms_crypto_key.data.id
  cleanup_policy_dry_run = false
  labels                 = local.labels

  docker_config {
    immutable_tags = true
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "${var.untagged_image_retention_days * 86400}s"
    }
  }

  cleanup_policies {
    id     = "keep-recent-versions"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.data_key_users]
}

locals {
  image_repository = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}
