{{/*
THE ONE LIST of what the controller may do: every rule of the chart's ClusterRoles and Roles comes from the four
blocks below, which read no values. templates/rbac.yaml picks the blocks for the mode (every namespace, or a
fixed set); tests/deploy/test_helm_chart.py compares the rendered rules with the controller's own list.

Who needs what:
  workload rules      the controller's handlers (controller/handlers.py, operator.py, kube.py) and kopf on them:
                      PipelineRuns are watched, patched (kopf's finalizer and progress annotations), created and
                      deleted (an IngestionSource starts runs and prunes its history); their status is written;
                      stage Jobs are created, watched and deleted; stage Pods are read (why a stage failed);
                      an IngestionSource's CronJobs are created, patched and deleted; Events are posted.
  discovery rules     kopf finds its resources and the namespaces it serves (cluster-scoped, in every mode).
  peering rules       kopf's keep-alives in the peering object: a KopfPeering in each watched namespace, or the
                      ClusterKopfPeering when watching every namespace (kopf's peering.guess_selectors).

The user-facing rules (templates/rbac.yaml, rbac.userRoles) are for people, not the controller: view reads runs
and sources; edit writes PipelineRuns; admin writes IngestionSources too, whose spec.grants widen what the
namespace's runs may reach (controller/tenancy.py), so declaring one is a namespace admin's act.
*/}}

{{- define "dataops-operator.rbac.workloadRules" -}}
- apiGroups: ["dataops.io"]
  resources: ["pipelineruns"]
  verbs: ["get", "list", "watch", "patch", "create", "delete"]
- apiGroups: ["dataops.io"]
  resources: ["ingestionsources"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["dataops.io"]
  resources: ["pipelineruns/status", "ingestionsources/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["create", "get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- define "dataops-operator.rbac.discoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "dataops-operator.rbac.namespacedPeeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}

{{- define "dataops-operator.rbac.clusterPeeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}

{{- define "dataops-operator.rbac.userViewRules" -}}
- apiGroups: ["dataops.io"]
  resources: ["pipelineruns", "pipelineruns/status", "ingestionsources", "ingestionsources/status"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{- define "dataops-operator.rbac.userEditRules" -}}
- apiGroups: ["dataops.io"]
  resources: ["pipelineruns"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
{{- end }}

{{- define "dataops-operator.rbac.userAdminRules" -}}
- apiGroups: ["dataops.io"]
  resources: ["ingestionsources"]
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
{{- end }}
