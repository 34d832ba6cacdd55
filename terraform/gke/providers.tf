provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}

# Only for google_project_service_identity (service agents that must exist before CMEK grants).
provider "google-beta" {
  project        = var.project_id
  region         = var.region
  default_labels = local.labels
}
