{{/*
THE ONE LIST of what the controller may do: every rule of the chart's ClusterRoles and Roles comes from the four
blocks below, which read no values. templates/rbac.yaml picks the blocks for the mode (every namespace, or a
fixed set). tests/e2e/test_rbac_audit.py runs the controller under these rules and reads the API server's audit
log: every verb it used must be granted here, and every verb granted here must have been used.

Who needs what:
  workload rules      the controller's handlers (controller/handlers.py, operator.py, kube.py) and kopf on them:
                      PipelineRuns are watched, patched (kopf's finalizer and progress annotations), created and
                      deleted (an IngestionSource starts runs and prunes its history); their status is patched;
                      stage Jobs are created, watched and deleted; stage Pods are listed (why a stage failed);
                      an IngestionSource's CronJobs are created, read, patched and deleted; core Events are
                      posted (kopf.event).
  discovery rules     kopf lists and watches CRDs and namespaces (cluster-scoped, in every mode).
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
  verbs: ["patch"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "delete"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["create", "get", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- define "dataops-operator.rbac.discoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}

{{- define "dataops-operator.rbac.namespacedPeeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["list", "watch", "patch"]
{{- end }}

{{- define "dataops-operator.rbac.clusterPeeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["list", "watch", "patch"]
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
