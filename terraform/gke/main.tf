# Names, labels and the APIs everything else needs. Each concern has its own file:
#   network.tf  VPC, subnet for nodes (and Dataflow workers), Cloud NAT, Dataflow firewall
#   gke.tf      the cluster, Standard (autoscaling node pool) or Autopilot
#   kms.tf      customer-managed keys for buckets, datasets, topics, images and Kubernetes secrets
#   storage.tf  landing and staging buckets, their access-log bucket
#   bigquery.tf raw, tds, bds and consolidated datasets
#   pubsub.tf   validation success/error and operation-id topics, dead letters, subscriptions; the landing
#               bucket's object notifications and one subscription per watched prefix
#   monitoring.tf  email channels and the alert policies (the seed's email on a validation error)
#   registry.tf Artifact Registry for the controller, worker and flex-template images
#   iam.tf      service accounts, Workload Identity, least-privilege bindings
#   outputs.tf  what the Helm values need

locals {
  # dataops-dev, dataops-prod... Every resource name starts with this.
  name = "${var.name_prefix}-${var.environment}"

  labels = merge(var.labels, {
    "app"         = "dataops-operator"
    "environment" = var.environment
    "managed-by"  = "terraform"
  })

  workload_pool = "${var.project_id}.svc.id.goog"

  services = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "binaryauthorization.googleapis.com",
    "cloudkms.googleapis.com",
    "compute.googleapis.com",
    "container.googleapis.com",
    "dataflow.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "storage.googleapis.com",
  ])
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "enabled" {
  for_each = local.services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
