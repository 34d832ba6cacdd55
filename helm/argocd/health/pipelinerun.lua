-- Argo CD health of a dataops.io/v1alpha1 PipelineRun (Lua 5.1, as Argo CD runs it; `obj` is the resource).
-- Shipped as resource.customizations.health.dataops.io_PipelineRun in ../argocd-cm.yaml (a test keeps the two
-- equal and runs this file against sample statuses).
--
--   status.phase                                            health
--   Succeeded                                               Healthy
--   Pending, Validating, Loading, Transforming, Aggregating  Progressing
--   Failed                                                  Degraded
--   Cancelled                                               Suspended
--   no status yet, or a status older than the spec          Progressing
--   a phase this script does not know                       from conditions Failed / Ready, else Unknown

local HEALTH_OF_PHASE = {
  Succeeded = "Healthy",
  Pending = "Progressing",
  Validating = "Progressing",
  Loading = "Progressing",
  Transforming = "Progressing",
  Aggregating = "Progressing",
  Failed = "Degraded",
  Cancelled = "Suspended",
}

local function find_condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == wanted then
      return condition
    end
  end
  return nil
end

local function summary(status, label)
  local text = label
  if status.currentStage ~= nil and status.currentStage ~= "" then
    text = text .. " (stage " .. status.currentStage .. ")"
  end
  if status.message ~= nil and status.message ~= "" then
    text = text .. ": " .. status.message
  end
  return text
end

local hs = {}
local status = obj.status

if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to pick the run up"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end

local health = HEALTH_OF_PHASE[status.phase]
if health ~= nil then
  hs.status = health
  hs.message = summary(status, status.phase)
  return hs
end

local failed = find_condition(status, "Failed")
local ready = find_condition(status, "Ready")
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = summary(status, failed.reason or "Failed")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = summary(status, ready.reason or "Ready")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(status.phase)
end
return hs
