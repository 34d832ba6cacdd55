# Versions pinned here, and only here. `terraform init` writes .terraform.lock.hcl next to this file:
# commit it, so every apply uses the same provider builds.
terraform {
  required_version = ">= 1.6.0, < 2.0.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.40"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.40"
    }
  }

  # State lives in a GCS bucket created before the first apply (see README.md):
  #   terraform init -backend-config="bucket=<project>-tfstate" -backend-config="prefix=dataops/<env>"
  backend "gcs" {}
}
