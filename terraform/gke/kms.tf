# Customer-managed encryption keys. One key for data at rest (buckets, datasets, topics, images, node disks),
# one for Kubernetes Secrets in etcd. Keys rotate every 90 days and cannot be destroyed by Terraform: a destroyed
# key makes everything it encrypted unreadable.

resource "google_kms_key_ring" "this" {
  name     = local.name
  location = var.region

  depends_on = [google_project_service.enabled]
}

resource "google_kms_crypto_key" "data" {
  name            = "data"
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key" "gke_secrets" {
  name            = "gke-secrets"
  key_ring        = google_kms_key_ring.this.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days

  lifecycle {
    prevent_destroy = true
  }
}

# Service agents of the services that encrypt with the keys. Some only exist once asked for.
resource "google_project_service_identity" "pubsub" {
  provider = google-beta
  project  = var.project_id
  service  = "pubsub.googleapis.com"

  depends_on = [google_project_service.enabled]
}

resource "google_project_service_identity" "artifactregistry" {
  provider = google-beta
  project  = var.project_id
  service  = "artifactregistry.googleapis.com"

  depends_on = [google_project_service.enabled]
}

data "google_storage_project_service_account" "this" {
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

data "google_bigquery_default_service_account" "this" {
  project = var.project_id

  depends_on = [google_project_service.enabled]
}

locals {
  data_key_users = {
    storage          = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
    bigquery         = "serviceAccount:${data.google_bigquery_default_service_account.this.email}"
    pubsub           = "serviceAccount:${google_project_service_identity.pubsub.email}"
    artifactregistry = "serviceAccount:${google_project_service_identity.artifactregistry.email}"
    # Node boot disks (boot_disk_kms_key) are encrypted by the Compute Engine service agent.
    compute = "serviceAccount:service-${data.google_project.this.number}@compute-system.iam.gserviceaccount.com"
  }
}

resource "google_kms_crypto_key_iam_member" "data_key_users" {
  for_each = local.data_key_users

  crypto_key_id = google_kms_crypto_key.data.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}

resource "google_kms_crypto_key_iam_member" "gke_secrets_user" {
  crypto_key_id = google_kms_crypto_key.gke_secrets.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:service-${data.google_project.this.number}@container-engine-robot.iam.gserviceaccount.com"
}
