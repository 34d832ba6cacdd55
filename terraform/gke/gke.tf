# One regional, private, VPC-native cluster with Workload Identity, in one of two modes (var.cluster_mode):
#   standard   this stack owns one autoscaling node pool (hardened nodes, our own node service account);
#   autopilot  GKE owns the nodes; the same network, identity, encryption and release settings apply.
# Exactly one of google_container_cluster.standard / .autopilot exists; outputs read whichever does.

locals {
  standard  = var.cluster_mode == "standard"
  autopilot = var.cluster_mode == "autopilot"
}

resource "google_container_cluster" "standard" {
  count = local.standard ? 1 : 0

  name                = local.name
  location            = var.region
  network             = google_compute_network.this.id
  subnetwork          = google_compute_subnetwork.nodes.id
  deletion_protection = var.deletion_protection
  resource_labels     = local.labels

  # The default pool is replaced by google_container_node_pool.workloads below.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.enable_private_endpoint
    master_ipv4_cidr_block  = var.master_ipv4_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  network_policy {
    enabled  = true
    provider = "CALICO"
  }

  addons_config {
    network_policy_config {
      disabled = false
    }
    http_load_balancing {
      disabled = false
    }
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.gke_secrets.id
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  dynamic "authenticator_groups_config" {
    for_each = var.rbac_security_group == null ? [] : [var.rbac_security_group]
    content {
      security_group = authenticator_groups_config.value
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  enable_shielded_nodes       = true
  enable_intranode_visibility = true
  enable_legacy_abac          = false

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  # The default pool lives only while the cluster is created; these settings keep it hardened for that time.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    image_type      = "COS_CONTAINERD"
    metadata = {
      disable-legacy-endpoints = "true"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  maintenance_policy {
    recurring_window {
      start_time = "2024-01-06T02:00:00Z"
      end_time   = "2024-01-06T08:00:00Z"
      recurrence = "FREQ=WEEKLY;BYDAY=SA,SU"
    }
  }

  lifecycle {
    # The default pool's node_config is only used at creation.
    ignore_changes = [node_config]
  }

  depends_on = [
    google_project_service.enabled,
    google_kms_crypto_key_iam_member.gke_secrets_user,
    google_project_iam_member.project_scoped,
  ]
}

resource "google_container_node_pool" "workloads" {
  count = local.standard ? 1 : 0

  name     = "workloads"
  cluster  = google_container_cluster.standard[0].id
  location = var.region

  autoscaling {
    min_node_count  = var.node_min_count
    max_node_count  = var.node_max_count
    location_policy = "BALANCED"
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  upgrade_settings {
    max_surge       = 1
    max_unavailable = 0
  }

  node_config {
    machine_type      = var.node_machine_type
    disk_size_gb      = var.node_disk_size_gb
    disk_type         = "pd-balanced"
    image_type        = "COS_CONTAINERD"
    boot_disk_kms_key = google_kms_crypto_key.data.id
    service_account   = google_service_account.nodes.email
    oauth_scopes      = ["https://www.googleapis.com/auth/cloud-platform"]
    labels            = local.labels
    resource_labels   = local.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  lifecycle {
    precondition {
      condition     = var.node_min_count <= var.node_max_count
      error_message = "node_min_count (${var.node_min_count}) must not exceed node_max_count (${var.node_max_count})."
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.data_key_users]
}

resource "google_container_cluster" "autopilot" {
  #checkov:skip=CKV_GCP_12:Autopilot always runs GKE Dataplane V2, whose network policy enforcement is built in and cannot be configured.
  #checkov:skip=CKV_GCP_61:Autopilot turns intranode visibility on by default and does not take the Standard-only enable_intranode_visibility field; subnet flow logs are on (network.tf).
  #checkov:skip=CKV_GCP_69:Autopilot always runs the GKE metadata server (Workload Identity) on every node; there is no node_config to set.
  count = local.autopilot ? 1 : 0

  name                = local.name
  location            = var.region
  network             = google_compute_network.this.id
  subnetwork          = google_compute_subnetwork.nodes.id
  deletion_protection = var.deletion_protection
  resource_labels     = local.labels
  enable_autopilot    = true

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = local.workload_pool
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = var.enable_private_endpoint
    master_ipv4_cidr_block  = var.master_ipv4_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  database_encryption {
    state    = "ENCRYPTED"
    key_name = google_kms_crypto_key.gke_secrets.id
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  dynamic "authenticator_groups_config" {
    for_each = var.rbac_security_group == null ? [] : [var.rbac_security_group]
    content {
      security_group = authenticator_groups_config.value
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  cluster_autoscaling {
    auto_provisioning_defaults {
      service_account   = google_service_account.nodes.email
      oauth_scopes      = ["https://www.googleapis.com/auth/cloud-platform"]
      boot_disk_kms_key = google_kms_crypto_key.data.id
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  maintenance_policy {
    recurring_window {
      start_time = "2024-01-06T02:00:00Z"
      end_time   = "2024-01-06T08:00:00Z"
      recurrence = "FREQ=WEEKLY;BYDAY=SA,SU"
    }
  }

  depends_on = [
    google_project_service.enabled,
    google_kms_crypto_key_iam_member.gke_secrets_user,
    google_kms_crypto_key_iam_member.data_key_users,
    google_project_iam_member.project_scoped,
  ]
}

locals {
  cluster_name     = one(concat(google_container_cluster.standard[*].name, google_container_cluster.autopilot[*].name))
  cluster_endpoint = one(concat(google_container_cluster.standard[*].endpoint, google_container_cluster.autopilot[*].endpoint))
}
