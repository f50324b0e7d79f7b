-- Argo CD health of a baseten.co BasetenSecret or BasetenSecretSet, from its status:
--   Progressing while the operator has not yet observed the current generation (and while a
--   set's BasetenSecrets are not all Ready yet, reason Progressing), Suspended while
--   spec.suspend holds, Healthy when Baseten holds the current values (Ready True, reason
--   Synced or AlreadyExists, or Ready for a set), Degraded with the condition's message
--   otherwise.
local health = {}
local status = obj.status or {}
local generation = (obj.metadata or {}).generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  health.status = "Progressing"
  health.message = "Waiting for the operator to observe generation " .. generation
  return health
end
local ready = nil
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  health.status = "Progressing"
  health.message = "Waiting for the operator to report Ready"
  return health
end
local message = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.reason == "Suspended" then
  health.status = "Suspended"
elseif ready.reason == "Progressing" then
  health.status = "Progressing"
elseif ready.status == "True" and (ready.reason == "Synced" or ready.reason == "AlreadyExists" or ready.reason == "Ready") then
  health.status = "Healthy"
else
  health.status = "Degraded"
end
health.message = message
return health
