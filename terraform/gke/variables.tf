# ---------------------------------------------------------------------------------------------------------------------
# Project and naming
# ---------------------------------------------------------------------------------------------------------------------

variable "project_id" {
  type        = string
  description = "ID of the GCP project that receives everything (an existing project with billing enabled)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID: 6 to 30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of the cluster, buckets, datasets, keys, registry and Dataflow jobs (one region keeps data and CMEK keys together), e.g. europe-west1."

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a GCP region such as europe-west1 or us-central1 (not a zone, not a multi-region)."
  }
}

variable "environment" {
  type        = string
  description = "Environment this stack serves; it goes into every name and label and selects values-<environment>.yaml of the chart."

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be one of dev, staging, prod."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name (<name_prefix>-<environment>-...). Short, because service account IDs are limited to 30 characters."
  default     = "dataops"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,8}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3 to 10 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  type        = map(string)
  description = "Extra labels put on every resource (cost center, team...). app, environment and managed-by are always set."
  default     = {}

  validation {
    condition = alltrue([
      for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))
    ])
    error_message = "Label keys must start with a lowercase letter; keys and values use lowercase letters, digits, _ and - (63 characters at most)."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to destroy the cluster (and keep bucket contents on destroy). Set false only for a throw-away dev stack."
  default     = true
}

# ---------------------------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------------------------

variable "nodes_cidr" {
  type        = string
  description = "Primary range of the subnet used by GKE nodes and Dataflow workers."
  default     = "10.10.0.0/20"

  validation {
    condition     = can(cidrhost(var.nodes_cidr, 0)) && try(tonumber(split("/", var.nodes_cidr)[1]) <= 24, false)
    error_message = "nodes_cidr must be an IPv4 CIDR of /24 or larger, e.g. 10.10.0.0/20."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range of the subnet for Pod IPs (VPC-native cluster)."
  default     = "10.20.0.0/14"

  validation {
    condition     = can(cidrhost(var.pods_cidr, 0)) && try(tonumber(split("/", var.pods_cidr)[1]) <= 21, false)
    error_message = "pods_cidr must be an IPv4 CIDR of /21 or larger, e.g. 10.20.0.0/14."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range of the subnet for Service IPs."
  default     = "10.24.0.0/20"

  validation {
    condition     = can(cidrhost(var.services_cidr, 0)) && try(tonumber(split("/", var.services_cidr)[1]) <= 24, false)
    error_message = "services_cidr must be an IPv4 CIDR of /24 or larger, e.g. 10.24.0.0/20."
  }
}

variable "master_ipv4_cidr" {
  type        = string
  description = "The /28 range of the private control plane endpoint (must not overlap the subnet ranges)."
  default     = "172.16.0.0/28"

  validation {
    condition     = can(cidrhost(var.master_ipv4_cidr, 0)) && endswith(var.master_ipv4_cidr, "/28")
    error_message = "master_ipv4_cidr must be an IPv4 /28, e.g. 172.16.0.0/28."
  }
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "Networks allowed to reach the Kubernetes API (your VPN or office ranges, Argo CD's egress). The subnet itself is always allowed when the endpoint is private."
  default     = []

  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr_block, 0)) && n.cidr_block != "0.0.0.0/0"])
    error_message = "Each master_authorized_networks entry needs a valid IPv4 CIDR, and 0.0.0.0/0 is refused (it would make the API public)."
  }
}

variable "enable_private_endpoint" {
  type        = bool
  description = "Serve the Kubernetes API on its private IP only (reach it through a bastion, VPN or Argo CD in the same VPC)."
  default     = false
}

# ---------------------------------------------------------------------------------------------------------------------
# Cluster
# ---------------------------------------------------------------------------------------------------------------------

variable "cluster_mode" {
  type        = string
  description = "standard: a regional cluster with one autoscaling node pool that this stack manages; autopilot: GKE manages the nodes."
  default     = "standard"

  validation {
    condition     = contains(["standard", "autopilot"], var.cluster_mode)
    error_message = "cluster_mode must be standard or autopilot."
  }
}

