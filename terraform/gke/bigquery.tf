# The four datasets of the pipelines: raw (load stage), tds (Beam TDS), bds (Beam BDS KPIs, read by Looker
# Studio) and consolidated (the incremental consolidation's target and its watermark). Encrypted with the data
# key; table partitions expire after var.partition_expiration_days (0 = never).

locals {
  datasets = {
    raw = {
      description     = "Raw rows of validated input files, loaded by the load stage of each PipelineRun."
      expiration_days = var.partition_expiration_days.raw
    }
    tds = {
      description     = "Transformed, deduplicated, standardized tables (Beam TDS), partitioned and clustered."
      expiration_days = var.partition_expiration_days.tds
    }
    bds = {
      description     = "KPI tables (Beam BDS), read by dashboards."
      expiration_days = var.partition_expiration_days.bds
    }
    consolidated = {
      description     = "Incrementally consolidated tables (MERGE) and their watermarks."
      expiration_days = var.partition_expiration_days.consolidated
    }
  }
}

resource "google_bigquery_dataset" "this" {
  for_each = local.datasets

  dataset_id                      = "${var.bigquery_dataset_prefix}_${each.key}"
  friendly_name                   = "${local.name} ${each.key}"
  description                     = each.value.description
  location                        = var.region
  default_partition_expiration_ms = each.value.expiration_days > 0 ? each.value.expiration_days * 86400000 : null
  delete_contents_on_destroy      = !var.deletion_protection
  labels                          = local.labels

  default_encryption_configuration {
    kms_key_name = google_kms_crypto_key.data.id
  }

  depends_on = [google_kms_crypto_key_iam_member.data_key_users]
}
