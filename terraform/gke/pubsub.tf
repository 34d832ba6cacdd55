# Topics (replacing the seed's csv-success-topic / csv-error-topic, plus the consolidation's operation ids).
# Every topic has a subscription with a retry policy and a dead-letter topic; every dead-letter topic has a
# subscription of its own, so a dead-lettered message is kept (a topic without subscriptions drops messages).

locals {
  topics = {
    "validation-success" = "A file passed validation (one message per PipelineRun that reaches the load stage)."
    "validation-error"   = "A file failed validation: the run, the file and the failed expectations. Alerts by email."
    "operation-ids"      = "IDs of the new operations a consolidation cycle selected, pulled back by its Beam job."
  }
  retention = "${var.message_retention_days * 86400}s"
}

resource "google_pubsub_topic" "main" {
  for_each = local.topics

  name         = "${local.name}-${each.key}"
  kms_key_name = google_kms_crypto_key.data.id
  labels       = local.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.data_key_users]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each = local.topics

  name         = "${local.name}-${each.key}-dead-letter"
  kms_key_name = google_kms_crypto_key.data.id
  labels       = local.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.data_key_users]
}

resource "google_pubsub_subscription" "main" {
  for_each = local.topics

  name                       = "${local.name}-${each.key}"
  topic                      = google_pubsub_topic.main[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = local.retention
  retain_acked_messages      = false
  labels                     = local.labels

  expiration_policy {
    ttl = "" # never expires, even when nobody pulls for 31 days
  }

  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  lifecycle {
    precondition {
      condition     = var.retry_minimum_backoff_seconds <= var.retry_maximum_backoff_seconds
      error_message = "retry_minimum_backoff_seconds must not exceed retry_maximum_backoff_seconds."
    }
  }
}

resource "google_pubsub_subscription" "dead_letter" {
  for_each = local.topics

  name                       = "${local.name}-${each.key}-dead-letter"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 600
  message_retention_duration = "604800s" # 7 days, the maximum: time to look at what failed
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter topic and
# acknowledge (subscribe to) the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.topics

  topic  = google_pubsub_topic.dead_letter[each.key].name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

resource "google_pubsub_subscription_iam_member" "dead_letter_forwarder" {
  for_each = local.topics

  subscription = google_pubsub_subscription.main[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_project_service_identity.pubsub.email}"
}

# The landing bucket's object notifications: every new object version (OBJECT_FINALIZE) is announced on one topic.
# Each IngestionSource pulls them from a subscription of its own (spec.files.notifications.subscription),
# filtered to its prefix, and still lists the prefix every pollSeconds for whatever a notification missed.

resource "google_pubsub_topic" "landing_objects" {
  name         = "${local.name}-landing-objects"
  kms_key_name = google_kms_crypto_key.data.id
  labels       = local.labels

  message_storage_policy {
    allowed_persistence_regions = [var.region]
  }

  depends_on = [google_kms_crypto_key_iam_member.data_key_users]
}

# GCS publishes the notifications as its service agent.
resource "google_pubsub_topic_iam_member" "landing_notifier" {
  topic  = google_pubsub_topic.landing_objects.name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
}

resource "google_storage_notification" "landing_objects" {
  bucket         = google_storage_bucket.landing.name
  topic          = google_pubsub_topic.landing_objects.id
  payload_format = "JSON_API_V1"
  event_types    = ["OBJECT_FINALIZE"]

  depends_on = [google_pubsub_topic_iam_member.landing_notifier]
}

resource "google_pubsub_subscription" "landing_objects" {
  for_each = var.landing_notification_subscriptions

  name                       = "${local.name}-landing-${each.key}"
  topic                      = google_pubsub_topic.landing_objects.id
  filter                     = "hasPrefix(attributes.objectId, \"${each.value}\")"
  ack_deadline_seconds       = 60
  message_retention_duration = local.retention
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }

  # A notification the controller gives back (no room for another run yet) comes back later; one it never
  # settles is not dead-lettered but expires: the listing of the prefix finds that object anyway.
  retry_policy {
    minimum_backoff = "${var.retry_minimum_backoff_seconds}s"
    maximum_backoff = "${var.retry_maximum_backoff_seconds}s"
  }
}