variable "release_channel" {
  type        = string
  description = "GKE release channel; the control plane and nodes upgrade automatically within it."
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "node_machine_type" {
  type        = string
  description = "Machine type of the node pool (cluster_mode = standard). Validation and load stages run in these nodes; Beam TDS/BDS run on Dataflow."
  default     = "e2-standard-4"

  validation {
    condition     = can(regex("^[a-z0-9]+-[a-z0-9]+-[0-9]+$", var.node_machine_type))
    error_message = "node_machine_type must be a machine type name such as e2-standard-4."
  }
}

variable "node_min_count" {
  type        = number
  description = "Minimum number of nodes of the pool in each zone of the region (cluster_mode = standard)."
  default     = 1

  validation {
    condition     = var.node_min_count >= 0 && var.node_min_count <= 100 && floor(var.node_min_count) == var.node_min_count
    error_message = "node_min_count must be a whole number from 0 to 100."
  }
}

variable "node_max_count" {
  type        = number
  description = "Maximum number of nodes of the pool in each zone of the region (cluster_mode = standard); must be at least node_min_count."
  default     = 3

  validation {
    condition     = var.node_max_count >= 1 && var.node_max_count <= 100 && floor(var.node_max_count) == var.node_max_count
    error_message = "node_max_count must be a whole number from 1 to 100."
  }
}

variable "node_disk_size_gb" {
  type        = number
  description = "Boot disk size of each node, in GB (cluster_mode = standard)."
  default     = 100

  validation {
    condition     = var.node_disk_size_gb >= 20 && var.node_disk_size_gb <= 2000
    error_message = "node_disk_size_gb must be between 20 and 2000."
  }
}

variable "rbac_security_group" {
  type        = string
  description = "Google Group for RBAC (gke-security-groups@<your-domain>) so RoleBindings can name Google Groups; null when the organisation has no Google Workspace / Cloud Identity groups."
  default     = null

  validation {
    condition     = var.rbac_security_group == null || can(regex("^gke-security-groups@[a-z0-9.-]+$", var.rbac_security_group))
    error_message = "rbac_security_group must be gke-security-groups@<your-domain> (GKE requires that exact group name), or null."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# Kubernetes identities (Workload Identity)
# ---------------------------------------------------------------------------------------------------------------------

variable "operator_namespace" {
  type        = string
  description = "Namespace the Helm chart installs the controller into."
  default     = "dataops-system"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.operator_namespace))
    error_message = "operator_namespace must be a DNS-1123 label."
  }
}

variable "controller_ksa_name" {
  type        = string
  description = "Kubernetes ServiceAccount of the controller (the chart's serviceAccount.name); bound to the controller's Google service account."
  default     = "dataops-operator"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.controller_ksa_name))
    error_message = "controller_ksa_name must be a DNS-1123 label."
  }
}

