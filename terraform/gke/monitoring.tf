# The seed's email alert: a message on the validation-error topic emails var.alert_emails. A second policy
# fires when any subscription of this stack dead-letters a message (a consumer kept failing on it).

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  display_name = "${local.name} data alerts (${each.value})"
  type         = "email"
  user_labels  = local.labels

  labels = {
    email_address = each.value
  }

  depends_on = [google_project_service.enabled]
}

resource "google_monitoring_alert_policy" "validation_error" {
  display_name          = "${local.name}: an input file failed validation"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = [for channel in google_monitoring_notification_channel.email : channel.id]
  user_labels           = local.labels

  conditions {
    display_name = "message published to ${google_pubsub_topic.main["validation-error"].name}"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_topic\"",
        "resource.labels.topic_id = \"${google_pubsub_topic.main["validation-error"].name}\"",
        "metric.type = \"pubsub.googleapis.com/topic/send_message_operation_count\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "1800s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      A file failed validation in **${local.name}**. The message on `${google_pubsub_topic.main["validation-error"].name}`
      names the PipelineRun; its status holds the rows and the expectations that failed:

          kubectl get pipelineruns -A --field-selector status.phase=Failed
          kubectl describe pipelinerun <name> -n <namespace>
    EOT
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  display_name          = "${local.name}: messages dead-lettered"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = [for channel in google_monitoring_notification_channel.email : channel.id]
  user_labels           = local.labels

  conditions {
    display_name = "dead-lettered messages on ${local.name} subscriptions"

    condition_threshold {
      filter = join(" AND ", [
        "resource.type = \"pubsub_subscription\"",
        "resource.labels.subscription_id = starts_with(\"${local.name}-\")",
        "metric.type = \"pubsub.googleapis.com/subscription/dead_letter_message_count\"",
      ])
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"

      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }

      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }

  documentation {
    mime_type = "text/markdown"
    content   = <<-EOT
      A subscription of **${local.name}** gave up on a message after ${var.max_delivery_attempts} deliveries.
      It is kept 7 days on the matching `*-dead-letter` subscription; pull it to see why:

          gcloud pubsub subscriptions pull <subscription>-dead-letter --limit 10
    EOT
  }
}
