{{/*
Names, labels and images of the chart: every template takes them from here.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "dataops-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources: fullnameOverride, else the release name when it already holds the
chart name, else "<release>-<chart>". 63 characters at most (DNS label).
*/}}
{{- define "dataops-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "dataops-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the controller pods (never change them: a Deployment's selector is immutable). */}}
{{- define "dataops-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dataops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The labels of every resource (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/). */}}
{{- define "dataops-operator.labels" -}}
helm.sh/chart: {{ include "dataops-operator.chart" . }}
app.kubernetes.io/name: {{ include "dataops-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dataops-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels of the controller's own objects: the common labels and the component. */}}
{{- define "dataops-operator.controllerLabels" -}}
{{ include "dataops-operator.labels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{/* The controller's ServiceAccount name. */}}
{{- define "dataops-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dataops-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository@digest" when a digest is given, else "repository:tag" (tag defaults to the appVersion). */}}
{{- define "dataops-operator.imageRef" -}}
{{- $image := index . 0 }}
{{- $appVersion := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $appVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The controller image. */}}
{{- define "dataops-operator.image" -}}
{{- include "dataops-operator.imageRef" (list .Values.image .Chart.AppVersion) }}
{{- end }}

{{/* The worker image of stage pods (DATAOPS_WORKER_IMAGE). */}}
{{- define "dataops-operator.workerImage" -}}
{{- include "dataops-operator.imageRef" (list .Values.worker.image .Chart.AppVersion) }}
{{- end }}

{{/* "true" when the controller watches every namespace (watchNamespaces empty). */}}
{{- define "dataops-operator.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
The environment of stage pods (DATAOPS_STAGE_ENV) as JSON: the gcp and dataflow values under their variable
names (empty values left out), then worker.env, which wins.
*/}}
{{- define "dataops-operator.stageEnv" -}}
{{- $gcp := .Values.gcp }}
{{- $df := .Values.dataflow }}
{{- $env := dict }}
{{- $pairs := list
  (list "GOOGLE_CLOUD_PROJECT" $gcp.projectId)
  (list "DATAOPS_BUS" (ternary "pubsub" "" (ne $gcp.projectId "")))
  (list "DATAOPS_GCP_REGION" $gcp.region)
  (list "DATAOPS_LANDING_BUCKET" $gcp.landingBucket)
  (list "DATAOPS_STAGING_BUCKET" $gcp.stagingBucket)
  (list "DATAOPS_DATASET_RAW" $gcp.datasets.raw)
  (list "DATAOPS_DATASET_TDS" $gcp.datasets.tds)
  (list "DATAOPS_DATASET_BDS" $gcp.datasets.bds)
  (list "DATAOPS_DATASET_CONSOLIDATED" $gcp.datasets.consolidated)
  (list "DATAOPS_TOPIC_VALIDATION_SUCCESS" (index $gcp.topics "validation-success"))
  (list "DATAOPS_TOPIC_VALIDATION_ERROR" (index $gcp.topics "validation-error"))
  (list "DATAOPS_TOPIC_OPERATION_IDS" (index $gcp.topics "operation-ids"))
  (list "DATAOPS_DATAFLOW_TEMPLATE_IMAGE" $df.templateImage)
  (list "DATAOPS_DATAFLOW_TEMPLATE_SPEC_PREFIX" $df.templateSpecPrefix)
  (list "DATAOPS_DATAFLOW_STAGING_LOCATION" $df.stagingLocation)
  (list "DATAOPS_DATAFLOW_TEMP_LOCATION" $df.tempLocation)
  (list "DATAOPS_DATAFLOW_SERVICE_ACCOUNT" $df.serviceAccountEmail)
  (list "DATAOPS_DATAFLOW_SUBNETWORK" $df.subnetwork)
  (list "DATAOPS_WAREHOUSE" .Values.warehouse.type)
  (list "DATAOPS_BIGQUERY_PROJECT" .Values.warehouse.bigquery.project)
  (list "DATAOPS_BIGQUERY_LOCATION" .Values.warehouse.bigquery.location)
}}
{{- range $pairs }}
{{- if index . 1 }}
{{- $_ := set $env (index . 0) (index . 1) }}
{{- end }}
{{- end }}
{{- if or $df.templateImage $df.templateSpecPrefix $df.stagingLocation $df.tempLocation $df.serviceAccountEmail $df.subnetwork }}
{{- $_ := set $env "DATAOPS_DATAFLOW_USE_PUBLIC_IPS" (ternary "true" "false" $df.usePublicIps) }}
{{- end }}
{{- toJson (merge (deepCopy .Values.worker.env) $env) }}
{{- end }}

{{/*
One CRD document: the CRD as given, its labels merged with the chart's, crds.annotations added, and when
crds.keep, kept by Helm (helm.sh/resource-policy: keep) and by Argo CD (never pruned nor deleted with the
Application: argocd.argoproj.io/sync-options). Takes (list $ crd).
*/}}
{{- define "dataops-operator.crd" -}}
{{- $ := index . 0 }}
{{- $crd := index . 1 }}
{{- $labels := merge (default dict $crd.metadata.labels) (include "dataops-operator.labels" $ | fromYaml) }}
{{- $annotations := merge (default dict $crd.metadata.annotations) (deepCopy $.Values.crds.annotations) }}
{{- if $.Values.crds.keep }}
{{- $_ := set $annotations "helm.sh/resource-policy" "keep" }}
{{- $_ := set $annotations "argocd.argoproj.io/sync-options" "Prune=false,Delete=false" }}
{{- end }}
{{- $_ := set $crd.metadata "labels" $labels }}
{{- if $annotations }}
{{- $_ := set $crd.metadata "annotations" $annotations }}
{{- end }}
---
{{ toYaml $crd }}
{{- end }}


{{/* The consolidation flex template spec: dataflow.consolidationTemplateSpec, else <templateSpecPrefix>/consolidation.json. */}}
{{- define "dataops-operator.dataflowConsolidationTemplate" -}}
{{- if .Values.dataflow.consolidationTemplateSpec -}}
{{- .Values.dataflow.consolidationTemplateSpec -}}
{{- else if .Values.dataflow.templateSpecPrefix -}}
{{- printf "%s/consolidation.json" (trimSuffix "/" .Values.dataflow.templateSpecPrefix) -}}
{{- end -}}
{{- end }}

{{/* The stage flex template spec the controller launches: dataflow.templateSpec, else <templateSpecPrefix>/stage.json. */}}
{{- define "dataops-operator.dataflowTemplate" -}}
{{- if .Values.dataflow.templateSpec -}}
{{- .Values.dataflow.templateSpec -}}
{{- else if .Values.dataflow.templateSpecPrefix -}}
{{- printf "%s/stage.json" (trimSuffix "/" .Values.dataflow.templateSpecPrefix) -}}
{{- end -}}
{{- end }}
