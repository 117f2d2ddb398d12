-- Argo CD health of an smm ControlPlane (smm.dev/v1alpha1), read from the kstatus conditions the
-- smm operator writes: Ready, Reconciling and Stalled, and status.observedGeneration.
-- Plain Lua 5.1, as Argo CD runs it.
local hs = {}

local function find_condition(conditions, kind)
  for _, condition in ipairs(conditions) do
    if condition.type == kind then
      return condition
    end
  end
  return nil
end

local function is_true(condition)
  return condition ~= nil and condition.status == "True"
end

local function message_of(condition, fallback)
  if condition ~= nil and condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the smm operator to report status"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the smm operator to reconcile generation " .. tostring(generation)
  return hs
end

local ready = find_condition(status.conditions, "Ready")
local reconciling = find_condition(status.conditions, "Reconciling")
local stalled = find_condition(status.conditions, "Stalled")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "Stalled")
  return hs
end
if ready ~= nil and ready.status == "False" and ready.reason == "ComponentFailed" then
  hs.status = "Degraded"
  hs.message = message_of(ready, "A component failed")
  return hs
end
if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "Reconciling")
  return hs
end
if is_true(ready) then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for the ControlPlane to become Ready")
return hs
