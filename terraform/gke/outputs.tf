# What the Helm values and the pipelines' specs need. `terraform output -json helm_values` gives them in one object.

output "project_id" {
  description = "The project everything was created in."
  value       = var.project_id
}

output "region" {
  description = "Region of the cluster, data and Dataflow jobs."
  value       = var.region
}

output "cluster_name" {
  description = "GKE cluster name."
  value       = local.cluster_name
}

output "cluster_mode" {
  description = "standard or autopilot."
  value       = var.cluster_mode
}

output "cluster_endpoint" {
  description = "IP of the Kubernetes API (private when enable_private_endpoint is true)."
  value       = local.cluster_endpoint
  sensitive   = true
}

output "get_credentials_command" {
  description = "Command that points kubectl at the cluster."
  value       = "gcloud container clusters get-credentials ${local.cluster_name} --region ${var.region} --project ${var.project_id}"
}

output "controller_service_account_email" {
  description = "Google service account of the controller: the chart's serviceAccount annotation iam.gke.io/gcp-service-account."
  value       = google_service_account.controller.email
}

output "worker_service_account_email" {
  description = "Google service account of stage pods and Dataflow workers: the worker ServiceAccount annotation and Dataflow's serviceAccountEmail."
  value       = google_service_account.worker.email
}

output "workload_identity_pool" {
  description = "Workload Identity pool of the cluster."
  value       = local.workload_pool
}

output "landing_bucket" {
  description = "Bucket for input files (IngestionSource prefixes, PipelineRun source.uri gs://...)."
  value       = google_storage_bucket.landing.name
}

output "staging_bucket" {
  description = "Bucket for Dataflow staging/temp files and flex template specs."
  value       = google_storage_bucket.staging.name
}

output "dataset_ids" {
  description = "BigQuery dataset IDs by role: raw, tds, bds, consolidated."
  value       = { for role, ds in google_bigquery_dataset.this : role => ds.dataset_id }
}

output "topic_names" {
  description = "Pub/Sub topic names by role: validation-success, validation-error, operation-ids."
  value       = { for role, topic in google_pubsub_topic.main : role => topic.name }
}

output "subscription_names" {
  description = "Pub/Sub subscription names by role (their dead-letter subscriptions end in -dead-letter)."
  value       = { for role, sub in google_pubsub_subscription.main : role => sub.name }
}

output "landing_notification_subscriptions" {
  description = "Subscriptions to the landing bucket's object notifications, by suffix: spec.files.notifications.subscription of the IngestionSource watching that prefix."
  value       = { for suffix, sub in google_pubsub_subscription.landing_objects : suffix => sub.name }
}

output "image_repository" {
  description = "Artifact Registry path the images are pushed to: <this>/controller, <this>/worker, <this>/dataflow-template."
  value       = local.image_repository
}

output "dataflow_subnetwork" {
  description = "Subnetwork Dataflow jobs run in (private IPs only: pass --no_use_public_ips)."
  value       = google_compute_subnetwork.nodes.self_link
}

output "helm_values" {
  description = "The GCP part of the chart's values for this environment, to merge with values-<environment>.yaml."
  value = {
    serviceAccount = {
      name = var.controller_ksa_name
      annotations = {
        "iam.gke.io/gcp-service-account" = google_service_account.controller.email
      }
    }
    image = {
      repository = "${local.image_repository}/controller"
    }
    worker = {
      workdir = "gs://${google_storage_bucket.staging.name}/runs"
      image = {
        repository = "${local.image_repository}/worker"
      }
      serviceAccount = {
        name = var.worker_ksa_name
        annotations = {
          "iam.gke.io/gcp-service-account" = google_service_account.worker.email
        }
      }
    }
    gcp = {
      projectId     = var.project_id
      region        = var.region
      landingBucket = google_storage_bucket.landing.name
      stagingBucket = google_storage_bucket.staging.name
      datasets      = { for role, ds in google_bigquery_dataset.this : role => ds.dataset_id }
      topics        = { for role, topic in google_pubsub_topic.main : role => topic.name }
    }
    dataflow = {
      templateImage       = "${local.image_repository}/dataflow-template"
      templateSpecPrefix  = "gs://${google_storage_bucket.staging.name}/templates"
      stagingLocation     = "gs://${google_storage_bucket.staging.name}/staging"
      tempLocation        = "gs://${google_storage_bucket.staging.name}/tmp"
      serviceAccountEmail = google_service_account.worker.email
      subnetwork          = google_compute_subnetwork.nodes.self_link
      usePublicIps        = false
    }
  }
}
