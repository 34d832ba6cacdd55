{{/*
Contradictions between values that the schema cannot see, each failing with what to change (bitnami's
validateValues). Called by the Deployment, so every render checks them.
*/}}
{{- define "dataops-operator.validateValues" -}}
{{- $messages := list }}
{{- $messages = append $messages (include "dataops-operator.validateValues.peering" .) }}
{{- $messages = append $messages (include "dataops-operator.validateValues.podDisruptionBudget" .) }}
{{- $messages = append $messages (include "dataops-operator.validateValues.namespaces" .) }}
{{- $messages = append $messages (include "dataops-operator.validateValues.networkPolicy" .) }}
{{- $messages = append $messages (include "dataops-operator.validateValues.serviceMonitor" .) }}
{{- $messages = append $messages (include "dataops-operator.validateValues.ports" .) }}
{{- $messages = without $messages "" }}
{{- if $messages }}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail }}
{{- end }}
{{- end }}

{{- define "dataops-operator.validateValues.peering" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
dataops-operator: replicaCount={{ .Values.replicaCount }} with peering.enabled=false
    Unpeered replicas would all handle every PipelineRun at once. Set peering.enabled=true (kopf then keeps all
    but one replica paused), or replicaCount=1.
{{- end }}
{{- end }}

{{- define "dataops-operator.validateValues.podDisruptionBudget" -}}
{{- if and .Values.podDisruptionBudget.enabled (gt (int .Values.replicaCount) 1) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) }}
dataops-operator: podDisruptionBudget.minAvailable={{ .Values.podDisruptionBudget.minAvailable }} with replicaCount={{ .Values.replicaCount }}
    No controller pod could ever be evicted, so node drains and cluster upgrades would hang. Set
    podDisruptionBudget.minAvailable below replicaCount.
{{- end }}
{{- end }}

{{- define "dataops-operator.validateValues.namespaces" -}}
{{- if and .Values.createNamespaces (not .Values.watchNamespaces) }}
dataops-operator: createNamespaces=true with watchNamespaces empty
    createNamespaces creates the namespaces of watchNamespaces, and there are none (the controller watches every
    namespace). List them in watchNamespaces, or set createNamespaces=false.
{{- end }}
{{- end }}

{{- define "dataops-operator.validateValues.networkPolicy" -}}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServer.cidrs) }}
dataops-operator: networkPolicy.enabled=true with networkPolicy.apiServer.cidrs empty
    The controller could not reach the Kubernetes API. Set networkPolicy.apiServer.cidrs to the API server's
    addresses: `kubectl get endpoints kubernetes -n default -o jsonpath='{.subsets[*].addresses[*].ip}'`
    (GKE private cluster: the master CIDR, Terraform variable master_ipv4_cidr).
{{- end }}
{{- end }}

{{- define "dataops-operator.validateValues.serviceMonitor" -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
dataops-operator: metrics.serviceMonitor.enabled=true with metrics.service.enabled=false
    A ServiceMonitor scrapes through the metrics Service. Set metrics.service.enabled=true.
{{- end }}
{{- end }}

{{- define "dataops-operator.validateValues.ports" -}}
{{- if eq (int .Values.controller.healthPort) (int .Values.metrics.port) }}
dataops-operator: controller.healthPort and metrics.port are both {{ .Values.metrics.port }}
    kopf's /healthz and the Prometheus endpoint are two servers. Give them different ports.
{{- end }}
{{- end }}
