-- Argo CD health of a dataops.io/v1alpha1 IngestionSource (Lua 5.1, as Argo CD runs it; `obj` is the resource).
-- Shipped as resource.customizations.health.dataops.io_IngestionSource in ../argocd-cm.yaml (a test keeps the
-- two equal and runs this file against sample statuses).
--
--   spec.suspend: true                                      Suspended (whatever the status says)
--   no status yet, or a status older than the spec          Progressing
--   condition Stalled=True                                  Degraded
--   condition Ready=True                                    Healthy
--   condition Ready=False, reason a step on the way          Progressing  (Pending, Reconciling, Progressing,
--                                                                         Creating, Initializing, Waiting)
--   condition Ready=False, any other reason (Failed, ...)   Degraded
--   condition Reconciling=True, or no Ready condition yet   Progressing
--   status.phase Failed (without conditions)                Degraded

local PROGRESS_REASONS = {
  Pending = true,
  Reconciling = true,
  Progressing = true,
  Creating = true,
  Initializing = true,
  Waiting = true,
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

local function explain(condition, fallback)
  local text = condition.reason or fallback
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end

local hs = {}

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: no new file is run and no consolidation cycle is scheduled"
  return hs
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to pick the source up"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the controller to observe generation " .. generation
  return hs
end

local stalled = find_condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = explain(stalled, "Stalled")
  return hs
end

local ready = find_condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(ready, "Ready")
  return hs
end
if ready ~= nil and ready.status == "False" then
  if PROGRESS_REASONS[ready.reason] then
    hs.status = "Progressing"
  else
    hs.status = "Degraded"
  end
  hs.message = explain(ready, "NotReady")
  return hs
end

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "Failed"
  return hs
end

hs.status = "Progressing"
hs.message = status.message or "Waiting for the Ready condition"
return hs