variable "pipeline_namespaces" {
  type        = list(string)
  description = "Namespaces where PipelineRuns and IngestionSources live; their stage pods run there as worker_ksa_name, bound to the worker's Google service account."
  default     = ["dataops"]

  validation {
    condition     = length(var.pipeline_namespaces) > 0 && alltrue([for ns in var.pipeline_namespaces : can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", ns))])
    error_message = "pipeline_namespaces must list at least one namespace, each a DNS-1123 label."
  }
}

variable "worker_ksa_name" {
  type        = string
  description = "Kubernetes ServiceAccount that stage pods (validate, load, Beam launcher) run as, in each of pipeline_namespaces."
  default     = "dataops-worker"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.worker_ksa_name))
    error_message = "worker_ksa_name must be a DNS-1123 label."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------------------------------

variable "landing_nearline_after_days" {
  type        = number
  description = "Days after which an input file in the landing bucket moves to the NEARLINE storage class."
  default     = 30

  validation {
    condition     = var.landing_nearline_after_days >= 1 && var.landing_nearline_after_days <= 3650
    error_message = "landing_nearline_after_days must be between 1 and 3650."
  }
}

variable "landing_retention_days" {
  type        = number
  description = "Days an input file is kept in the landing bucket before deletion (re-running a PipelineRun needs its file)."
  default     = 365

  validation {
    condition     = var.landing_retention_days >= 30 && var.landing_retention_days <= 3650
    error_message = "landing_retention_days must be between 30 and 3650."
  }
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days an overwritten or deleted object version is kept (buckets are versioned) before it is deleted for good."
  default     = 30

  validation {
    condition     = var.noncurrent_version_retention_days >= 1 && var.noncurrent_version_retention_days <= 365
    error_message = "noncurrent_version_retention_days must be between 1 and 365."
  }
}

variable "staging_retention_days" {
  type        = number
  description = "Days Dataflow staging and temp files (prefixes staging/ and tmp/) are kept; flex template specs under templates/ are kept."
  default     = 7

  validation {
    condition     = var.staging_retention_days >= 1 && var.staging_retention_days <= 90
    error_message = "staging_retention_days must be between 1 and 90."
  }
}

variable "access_log_retention_days" {
  type        = number
  description = "Days the bucket access logs are kept."
  default     = 90

  validation {
    condition     = var.access_log_retention_days >= 7 && var.access_log_retention_days <= 3650
    error_message = "access_log_retention_days must be between 7 and 3650."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# BigQuery
# ---------------------------------------------------------------------------------------------------------------------

variable "bigquery_dataset_prefix" {
  type        = string
  description = "Datasets are <prefix>_raw, <prefix>_tds, <prefix>_bds and <prefix>_consolidated; the PipelineRun tables name them (e.g. inventory_raw.resources)."
  default     = "inventory"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,900}$", var.bigquery_dataset_prefix))
    error_message = "bigquery_dataset_prefix must start with a lowercase letter and use lowercase letters, digits and underscores."
  }
}

variable "partition_expiration_days" {
  type = object({
    raw          = number
    tds          = number
    bds          = number
    consolidated = number
  })
  description = "Default partition expiration of the tables of each dataset, in days; 0 keeps partitions forever (the consolidated history, for one)."
  default = {
    raw          = 30
    tds          = 400
    bds          = 730
    consolidated = 0
  }

  validation {
    condition = alltrue([
      for days in values(var.partition_expiration_days) : days >= 0 && days <= 36500 && floor(days) == days
    ])
    error_message = "Each partition_expiration_days value must be a whole number of days from 0 (never) to 36500."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# Pub/Sub
# ---------------------------------------------------------------------------------------------------------------------

variable "max_delivery_attempts" {
  type        = number
  description = "Deliveries of a message before Pub/Sub moves it to the subscription's dead-letter topic."
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub limits)."
  }
}

variable "retry_minimum_backoff_seconds" {
  type        = number
  description = "Shortest wait before Pub/Sub redelivers a message that was nacked or not acked in time."
  default     = 10

  validation {
    condition     = var.retry_minimum_backoff_seconds >= 0 && var.retry_minimum_backoff_seconds <= 600
    error_message = "retry_minimum_backoff_seconds must be between 0 and 600."
  }
}

variable "retry_maximum_backoff_seconds" {
  type        = number
  description = "Longest wait before a redelivery (exponential backoff up to this)."
  default     = 600

  validation {
    condition     = var.retry_maximum_backoff_seconds >= 0 && var.retry_maximum_backoff_seconds <= 600
    error_message = "retry_maximum_backoff_seconds must be between 0 and 600."
  }
}

variable "message_retention_days" {
  type        = number
  description = "Days an unacknowledged message stays in a subscription (dead-letter subscriptions keep theirs 7 days)."
  default     = 7

  validation {
    condition     = var.message_retention_days >= 1 && var.message_retention_days <= 7
    error_message = "message_retention_days must be between 1 and 7 (Pub/Sub subscription limit)."
  }
}

variable "landing_notification_subscriptions" {
  type        = map(string)
  description = "One subscription to the landing bucket's object notifications per IngestionSource: name suffix => object-name prefix it watches (spec.files.notifications.subscription is <name_prefix>-<environment>-landing-<suffix>)."
  default     = { inventory = "inventory/" }

  validation {
    condition     = alltrue([for suffix, prefix in var.landing_notification_subscriptions : can(regex("^[a-z][a-z0-9-]{0,40}$", suffix)) && !can(regex("\"", prefix))])
    error_message = "landing_notification_subscriptions: suffixes are lowercase letters, digits and dashes (at most 41); prefixes hold no double quote."
  }
}

# ---------------------------------------------------------------------------------------------------------------------
# Alerting and images
# ---------------------------------------------------------------------------------------------------------------------

variable "alert_emails" {
  type        = list(string)
  description = "Addresses emailed when a file fails validation (a message on the validation-error topic) or a message is dead-lettered."

  validation {
    condition     = length(var.alert_emails) > 0 && alltrue([for e in var.alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alert_emails must list at least one email address."
  }
}

variable "image_pusher_members" {
  type        = list(string)
  description = "IAM members allowed to push images to the registry (your CI's service account: serviceAccount:ci@<project>.iam.gserviceaccount.com)."
  default     = []

  validation {
    condition = alltrue([
      for m in var.image_pusher_members : can(regex("^(serviceAccount|user|group):[^@\\s]+@[^@\\s]+$", m))
    ])
    error_message = "image_pusher_members entries must be serviceAccount:, user: or group: members; allUsers and allAuthenticatedUsers are refused."
  }
}

variable "untagged_image_retention_days" {
  type        = number
  description = "Days an untagged image stays in Artifact Registry before the cleanup policy deletes it."
  default     = 14

  validation {
    condition     = var.untagged_image_retention_days >= 1 && var.untagged_image_retention_days <= 365
    error_message = "untagged_image_retention_days must be between 1 and 365."
  }
}
