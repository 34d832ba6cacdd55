# Three Google service accounts, each with only what it uses, granted on the narrowest resource that exists:
#
#   controller  the kopf operator. Watches landing/ prefixes, launches/polls/cancels Dataflow flex templates that
#               run as the worker. Bound to the chart's ServiceAccount through Workload Identity.
#   worker      every stage pod (validate, load, Beam launcher) and the Dataflow workers. Reads input, writes the
#               four datasets, publishes validation results and operation ids. Bound, through Workload Identity,
#               to worker_ksa_name in each pipeline namespace.
#   nodes       GKE nodes: logs, metrics and image pulls only (never the Compute Engine default account).
#
# Project-level grants are only the roles that have no narrower scope (BigQuery jobs and Dataflow jobs belong to
# the project). No grant here names allUsers or allAuthenticatedUsers; none is Owner, Editor or an *Admin role.

resource "google_service_account" "controller" {
  account_id   = "${local.name}-controller"
  display_name = "dataops-operator controller (${var.environment})"
  description  = "Kubernetes ${var.operator_namespace}/${var.controller_ksa_name}: watches input prefixes, launches Dataflow jobs."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "worker" {
  account_id   = "${local.name}-worker"
  display_name = "dataops-operator worker (${var.environment})"
  description  = "Stage pods (${var.worker_ksa_name}) and Dataflow workers: read input, write datasets, publish results."

  depends_on = [google_project_service.enabled]
}

resource "google_service_account" "nodes" {
  account_id   = "${local.name}-nodes"
  display_name = "dataops-operator GKE nodes (${var.environment})"
  description  = "GKE node identity: logging, monitoring, image pulls."

  depends_on = [google_project_service.enabled]
}

locals {
  controller = "serviceAccount:${google_service_account.controller.email}"
  worker     = "serviceAccount:${google_service_account.worker.email}"
  nodes      = "serviceAccount:${google_service_account.nodes.email}"
}

# --- Workload Identity: Kubernetes ServiceAccounts act as the Google ones (the pool exists once the cluster does).

resource "google_service_account_iam_member" "controller_workload_identity" {
  service_account_id = google_service_account.controller.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_pool}[${var.operator_namespace}/${var.controller_ksa_name}]"

  depends_on = [google_container_cluster.standard, google_container_cluster.autopilot]
}

resource "google_service_account_iam_member" "worker_workload_identity" {
  for_each = toset(var.pipeline_namespaces)

  service_account_id = google_service_account.worker.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${local.workload_pool}[${each.value}/${var.worker_ksa_name}]"

  depends_on = [google_container_cluster.standard, google_container_cluster.autopilot]
}

# Dataflow jobs run as the worker: whoever launches one must be allowed to act as it. The controller launches
# flex templates; the worker's Beam launcher Job submits DataflowRunner pipelines as itself.
resource "google_service_account_iam_member" "launch_as_worker" {
  for_each = {
    controller = local.controller
    worker     = local.worker
  }

  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = each.value
}

# --- Project scope: only roles whose resources are project-wide.

locals {
  project_roles = {
    "worker-dataflow-worker"   = { member = local.worker, role = "roles/dataflow.worker" }
    "worker-bigquery-job-user" = { member = local.worker, role = "roles/bigquery.jobUser" }
    "nodes-default-node-sa"    = { member = local.nodes, role = "roles/container.defaultNodeServiceAccount" }
  }
}

resource "google_project_iam_member" "project_scoped" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value.role
  member  = each.value.member
}

# Launching a Dataflow job needs roles/dataflow.developer, which exists at project scope only. It is listed by
# checkov among roles that can impersonate: a job runs as a service account its launcher may act as, and the
# launchers may act as the worker only (google_service_account_iam_member.launch_as_worker), never as the
# Compute Engine default account or any other.
resource "google_project_iam_member" "dataflow_launchers" {
  #checkov:skip=CKV_GCP_49:Dataflow jobs can only be launched with roles/dataflow.developer (project scope only); impersonation is bounded by actAs granted on the worker service account alone.
  for_each = {
    controller = local.controller # flex template launches, polls and cancels
    worker     = local.worker     # the Beam launcher Job submits DataflowRunner pipelines; dataflow consolidation cycles launch theirs
  }

  project = var.project_id
  role    = "roles/dataflow.developer"
  member  = each.value
}

# --- Buckets.

resource "google_storage_bucket_iam_member" "landing_readers" {
  for_each = {
    controller = local.controller # lists prefixes to find new files
    worker     = local.worker     # reads the files it validates and loads
  }

  bucket = google_storage_bucket.landing.name
  role   = "roles/storage.objectViewer"
  member = each.value
}

resource "google_storage_bucket_iam_member" "staging_worker" {
  bucket = google_storage_bucket.staging.name
  role   = "roles/storage.objectUser" # read, write, delete objects; no bucket or IAM changes
  member = local.worker
}

resource "google_storage_bucket_iam_member" "staging_controller" {
  bucket = google_storage_bucket.staging.name
  role   = "roles/storage.objectViewer" # reads flex template specs under templates/ when launching
  member = local.controller
}

# --- BigQuery: the worker edits tables of the four datasets, and nothing else.

resource "google_bigquery_dataset_iam_member" "worker_editor" {
  for_each = google_bigquery_dataset.this

  dataset_id = each.value.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.worker
}

# --- Pub/Sub: the worker publishes results and operation ids, and pulls the ids back.

resource "google_pubsub_topic_iam_member" "worker_publisher" {
  for_each = google_pubsub_topic.main

  topic  = each.value.name
  role   = "roles/pubsub.publisher"
  member = local.worker
}

resource "google_pubsub_subscription_iam_member" "controller_landing_objects" {
  for_each = google_pubsub_subscription.landing_objects

  subscription = each.value.name
  role         = "roles/pubsub.subscriber" # pulls and acknowledges the landing bucket's notifications
  member       = local.controller
}

resource "google_pubsub_subscription_iam_member" "worker_operation_ids" {
  subscription = google_pubsub_subscription.main["operation-ids"].name
  role         = "roles/pubsub.subscriber"
  member       = local.worker
}

# --- Artifact Registry: nodes and Dataflow workers pull; CI pushes.

resource "google_artifact_registry_repository_iam_member" "readers" {
  for_each = {
    nodes  = local.nodes
    worker = local.worker
  }

  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = each.value
}

resource "google_artifact_registry_repository_iam_member" "pushers" {
  for_each = toset(var.image_pusher_members)

  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = each.value
}
