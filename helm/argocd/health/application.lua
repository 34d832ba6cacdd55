-- Argo CD health of an argoproj.io/v1alpha1 Application, as its own health reports it (Lua 5.1).
-- Argo CD stopped assessing child Applications in 1.8; without this, the per-environment root Application
-- would start sync wave 1 (the PipelineRuns and IngestionSources) before wave 0 (the operator and its CRDs)
-- is Healthy. Shipped as resource.customizations.health.argoproj.io_Application in ../argocd-cm.yaml.

local hs = {}
hs.status = "Progressing"
hs.message = "Waiting for the Application to report its health"
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil then
  hs.status = obj.status.health.status
  hs.message = obj.status.health.message or ""
end
return hs
